"""Retries for both upstream clients (ComputeStacks and WHMCS), all drawn from the request's deadline.

What may be sent again (docs/architecture.md "Error mapping"): nothing that may have been applied.

* A request that never left (connect failure, pool timeout) is always safe to try again.
* A request the upstream refused before doing anything (429, a 401 answered to the credential) may be
  sent again: after the ``Retry-After`` wait, or at once with a different credential.
* Any other failure after sending (read timeout, dropped connection, 5xx, garbage) is retried only when
  the caller says the request is safe to resend (``resend=True``: reads, absolute PATCHes, SSO tokens).

Time (``cswhmcs.deadline``): every attempt's timeout is ``min(configured, remaining)``, and the attempt as a
whole (connect, headers, body: ``cswhmcs.adapters.bounded``) ends within ``min(connect + read timeout,
remaining)`` however slowly the upstream drips its answer; no backoff or
``Retry-After`` wait is started that does not leave time for the next attempt; a request that must not
be resent is only sent when a whole attempt (connect + read timeout) still fits, so a deadline never
turns it into a "maybe applied". When no attempt can start any more, the last failure is raised, or
``OutOfTime`` (an ``UpstreamTimeout``, 504) when nothing was sent. A 429 whose wait does not fit raises
``RateLimited`` (also a 504: the upstream did not answer in time for us).

Every request passes here, so this is where it is observed (``cswhmcs.observability``): each request is
one X-Ray subsegment named after its upstream (tracing on only), each failed attempt counts in
``UpstreamErrors`` (dimension ``upstream``) and each 429 answer in ``Throttled``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Self, TypeVar

import httpx

from cswhmcs import deadline, observability
from cswhmcs.adapters import bounded
from cswhmcs.adapters.pacing import PACERS_WITH_DEADLINE, Pacer, PacingOutOfTime
from cswhmcs.errors import DomainError, RateLimited, UpstreamError, UpstreamTimeout, UpstreamUnreachable

T = TypeVar("T")

# An attempt with less time than this is not started: it could not get an answer anyway.
MIN_ATTEMPT_SECONDS = 0.25


class OutOfTime(UpstreamTimeout):
    """The request's time budget left no room for an attempt: nothing (more) was sent."""

    def __init__(self, upstream: str) -> None:
        super().__init__(f"The time for this request ran out before {upstream} could be asked.",
                         upstream=upstream, maybe_applied=False)


class Failure(Exception):
    """Raised by a client's ``interpret``: this attempt failed with ``error``.

    ``sent``: the request may have reached the upstream. ``retryable``: trying again could help (a
    5xx, garbage), as opposed to a definite answer that would only repeat.
    """

    def __init__(self, error: DomainError, *, sent: bool = True, retryable: bool = True,
                 cause: BaseException | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent
        self.retryable = retryable
        self.cause = cause


class Throttled(Exception):
    """Raised by ``interpret``: a 429, refused before anything was applied; wait ``delay`` s, then resend."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"throttled for {delay} s")
        self.delay = max(0.0, float(delay))


class Resend(Exception):
    """Raised by ``interpret``: refused before anything was applied, send again at once (the request
    itself changed, e.g. another credential). The client bounds how often it asks for this."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2  # retries after failures (429 waits and ``Resend`` do not count)
    backoff: float = 0.25  # seconds before the first retry, doubled each time
    max_backoff: float = 2.0
    max_throttled: int = 10  # 429 answers waited for, at most, per request
    max_throttle_wait: float = 30.0  # seconds of 429 waits, at most, per request (without a deadline)


def retry_after(headers: httpx.Headers) -> float:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or date), else ``RateLimit-Reset``, else 1."""
    raw = (headers.get("retry-after") or "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return max(0.0, (when - datetime.now(UTC)).total_seconds())
        else:
            if math.isfinite(value):
                return max(0.0, value)
    reset = (headers.get("ratelimit-reset") or "").strip()
    if reset:
        try:
            value = float(reset) - time.time()
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    return 1.0


def attempt_seconds(client: Any) -> float:
    """How long one whole attempt of ``client`` may take (0 when it cannot tell, e.g. a test fake)."""
    value = getattr(client, "attempt_seconds", 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class Retrier:
    """Runs one request's attempts for a client. Thread-safe; one per client."""

    def __init__(self, upstream: str, *, timeout: float, connect_timeout: float, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], object] = time.sleep, pacer: Pacer | Callable[[], object] | None = None,
                 dropped_message: str | None = None) -> None:
        self.upstream = upstream
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._pacer = pacer
        self._dropped = dropped_message or f"{upstream} closed the connection without answering."
        self._lock = threading.Lock()
        self._attempts = 0
        self._metric_upstream = observability.upstream_name(upstream)

    @property
    def attempts(self) -> int:
        """HTTP attempts made so far (retries included)."""
        return self._attempts

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt may take: connecting, then waiting for the answer."""
        return self.connect_timeout + self.timeout

    def window_for(self, remaining: float) -> float:
        """The whole time this attempt may take (connect, send, headers and body): ``attempt_seconds``,
        cut to what the deadline leaves."""
        return min(self.attempt_seconds, remaining)

    def timeout_for(self, remaining: float) -> httpx.Timeout:
        """This attempt's timeouts: the configured ones, cut to what the deadline leaves."""
        read = min(self.timeout, remaining)
        return httpx.Timeout(read, connect=min(self.connect_timeout, remaining))

    def _pace(self, within: float) -> None:
        """Wait for the pacer; a ``TokenBucket`` or ``SharedWindow`` wait longer than ``within`` does not start
        (``PacingOutOfTime``, no token taken). Other pacers are checked after they return."""
        if self._pacer is None:
            return
        if isinstance(self._pacer, PACERS_WITH_DEADLINE):
            self._pacer.acquire(max_wait=within)
            return
        acquire = getattr(self._pacer, "acquire", None)
        if callable(acquire):
            acquire()
        elif callable(self._pacer):
            self._pacer()

    def run(self, send: Callable[[httpx.Timeout], httpx.Response], interpret: Callable[[httpx.Response], T], *,
            resend: bool, mutating: bool) -> T:
        """Send until ``interpret`` returns, the rules above forbid another attempt, or time runs out.

        ``send`` makes one HTTP request with the given timeout; ``interpret`` returns the result or raises
        ``Failure``/``Throttled``/``Resend`` (any other exception propagates at once). ``resend``: may it
        be sent again once it may have arrived? ``mutating``: could it change anything (then a timeout
        after sending is "maybe applied")?
        """
        with observability.upstream_subsegment(self.upstream):
            return self._run(send, interpret, resend=resend, mutating=mutating)

    def _run(self, send: Callable[[httpx.Timeout], httpx.Response], interpret: Callable[[httpx.Response], T], *,
             resend: bool, mutating: bool) -> T:
        limit = deadline.current()
        policy = self.policy
        needed = MIN_ATTEMPT_SECONDS if resend else max(MIN_ATTEMPT_SECONDS, self.attempt_seconds)
        retries = throttled = 0
        waited = 0.0
        last: Failure | None = None
        ambiguous: Failure | None = None  # an attempt that may have been applied
        while True:
            if limit.remaining() < needed:
                raise self._out_of_time(last, ambiguous)
            try:
                self._pace(limit.remaining() - needed)
            except PacingOutOfTime:  # the pacer's wait would not leave time for the attempt
                error = self._out_of_time(last, ambiguous)
                raise error from error.__cause__
            remaining = limit.remaining()
            if remaining < needed:  # the pacer made us wait
                raise self._out_of_time(last, ambiguous)
            with self._lock:
                self._attempts += 1
            try:
                try:
                    # The attempt as a whole, not only each socket read, ends within its share
                    # (``cswhmcs.adapters.bounded``): an upstream dripping its answer cannot outlast it.
                    with bounded.within(self.window_for(remaining)):
                        response = send(self.timeout_for(remaining))
                except httpx.TransportError as exc:
                    raise self._transport_failure(exc, mutating=mutating) from exc
                return interpret(response)
            except Throttled as t:
                observability.count(observability.THROTTLED)
                throttled += 1
                if t.delay + needed > limit.remaining():
                    self._raise(Failure(self._rate_limited(
                        t.delay, f"it asked to retry in {math.ceil(t.delay)} seconds, more than this request "
                                 "has left")), ambiguous)
                if throttled > policy.max_throttled or waited + t.delay > policy.max_throttle_wait:
                    self._raise(Failure(self._rate_limited(t.delay, f"retry in {math.ceil(t.delay)} seconds")),
                                ambiguous)
                self._sleep(t.delay)
                waited += t.delay
                continue
            except Resend:
                continue
            except Failure as failure:
                last = failure
                if isinstance(failure.error, RateLimited):  # a 429 the client turned into a failure
                    observability.count(observability.THROTTLED)
                else:
                    observability.count(observability.UPSTREAM_ERRORS, upstream=self._metric_upstream)
            error = last.error
            if last.sent and isinstance(error, UpstreamTimeout) and error.maybe_applied and ambiguous is None:
                ambiguous = last
            if not last.retryable or (last.sent and not resend) or retries >= policy.max_retries:
                self._raise(last, ambiguous)
            pause = min(policy.backoff * (2 ** retries), policy.max_backoff)
            if pause + needed > limit.remaining():
                self._raise(last, ambiguous)
            self._sleep(pause)
            retries += 1

    # ------------------------------------------------------------------ failures

    def _rate_limited(self, delay: float, advice: str) -> RateLimited:
        return RateLimited(f"{self.upstream} is throttling our requests; {advice}.", upstream=self.upstream,
                           retry_after=delay)

    def _transport_failure(self, exc: httpx.TransportError, *, mutating: bool) -> Failure:
        up = self.upstream
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            # Nothing left this process: always safe to try again.
            return Failure(UpstreamUnreachable(f"{up} could not be reached.", upstream=up), sent=False, cause=exc)
        if isinstance(exc, httpx.TimeoutException):  # read/write timeout: the request may have arrived
            return Failure(UpstreamTimeout(f"{up} did not answer in time.", upstream=up, maybe_applied=mutating),
                           cause=exc)
        if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError):
            if mutating:
                return Failure(UpstreamTimeout(self._dropped, upstream=up, maybe_applied=True), cause=exc)
            return Failure(UpstreamError(self._dropped, upstream=up), cause=exc)
        # e.g. a base URL without http(s)://: trying again would not help
        return Failure(UpstreamError(f"{up} could not be reached.", upstream=up), retryable=False, cause=exc)

    def _out_of_time(self, last: Failure | None, ambiguous: Failure | None) -> BaseException:
        chosen = ambiguous or last
        if chosen is None:
            return OutOfTime(self.upstream)
        error = chosen.error
        error.__cause__ = chosen.cause
        return error

    def _raise(self, failure: Failure, ambiguous: Failure | None) -> NoReturn:
        """Raise ``failure``'s error, or the earlier attempt's when that one may have been applied (the
        outcome is then unknown, whatever the later attempts said)."""
        chosen = failure
        if ambiguous is not None and ambiguous is not failure:
            error = failure.error
            if not (isinstance(error, UpstreamTimeout) and error.maybe_applied):
                chosen = ambiguous
        raise chosen.error from chosen.cause


class RetryingClient:
    """What every upstream client shares: one ``httpx.Client`` (``_http``) sent through one ``Retrier``
    (``_retrier``), closed with the client or at the end of a ``with`` block."""

    _http: httpx.Client
    _retrier: Retrier

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def request_count(self) -> int:
        """HTTP attempts made so far (retries included)."""
        return self._retrier.attempts

    @property
    def attempt_seconds(self) -> float:
        """The longest one request attempt may take (connect + read timeout)."""
        return self._retrier.attempt_seconds
