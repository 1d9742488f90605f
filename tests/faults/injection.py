"""What can go wrong, and how a schedule makes it happen.

* Upstream faults are armed on the sandboxes (real HTTP servers) through their knobs: 5xx pages, 429 with
  ``Retry-After``, slow answers, answers later than the client's timeout (read requests), timeouts after
  the request was carried out, and connections closed without an answer (before or after carrying it out).
* On the billing receiver's path the faults sit between the backend and the real ``billing.php``: a
  ``FaultProxy`` (sandboxes/faultproxy.py) drops the answer after PHP committed, drops the connection before
  forwarding, answers a proxy's 502/504 page (before, or after PHP handled the request), replaces the answer
  with an HTML page, or delays every request (beyond the client's timeout: a timeout whose request PHP still
  carries out a moment later).
* A crash is the process dying between two steps: ``Crash`` (a ``BaseException``, so no ``except Exception``
  in the product can swallow it) is raised right after the N-th call to a dependency returned, i.e. after
  the upstream or the table committed. The dependencies (clients, repositories, the ledger) are wrapped in
  ``CrashProxy``; the billing worker also has its own named ``faults`` points.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandboxes.faultproxy import FaultProxy


class Crash(BaseException):
    """The process dies here (a Lambda killed mid-way)."""


class CrashCounter:
    """Counts calls to every wrapped dependency; the call that reaches ``after`` completes, then Crash.

    ``point_p``: the probability of a crash at each of the billing worker's named points (its ``faults``
    hook). Shared by every thread of a schedule."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._lock = threading.Lock()
        self.calls = 0
        self.after: int | None = None
        self.point_p = 0.0
        self.crashes: list[str] = []

    def arm(self, after: int | None = None, point_p: float = 0.0) -> None:
        with self._lock:
            self.calls = 0
            self.after = after
            self.point_p = point_p

    def disarm(self) -> None:
        self.arm(None, 0.0)

    def tick(self, where: str) -> None:
        with self._lock:
            self.calls += 1
            hit = self.after is not None and self.calls >= self.after
            if hit:
                self.after = None  # one crash per arming: the next delivery runs on
                self.crashes.append(where)
        if hit:
            raise Crash(where)

    def point(self, name: str) -> None:
        """The billing worker's ``faults`` hook."""
        with self._lock:
            hit = self.point_p > 0 and self.rng.random() < self.point_p
            if hit:
                self.crashes.append(name)
        if hit:
            raise Crash(name)


# Attributes passed through untouched: not steps of the work (closing, counters, the clock).
_PASSTHROUGH = frozenset({"close", "clock", "request_count", "table", "settings"})


class CrashProxy:
    """``target`` with every public method counted by ``counter`` (a crash after the call returned)."""

    def __init__(self, target: Any, name: str, counter: CrashCounter) -> None:
        self._target = target
        self._name = name
        self._counter = counter

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if attr.startswith("_") or attr in _PASSTHROUGH or not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            self._counter.tick(f"{self._name}.{attr}")
            return result

        return counted

    def __repr__(self) -> str:
        return f"CrashProxy({self._target!r})"


# ---------------------------------------------------------------------- upstream faults


class SlowProxy(FaultProxy):
    """``FaultProxy`` plus ``latency_next(n, seconds)``: only the next ``n`` requests wait (a ``latency`` for
    the whole round would make every retry of every account time out, seconds per schedule for one fault).

    It relies on the proxy's handler taking its fault (``_arrive``) and then reading ``latency`` in the
    same thread, per request (tests/faults/test_receiver_schedules.py checks it still does)."""

    def __init__(self, upstream_url: str, **kw: Any) -> None:
        self._here = threading.local()  # the latency of the request this thread is handling
        self._queued: deque[float] = deque()
        self._queue_lock = threading.Lock()
        self._base_latency = 0.0
        super().__init__(upstream_url, **kw)

    @property
    def latency(self) -> float:
        mine = getattr(self._here, "latency", None)
        return self._base_latency if mine is None else mine

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._base_latency = seconds

    def latency_next(self, n: int, seconds: float) -> None:
        with self._queue_lock:
            self._queued.extend([seconds] * n)

    def _arrive(self) -> Any:
        fault = super()._arrive()
        with self._queue_lock:
            self._here.latency = self._queued.popleft() if self._queued else None
        return fault

    def clear_faults(self) -> None:
        with self._queue_lock:
            self._queued.clear()
        super().clear_faults()


@dataclass
class Armed:
    """The faults armed for one step (for the schedule's trace)."""

    kinds: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "+".join(self.kinds) or "none"


CS_KINDS = ("cs_5xx", "cs_429", "cs_slow", "cs_timeout", "cs_tac", "cs_drop")
WHMCS_KINDS = ("wh_5xx", "wh_429", "wh_slow", "wh_timeout", "wh_tac", "wh_drop")
# Between the backend and the billing receiver (the FaultProxy in front of billing.php).
RECEIVER_KINDS = ("rc_drop_answer", "rc_drop_before", "rc_5xx", "rc_5xx_after", "rc_non_json", "rc_timeout",
                  "rc_slow")


class Faults:
    """Arms faults on the two sandboxes (and the proxy in front of the billing receiver, when there is one)
    from a schedule's random stream."""

    def __init__(self, cs: Any, whmcs: Any, rng: random.Random, *, timeout: float, proxy: Any = None) -> None:
        self.cs = cs
        self.whmcs = whmcs
        self.proxy = proxy
        self.rng = rng
        self.late = timeout + 0.1  # an answer this late is a client timeout

    def clear(self) -> None:
        self.cs.clear_faults()
        self.whmcs.clear_faults()
        self.cs.latency = 0.0
        self.whmcs.latency = 0.0
        if self.proxy is not None:
            self.proxy.clear_faults()  # its latency too

    def arm_cs(self, kind: str) -> None:
        r, cs = self.rng, self.cs
        if kind == "cs_5xx":
            cs.fail_next(r.randint(1, 4), r.choice([500, 502, 503]))
        elif kind == "cs_429":
            cs.throttle_next(r.randint(1, 3), retry_after=r.choice([0, 1]))
        elif kind == "cs_slow":
            cs.slow_next(r.randint(1, 3), r.choice([0.01, 0.03]))
        elif kind == "cs_timeout":  # any request: carried out, answered after the client gave up
            cs.slow_next(1, self.late)
        elif kind == "cs_tac":  # the next change is made, then the answer is lost to a timeout
            cs.timeout_after_commit_next(1, self.late)
        elif kind == "cs_drop":
            cs.drop_next(r.randint(1, 2), applied=r.random() < 0.5)
        else:
            raise ValueError(kind)

    def arm_whmcs(self, kind: str, actions: list[str]) -> None:
        r, wh = self.rng, self.whmcs
        some = [r.choice(actions)] if actions and r.random() < 0.7 else (actions or None)
        if kind == "wh_5xx":
            wh.fail_next(r.randint(1, 3), r.choice([500, 503, 502]), actions=some)
        elif kind == "wh_429":
            wh.throttle_next(r.randint(1, 2), retry_after=r.choice([0, 1]), actions=some)
        elif kind == "wh_slow":
            wh.timeout_after_commit_next(r.randint(1, 3), r.choice([0.01, 0.03]), actions=some)
        elif kind in ("wh_timeout", "wh_tac"):  # carried out, then the answer is later than the timeout
            wh.timeout_after_commit_next(1, self.late, actions=some)
        elif kind == "wh_drop":
            wh.drop_next(r.randint(1, 2), actions=some, applied=r.random() < 0.5)
        elif kind == "wh_error":
            wh.error_next(1, r.choice(["Client ID not Found", "Invalid Unit"]), actions=some)
        else:
            raise ValueError(kind)

    def arm_receiver(self, kind: str) -> None:
        """One fault of the proxy in front of billing.php (a ``SlowProxy``). Each kind hits the next 1-3
        requests (the receiver client makes 3 attempts per send: sometimes all of them fail), except the
        small latency of ``rc_slow``, which holds for the whole round."""
        r, proxy = self.rng, self.proxy
        if proxy is None:
            raise ValueError(f"{kind}: no billing receiver in this world")
        n = r.randint(1, 3)
        if kind == "rc_drop_answer":  # PHP committed, the backend gets no answer
            proxy.drop_answer_next(n)
        elif kind == "rc_drop_before":  # the connection breaks before the request reaches PHP
            proxy.drop_before_next(n)
        elif kind == "rc_5xx":  # a proxy's 502/504 page; PHP never saw the request
            proxy.status_next(n, status=r.choice([502, 504]), forward=False)
        elif kind == "rc_5xx_after":  # a gateway timeout after PHP committed
            proxy.status_next(n, status=r.choice([502, 504]), forward=True)
        elif kind == "rc_non_json":  # a captive HTML page instead of the answer (mostly after PHP handled it)
            proxy.non_json_next(n, forward=r.random() < 0.7)
        elif kind == "rc_timeout":  # later than the client's timeout; the proxy still forwards it afterwards
            proxy.latency_next(n, self.late)
        elif kind == "rc_slow":
            proxy.latency = r.choice([0.01, 0.03])
        else:
            raise ValueError(kind)

    def arm(self, *, cs_kinds: tuple[str, ...] = CS_KINDS, whmcs_kinds: tuple[str, ...] = WHMCS_KINDS,
            whmcs_actions: list[str] | None = None, crash: Callable[[], str | None] | None = None,
            p_fault: float = 0.6, most: int = 2, receiver_kinds: tuple[str, ...] = ()) -> Armed:
        """With probability ``p_fault``, 1..``most`` faults drawn from the given kinds (and a crash)."""
        armed = Armed()
        if self.rng.random() >= p_fault:
            return armed
        pool = [*cs_kinds, *whmcs_kinds, *receiver_kinds, *(["crash"] if crash else [])]
        for kind in self.rng.sample(pool, min(len(pool), self.rng.randint(1, most))):
            if kind == "crash":
                assert crash is not None
                what = crash()
                if what:
                    armed.kinds.append(what)
                continue
            if kind.startswith("cs_"):
                self.arm_cs(kind)
            elif kind.startswith("rc_"):
                self.arm_receiver(kind)
            else:
                self.arm_whmcs(kind, whmcs_actions or [])
            armed.kinds.append(kind)
        return armed
