"""Client-side pacing, so that we stay under an upstream's rate limit instead of hitting it.

ComputeStacks throttles at 2,500 requests per 5 minutes per client IP (Rack::Attack, fixed windows
aligned to multiples of 300 s). A token bucket of ``burst`` tokens refilled at ``rate`` per second
lets through at most ``burst + rate * T`` requests in any interval of ``T`` seconds, so
``burst + 300 * rate <= 2500`` keeps every window under the limit.

A wait is drawn from the request's deadline like every other wait (``cswhmcs.deadline``): a token
whose wait does not fit the time left is not taken and nothing sleeps (``PacingOutOfTime``); the
retry engine turns that into its own out-of-time error (504 for an API route, the account released
in the billing worker).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from cswhmcs import deadline
from cswhmcs.errors import UpstreamTimeout


class Pacer(Protocol):
    """Anything with an ``acquire()`` that blocks until one more request may be sent."""

    def acquire(self) -> object: ...


class PacingOutOfTime(UpstreamTimeout):
    """The wait for a token does not fit the time left: no token was taken, nothing waited or was sent."""

    def __init__(self, wait: float, available: float, upstream: str = "the upstream") -> None:
        super().__init__(f"The time for this request ran out before {upstream} could be asked (the client-side "
                         f"rate limit asked for {wait:.1f} s, {max(0.0, available):.1f} s were left).",
                         upstream=upstream, maybe_applied=False)
        self.wait = wait
        self.available = available


class TokenBucket:
    """Thread-safe token bucket. ``acquire()`` takes one token, sleeping as long as needed.

    A caller reserves its token under the lock (the count may go negative) and sleeps outside it,
    so concurrent callers queue up in order and none of them spins.
    """

    def __init__(self, rate_per_second: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive.")
        if burst < 1:
            raise ValueError("burst must be at least 1.")
        self.rate = float(rate_per_second)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    @classmethod
    def for_computestacks(cls, *, limit: int = 2500, period: float = 300.0, headroom: float = 0.9,
                          burst: int = 50, clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], object] = time.sleep) -> TokenBucket:
        """A bucket that keeps any ``period``-second window at or under ``headroom * limit`` requests.

        The limit is per client IP: processes that share one (e.g. Lambdas behind a NAT gateway)
        must split it between them (pass a smaller ``limit``).
        """
        budget = limit * headroom
        if budget <= burst:
            raise ValueError("burst must be smaller than headroom * limit.")
        return cls((budget - burst) / period, burst, clock=clock, sleep=sleep)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._last = now

    def acquire(self, tokens: int = 1, *, max_wait: float | None = None) -> float:
        """Take ``tokens`` (default one); returns how many seconds the caller waited.

        ``max_wait``: the longest the caller may wait (default: what ``deadline.current()`` leaves). A
        wait longer than that does not start: ``PacingOutOfTime`` is raised and no token is taken.
        """
        if tokens < 1 or tokens > self.burst:
            raise ValueError("tokens must be between 1 and burst.")
        limit = deadline.current().remaining() if max_wait is None else float(max_wait)
        with self._lock:
            self._refill(self._clock())
            after = self._tokens - tokens
            wait = -after / self.rate if after < 0 else 0.0
            if wait > limit:
                raise PacingOutOfTime(wait, limit)
            self._tokens = after
        if wait > 0:
            self._sleep(wait)
        return wait

    def try_acquire(self, tokens: int = 1) -> bool:
        """Take ``tokens`` only if available right now; never waits."""
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    @property
    def available(self) -> float:
        """Tokens available now (negative while callers are queued)."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens


class SharedWindow:
    """At most ``budget`` requests in any ``window`` seconds, counted in one DynamoDB item that every process
    sharing the budget uses (the billing workers, which share the backend's IP).

    A token bucket keeps ``burst + window x rate`` under the budget, so a month-end that starts after an idle
    hour still reads at the steady rate from its first second. This pacer hands back a request's token exactly
    ``window`` seconds after it was used (a sliding log), which is what ComputeStacks' count allows: after an
    idle window the whole budget at once, and from then on as many requests per window as the window before
    freed. Over a 250-minute month-end that gains one window, and the figure it moves is the minutes after the
    cut-off (docs/billing.md section 6).

    The item counts requests per second of wall time (attributes ``s<second>``) and names the newest second
    written (``top``). A token is taken with one conditional UpdateItem: the count of the current second may
    grow only while the window's sum stays within the budget, and only if no process has written a newer
    second since this one read the item (``top`` unchanged, or this second), so the older seconds it summed are
    final. Any 301 one-second slots hold every request a 300 s interval can contain, so the sum is taken over
    ``window + 1`` of them. A process reads the item (one consistent GetItem) once per second it asks in and
    after a refused write; the write returns the item, so the next token of the same second needs no read.
    Seconds older than the window are removed by the writes, so the item stays a few hundred bytes.

    Waits are drawn from the deadline like ``TokenBucket``'s (``max_wait``; ``PacingOutOfTime`` when the wait
    does not fit, with no token taken): the deadline is the bound, ``max_attempts`` (writes refused, seconds
    lost to other workers) only a guard against a loop. A DynamoDB error propagates: nothing was sent.
    """

    def __init__(self, table: Any, budget: int, *, window: float = 300.0, name: str = "computestacks",
                 upstream: str = "ComputeStacks", clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], object] = time.sleep, max_attempts: int = 1000) -> None:
        if budget < 1:
            raise ValueError("budget must be at least 1.")
        self.budget = int(budget)
        self.span = int(math.ceil(window))  # the slots a window's check sums: this second and the `span` before
        self._client = table.meta.client
        self._table = table.name
        self._key = {"pk": f"pacer#{name}", "sk": "window"}
        self._upstream = upstream
        self._clock = clock
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._slots: dict[int, int] = {}
        self._top: int | None = None
        self._read_in: int | None = None  # the second of the last read (or returned item)
        self.reads = self.writes = self.refused = 0

    def _load(self, item: Mapping[str, Any] | None, second: int) -> None:
        item = item or {}
        self._slots = {int(k[1:]): int(v) for k, v in item.items() if k.startswith("s") and k[1:].isdigit()}
        top = item.get("top")
        self._top = None if top is None else int(top)
        self._read_in = second

    def _read(self, second: int) -> None:
        answer = self._client.get_item(TableName=self._table, Key=self._key, ConsistentRead=True)
        self.reads += 1
        self._load(answer.get("Item"), second)

    def _write(self, slot: int, tokens: int, older: int, second: int) -> bool:
        """Add ``tokens`` to ``slot`` if the window still has room and nobody wrote a newer second."""
        from botocore.exceptions import ClientError

        names = {"#c": f"s{slot}", "#top": "top"}
        values: dict[str, Any] = {":n": tokens, ":cap": self.budget - older - tokens, ":slot": slot}
        if self._top is None:
            fresh = "attribute_not_exists(#top)"
        else:
            fresh = "#top = :seen"
            values[":seen"] = self._top
        stale = [j for j in self._slots if j < slot - self.span]
        update = "ADD #c :n SET #top = :slot"
        if stale:
            for i, j in enumerate(stale):
                names[f"#o{i}"] = f"s{j}"
            update += " REMOVE " + ", ".join(f"#o{i}" for i in range(len(stale)))
        try:
            answer = self._client.update_item(
                TableName=self._table, Key=self._key, UpdateExpression=update,
                ConditionExpression=f"{fresh} AND (attribute_not_exists(#c) OR #c <= :cap)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            self.refused += 1
            return False
        self.writes += 1
        self._load(answer.get("Attributes"), second)
        return True

    def _free_at(self, slot: int, tokens: int) -> int:
        """The first second from which the window has room for ``tokens`` more (no one else asking): the
        oldest seconds leave it one by one, second ``j`` at ``j + span + 1``."""
        held = sorted((j, n) for j, n in self._slots.items() if j >= slot - self.span)
        total = sum(n for _, n in held)
        free = slot + 1
        for j, n in held:
            if total + tokens <= self.budget:
                break
            total -= n
            free = j + self.span + 1
        return max(slot + 1, free)

    def acquire(self, tokens: int = 1, *, max_wait: float | None = None) -> float:
        """Take ``tokens``; returns the seconds waited. A wait longer than ``max_wait`` (default: what
        ``deadline.current()`` leaves) does not start: ``PacingOutOfTime``, and no token is taken."""
        if tokens < 1 or tokens > self.budget:
            raise ValueError("tokens must be between 1 and the budget.")
        limit = deadline.current().remaining() if max_wait is None else float(max_wait)
        waited = 0.0
        for _ in range(self._max_attempts):
            with self._lock:
                now = self._clock()
                second = int(now)
                if self._read_in != second:
                    self._read(second)
                slot = max(second, self._top if self._top is not None else second)
                older = sum(n for j, n in self._slots.items() if slot - self.span <= j < slot)
                if older + self._slots.get(slot, 0) + tokens <= self.budget:
                    if self._write(slot, tokens, older, second):
                        return waited
                    self._read(second)
                    continue
                wait = max(0.0, self._free_at(slot, tokens) - now)
            if waited + wait > limit:
                raise PacingOutOfTime(wait, limit - waited, self._upstream)
            self._sleep(wait)
            waited += wait
        raise PacingOutOfTime(0.0, limit - waited, self._upstream)


PACERS_WITH_DEADLINE = (TokenBucket, SharedWindow)
