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

import threading
import time
from collections.abc import Callable
from typing import Protocol

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
