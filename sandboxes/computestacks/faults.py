"""The ComputeStacks sandbox's fault knobs, and the Rack::Attack throttle whose 429 some of them imitate.

``FaultKnobs`` (a base of ``ComputeStacksSandbox``): ``latency``, ``fail_next``, ``timeout_after_commit_next``,
``throttle_all``, ``drop_next``, ``slow_next``, ``throttle_next``, ``clear_faults`` (``hang`` comes from
``plumbing.SandboxServer``), and what they decide for each arriving request (``_intercept``,
``_commit_delay``). ``RackAttack`` is ComputeStacks' own ``req/ip`` limit: fixed windows aligned to the epoch,
every request counts, and its plain-text 429 with RateLimit-* and Retry-After (reference section 1.2).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from sandboxes.hang import Hang
from sandboxes.plumbing import Response

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RackAttack:
    """Rack::Attack ``req/ip``: at most ``limit`` requests per client IP in each window of ``period`` s.
    Not locked: its owner calls it under the sandbox's lock."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._counts: dict[tuple[str, int], int] = {}

    def count(self, client_ip: str) -> Response | None:
        """Count one request; its 429 when the window's limit is passed, else None."""
        now = self._clock()
        window = int(now // self.period)
        key = (client_ip, window)
        count = self._counts.get(key, 0) + 1
        self._counts = {k: v for k, v in self._counts.items() if k[1] == window}
        self._counts[key] = count
        if count <= self.limit:
            return None
        reset_at = (window + 1) * self.period
        return self.throttled(reset_at - now)

    def forget(self) -> None:
        """Forget every count (a window whose earlier requests are of no interest, e.g. a bench's set-up)."""
        self._counts = {}

    def throttled(self, wait: float) -> Response:
        """Rack::Attack's answer: plain ``Throttled``, RateLimit-* and Retry-After (whole seconds, at least 1)."""
        retry_after = max(1, math.ceil(wait))
        return Response(429, b"Throttled\n", "text/plain", [
            ("RateLimit-Limit", str(self.limit)), ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", str(math.ceil(self._clock() + retry_after))), ("Retry-After", str(retry_after)),
        ])


class FaultKnobs:
    """The knobs tests turn. State is guarded by the sandbox's ``_lock``."""

    _lock: threading.RLock
    hang_gate: Hang

    def __init__(self, rack_attack: RackAttack) -> None:
        self._rack_attack = rack_attack
        self._latency = 0.0
        self._faults: list[tuple[int, bytes, str]] = []
        self._tac_remaining = 0
        self._tac_delay = 0.0
        self._drops: list[bool] = []  # drop_next: per request, whether it is carried out before the drop
        self._slow: list[float] = []  # slow_next: extra seconds before each answer
        self._throttles: list[float] = []  # throttle_next: Retry-After of each 429
        self._throttle_all: float | None = None

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, n: int = 1, status: int = 500, body: str = "<html>oops</html>",
                  content_type: str = "text/html; charset=utf-8") -> None:
        """The next ``n`` requests get this answer and change nothing."""
        with self._lock:
            self._faults.extend([(status, body.encode("utf-8"), content_type)] * n)

    def timeout_after_commit_next(self, n: int, delay: float) -> None:
        """The next ``n`` mutating requests (POST/PUT/PATCH/DELETE) are carried out, then the answer waits
        ``delay`` seconds (longer than the client's timeout: "applied, but the client saw a timeout")."""
        with self._lock:
            self._tac_remaining = n
            self._tac_delay = max(0.0, float(delay))

    def forget_rate_counts(self) -> None:
        """The Rack::Attack counts start again from zero (the bench's measured runs, after its set-up's reads)."""
        with self._lock:
            self._rack_attack.forget()

    def throttle_all(self, retry_after: float | None) -> None:
        """Every request answers Rack::Attack's 429 asking to wait ``retry_after`` s (None: back to normal)."""
        with self._lock:
            self._throttle_all = None if retry_after is None else max(0.0, float(retry_after))

    def drop_next(self, n: int = 1, *, applied: bool = False) -> None:
        """The next ``n`` requests get no answer: the connection is closed. ``applied``: each is carried
        out first (ComputeStacks did the work, then died or the connection broke); else nothing changes."""
        with self._lock:
            self._drops.extend([bool(applied)] * n)

    def slow_next(self, n: int, delay: float) -> None:
        """The next ``n`` requests (any method) are carried out and answered ``delay`` seconds late."""
        with self._lock:
            self._slow.extend([max(0.0, float(delay))] * n)

    def throttle_next(self, n: int = 1, retry_after: float = 1) -> None:
        """The next ``n`` requests get Rack::Attack's 429 with ``Retry-After``; nothing is done."""
        with self._lock:
            self._throttles.extend([max(0.0, float(retry_after))] * n)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._drops.clear()
            self._slow.clear()
            self._throttles.clear()
            self._tac_remaining = 0
            self._latency = 0.0
            self._throttle_all = None
        self.hang_gate.set(0)

    # ------------------------------------------------------------------ per request (under the lock)

    def _intercept(self) -> tuple[float, bool | None, Response | None]:
        """Take the knobs one arriving request meets: how long its answer waits, its drop (None: not dropped,
        False: dropped unanswered, True: carried out, then dropped) and the answer a knob gives instead of
        ComputeStacks (None: ComputeStacks answers)."""
        delay = self._latency + (self._slow.pop(0) if self._slow else 0.0)
        drop = self._drops.pop(0) if self._drops else None
        if drop is False:
            return delay, drop, Response(0, b"", "")
        if self._throttles:
            return delay, drop, self._rack_attack.throttled(self._throttles.pop(0))
        if self._throttle_all is not None:
            return delay, drop, self._rack_attack.throttled(self._throttle_all)
        if self._faults:
            status, body, ctype = self._faults.pop(0)
            return delay, drop, Response(status, body, ctype)
        return delay, drop, None

    def _commit_delay(self, method: str) -> float:
        """``timeout_after_commit_next``: the extra wait of a request ComputeStacks answered."""
        if method in MUTATING and self._tac_remaining > 0:
            self._tac_remaining -= 1
            return self._tac_delay
        return 0.0
