"""What can go wrong, and how a schedule makes it happen.

* Upstream faults are armed on the sandboxes (real HTTP servers) through their knobs: 5xx pages, 429 with
  ``Retry-After``, slow answers, answers later than the client's timeout (read requests), timeouts after
  the request was carried out, and connections closed without an answer (before or after carrying it out).
* A crash is the process dying between two steps: ``Crash`` (a ``BaseException``, so no ``except Exception``
  in the product can swallow it) is raised right after the N-th call to a dependency returned, i.e. after
  the upstream or the table committed. The dependencies (clients, repositories, the ledger) are wrapped in
  ``CrashProxy``; the billing worker also has its own named ``faults`` points.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class Armed:
    """The faults armed for one step (for the schedule's trace)."""

    kinds: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "+".join(self.kinds) or "none"


CS_KINDS = ("cs_5xx", "cs_429", "cs_slow", "cs_timeout", "cs_tac", "cs_drop")
WHMCS_KINDS = ("wh_5xx", "wh_429", "wh_slow", "wh_timeout", "wh_tac", "wh_drop")


class Faults:
    """Arms faults on the two sandboxes from a schedule's random stream."""

    def __init__(self, cs: Any, whmcs: Any, rng: random.Random, *, timeout: float) -> None:
        self.cs = cs
        self.whmcs = whmcs
        self.rng = rng
        self.late = timeout + 0.1  # an answer this late is a client timeout

    def clear(self) -> None:
        self.cs.clear_faults()
        self.whmcs.clear_faults()
        self.cs.latency = 0.0
        self.whmcs.latency = 0.0

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

    def arm(self, *, cs_kinds: tuple[str, ...] = CS_KINDS, whmcs_kinds: tuple[str, ...] = WHMCS_KINDS,
            whmcs_actions: list[str] | None = None, crash: Callable[[], str | None] | None = None,
            p_fault: float = 0.6, most: int = 2) -> Armed:
        """With probability ``p_fault``, 1..``most`` faults drawn from the given kinds (and a crash)."""
        armed = Armed()
        if self.rng.random() >= p_fault:
            return armed
        pool = [*cs_kinds, *whmcs_kinds, *(["crash"] if crash else [])]
        for kind in self.rng.sample(pool, min(len(pool), self.rng.randint(1, most))):
            if kind == "crash":
                assert crash is not None
                what = crash()
                if what:
                    armed.kinds.append(what)
                continue
            if kind.startswith("cs_"):
                self.arm_cs(kind)
            else:
                self.arm_whmcs(kind, whmcs_actions or [])
            armed.kinds.append(kind)
        return armed
