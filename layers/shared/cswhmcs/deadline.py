"""One time budget per request: a deadline that every upstream attempt, retry and wait is drawn from.

API routes answer within ``API_BUDGET_SECONDS`` of arrival (API.md section 2), inside their Lambda's
own timeout; a billing worker finishes an account before its Lambda is killed. The caller sets the
deadline once (``with deadline.use(deadline.for_api(context)):``) and the upstream clients read
``deadline.current()`` at every attempt (``cswhmcs.adapters.retry``). The current deadline lives in a
``ContextVar``: each thread (each `cswhmcs serve` request) has its own, and code that hands work to
another thread passes it on with ``contextvars.copy_context().run``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

API_BUDGET_SECONDS = 25.0  # API.md section 2: every route answers within 25 s of receiving the request
# Of those 25 s, kept for what follows the last upstream answer: DynamoDB writes (a mapping, an order kept
# open for the daily retry) and the response itself.
ANSWER_RESERVE_SECONDS = 2.0

Clock = Callable[[], float]


class Deadline:
    """A point in time (on a monotonic clock), or never."""

    __slots__ = ("_at", "_clock")

    def __init__(self, at: float, clock: Clock = time.monotonic) -> None:
        self._at = at
        self._clock = clock

    @classmethod
    def after(cls, seconds: float, *, clock: Clock = time.monotonic) -> Deadline:
        """``seconds`` from now (zero or negative: already expired)."""
        return cls(clock() + float(seconds), clock)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    def remaining(self) -> float:
        """Seconds left (may be <= 0); ``math.inf`` for ``never()``."""
        if self._at == math.inf:
            return math.inf
        return self._at - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def __repr__(self) -> str:
        left = self.remaining()
        return "Deadline.never()" if left == math.inf else f"Deadline({left:.3f} s left)"


_NEVER = Deadline.never()
_current: ContextVar[Deadline | None] = ContextVar("cswhmcs_deadline", default=None)


def current() -> Deadline:
    """The deadline of this request or account; ``never()`` when none was set (CLI, tests)."""
    found = _current.get()
    return found if found is not None else _NEVER


@contextmanager
def use(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the current one for the block (this thread/context only)."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def lambda_remaining(context: object | None) -> float | None:
    """The Lambda context's remaining time in seconds, or None when it has none to tell."""
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(getter):
        return None
    try:
        millis = getter()
    except Exception:  # a context that cannot tell is a context without a limit
        return None
    if isinstance(millis, bool) or not isinstance(millis, int | float) or math.isnan(millis):
        return None
    return float(millis) / 1000.0


def for_api(context: object | None, *, budget: float = API_BUDGET_SECONDS, margin: float = 1.0) -> Deadline:
    """An API request's deadline: ``budget`` from now, or the Lambda's remaining time less ``margin``
    when that comes first."""
    seconds = float(budget)
    left = lambda_remaining(context)
    if left is not None:
        seconds = min(seconds, left - margin)
    return Deadline.after(seconds)


def for_lambda(context: object | None, *, margin: float) -> Deadline:
    """The function's own remaining time less ``margin`` (billing planner and worker); never without
    a context that tells its remaining time."""
    left = lambda_remaining(context)
    return Deadline.never() if left is None else Deadline.after(left - margin)
