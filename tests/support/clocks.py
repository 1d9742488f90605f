"""Clocks the tests move by hand: ``FakeClock``, a monotonic clock in seconds (deadlines, backoffs, pacing)
that moves only when someone sleeps or a test advances it, and ``Clock``, the billing clock (a datetime) of a
worker or a schedule, shared by its threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta


class FakeClock:
    """``time.monotonic`` (call it) and ``time.sleep`` (``sleep``) on a fake scale: every sleep is recorded
    in ``sleeps`` and moves the clock, then runs the ``on_sleep`` hooks; ``advance`` moves it without a sleep
    (an attempt that lasted that long)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: list[Callable[[], object]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook()


class Clock:
    """The billing clock (``now``): read by calling it, moved by the test (``advance``, or ``set``, which
    never goes back); safe to share between threads."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def set(self, when: datetime) -> None:
        with self._lock:
            self.now = max(self.now, when)

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta
