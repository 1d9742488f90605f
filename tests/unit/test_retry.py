"""The deadline and the one retry engine of both upstream clients: budget arithmetic on a fake clock
(every wait and every hanging attempt advances it), so nothing here really waits."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cswhmcs import deadline
from cswhmcs.adapters.retry import (
    Failure,
    OutOfTime,
    Resend,
    Retrier,
    RetryPolicy,
    Throttled,
    retry_after,
)
from cswhmcs.deadline import Deadline
from cswhmcs.errors import RateLimited, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from tests.support.clocks import FakeClock

REQUEST = httpx.Request("GET", "https://upstream.example/x")


class Upstream:
    """One scripted answer per attempt; a "hang" lasts as long as the attempt's read timeout allowed."""

    def __init__(self, clock: FakeClock, *steps: str | httpx.Response | Exception) -> None:
        self.clock = clock
        self.steps = list(steps)
        self.timeouts: list[httpx.Timeout] = []

    def send(self, timeout: httpx.Timeout) -> httpx.Response:
        self.timeouts.append(timeout)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if step == "hang":
            assert timeout.read is not None
            self.clock.now += timeout.read
            raise httpx.ReadTimeout("timed out", request=REQUEST)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, httpx.Response)
        return step


def interpret(response: httpx.Response) -> str:
    if response.status_code == 429:
        raise Throttled(retry_after(response.headers))
    if response.status_code >= 500:
        raise Failure(UpstreamError(f"HTTP {response.status_code}", upstream="Up", http_status=response.status_code))
    return response.text


def retrier(clock: FakeClock, *, timeout: float = 10.0, connect: float = 3.0, **kw: Any) -> Retrier:
    return Retrier("ComputeStacks", timeout=timeout, connect_timeout=connect, sleep=clock.sleep, **kw)


def throttled(seconds: str) -> httpx.Response:
    return httpx.Response(429, text="Throttled\n", headers={"Retry-After": seconds})


def run(r: Retrier, up: Upstream, limit: Deadline, *, resend: bool = True, mutating: bool = False,
        check: Callable[[httpx.Response], str] = interpret) -> str:
    with deadline.use(limit):
        return r.run(up.send, check, resend=resend, mutating=mutating)


# ---------------------------------------------------------------------- the deadline


def test_a_deadline_counts_down_and_never_does_not() -> None:
    # Given a deadline 5 s away on a fake clock
    clock = FakeClock(1000.0)
    d = Deadline.after(5, clock=clock)
    # When time passes
    clock.now += 4.5
    # Then it has 0.5 s left, then none; never() always has all the time in the world
    assert d.remaining() == pytest.approx(0.5) and not d.expired()
    clock.now += 1
    assert d.expired() and d.remaining() == pytest.approx(-0.5)
    assert Deadline.never().remaining() == math.inf and not Deadline.never().expired()


class LambdaContext:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def test_for_api_is_25_s_or_the_lambda_time_less_the_margin_whichever_comes_first() -> None:
    # Given / When / Then: no context -> the API budget; a roomy Lambda -> still 25 s; a short one -> its time less 1 s
    assert deadline.for_api(None).remaining() == pytest.approx(25.0, abs=0.05)
    assert deadline.for_api(LambdaContext(28_000)).remaining() == pytest.approx(25.0, abs=0.05)
    assert deadline.for_api(LambdaContext(10_000)).remaining() == pytest.approx(9.0, abs=0.05)
    assert deadline.for_api(LambdaContext(10_000), budget=5, margin=2).remaining() == pytest.approx(5.0, abs=0.05)
    assert deadline.API_BUDGET_SECONDS == 25.0


def test_for_lambda_is_the_remaining_time_less_the_margin_and_never_without_a_context() -> None:
    assert deadline.for_lambda(LambdaContext(60_000), margin=10).remaining() == pytest.approx(50.0, abs=0.05)
    assert deadline.for_lambda(LambdaContext(5_000), margin=10).expired()
    assert deadline.for_lambda(None, margin=10).remaining() == math.inf
    assert deadline.for_lambda(object(), margin=10).remaining() == math.inf


def test_use_sets_the_current_deadline_for_the_block_and_this_thread_only() -> None:
    # Given no deadline set
    assert deadline.current().remaining() == math.inf
    outer, inner = Deadline.after(20), Deadline.after(5)
    seen_by_thread: list[float] = []
    # When blocks nest (and another thread looks meanwhile)
    with deadline.use(outer):
        with deadline.use(inner):
            assert deadline.current() is inner
            worker = threading.Thread(target=lambda: seen_by_thread.append(deadline.current().remaining()))
            worker.start()
            worker.join()
        # Then each block restores the one before it, and other threads are not affected
        assert deadline.current() is outer
    assert deadline.current().remaining() == math.inf
    assert seen_by_thread == [math.inf]


# ---------------------------------------------------------------------- attempts inside the budget


def test_a_hanging_upstream_ends_exactly_at_the_deadline() -> None:
    # Given an upstream that never answers, a 10 s read timeout and 23 s left
    clock = FakeClock(1000.0)
    up = Upstream(clock, "hang")
    r = retrier(clock)
    # When a GET is made
    with pytest.raises(UpstreamTimeout) as caught:
        run(r, up, Deadline.after(23, clock=clock))
    # Then two full attempts, two backoffs, and a third cut to what was left: it ends at 23.0 s, not 31 s
    assert [t.read for t in up.timeouts] == [10.0, 10.0, pytest.approx(2.25)]
    assert clock.sleeps == [0.25, 0.5]
    assert clock.now - 1000.0 == pytest.approx(23.0)
    assert caught.value.status == 504 and caught.value.maybe_applied is False
    assert caught.value.message == "ComputeStacks did not answer in time."


def test_the_connect_timeout_is_cut_to_the_remaining_time_too() -> None:
    # Given 1.5 s left
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(200, text="ok"))
    # When an attempt is made
    run(retrier(clock), up, Deadline.after(1.5, clock=clock))
    # Then neither its connect nor its read timeout goes past the deadline
    assert (up.timeouts[0].connect, up.timeouts[0].read) == (1.5, 1.5)


def test_without_a_deadline_the_configured_timeouts_apply() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(200, text="ok"))
    assert run(retrier(clock, timeout=4, connect=1.5), up, Deadline.never()) == "ok"
    assert (up.timeouts[0].connect, up.timeouts[0].read) == (1.5, 4.0)


def test_no_backoff_is_started_that_does_not_leave_time_for_an_attempt() -> None:
    # Given an upstream answering 503 at once, and 0.4 s left
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(503))
    # When a GET is made
    with pytest.raises(UpstreamError) as caught:
        run(retrier(clock), up, Deadline.after(0.4, clock=clock))
    # Then its own answer is raised after one attempt, without sleeping a backoff that could not be used
    assert caught.value.http_status == 503
    assert len(up.timeouts) == 1 and clock.sleeps == []


def test_nothing_is_sent_when_the_budget_is_already_gone() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(200, text="ok"))
    with pytest.raises(OutOfTime) as caught:
        run(retrier(clock), up, Deadline.after(0.1, clock=clock))
    assert up.timeouts == []
    assert caught.value.status == 504 and caught.value.code == "upstream_timeout"
    assert caught.value.maybe_applied is False


def test_a_request_that_must_not_be_resent_is_only_sent_with_a_whole_attempt_ahead() -> None:
    # Given 12.9 s left and an attempt that may take 3 s to connect plus 10 s to answer
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(200, text="created"))
    r = retrier(clock)
    # When a create (never re-sent) is to be sent
    with pytest.raises(OutOfTime):
        run(r, up, Deadline.after(12.9, clock=clock), resend=False, mutating=True)
    # Then it was not sent: a deadline must not turn it into a "maybe applied"
    assert up.timeouts == [] and r.attempts == 0
    # And with 13 s left it is sent, with its full timeout
    assert run(r, up, Deadline.after(13, clock=clock), resend=False, mutating=True) == "created"
    assert up.timeouts[0].read == 10.0


def test_a_pacer_that_waits_past_the_deadline_sends_nothing() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(200, text="ok"))
    r = retrier(clock, pacer=lambda: clock.sleep(6))
    with pytest.raises(OutOfTime):
        run(r, up, Deadline.after(5, clock=clock))
    assert up.timeouts == []


def test_an_earlier_attempt_that_may_have_been_applied_decides_the_error() -> None:
    # Given a PATCH whose first answer was lost, then connection failures
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.ReadTimeout("t", request=REQUEST), httpx.ConnectError("refused", request=REQUEST))
    # When the retries are spent
    with pytest.raises(UpstreamTimeout) as caught:
        run(retrier(clock), up, Deadline.never(), mutating=True)
    # Then the outcome is unknown (maybe applied), not "unreachable"
    assert not isinstance(caught.value, UpstreamUnreachable)
    assert caught.value.maybe_applied is True
    assert len(up.timeouts) == 3


def test_connect_failures_are_retried_even_for_requests_never_resent() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.ConnectError("refused", request=REQUEST), httpx.Response(200, text="ok"))
    assert run(retrier(clock), up, Deadline.never(), resend=False, mutating=True) == "ok"
    assert len(up.timeouts) == 2 and clock.sleeps == [0.25]


def test_resend_goes_again_at_once_without_counting_as_a_retry() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, httpx.Response(401), httpx.Response(503), httpx.Response(503), httpx.Response(200, text="ok"))
    asked = []

    def check(response: httpx.Response) -> str:
        if response.status_code == 401 and not asked:
            asked.append(1)
            raise Resend()
        return interpret(response)

    assert run(retrier(clock, policy=RetryPolicy(max_retries=2)), up, Deadline.never(), check=check) == "ok"
    assert clock.sleeps == [0.25, 0.5]


# ---------------------------------------------------------------------- 429


def test_a_429_is_waited_for_when_its_retry_after_fits() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, throttled("7"), httpx.Response(200, text="ok"))
    assert run(retrier(clock), up, Deadline.after(23, clock=clock)) == "ok"
    assert clock.sleeps == [7.0]


def test_a_429_whose_retry_after_does_not_fit_is_a_504_at_once() -> None:
    # Given ComputeStacks asking to wait 120 s, and 23 s left
    clock = FakeClock(1000.0)
    up = Upstream(clock, throttled("120"))
    # When a request is made
    with pytest.raises(RateLimited) as caught:
        run(retrier(clock), up, Deadline.after(23, clock=clock))
    # Then it is not waited for: a 504 that says why, at once
    assert clock.sleeps == [] and len(up.timeouts) == 1
    assert isinstance(caught.value, UpstreamTimeout) and caught.value.status == 504
    assert caught.value.maybe_applied is False and caught.value.retry_after == 120.0
    assert caught.value.message == ("ComputeStacks is throttling our requests; it asked to retry in 120 seconds, "
                                    "more than this request has left.")


def test_429_waits_stop_at_the_deadline_even_when_each_one_fits() -> None:
    # Given 9 s left and a 429 asking 4 s every time
    clock = FakeClock(1000.0)
    up = Upstream(clock, throttled("4"))
    with pytest.raises(RateLimited):
        run(retrier(clock), up, Deadline.after(9, clock=clock))
    # Then it waited while a wait plus an attempt still fitted (8 s), not a third time
    assert clock.sleeps == [4.0, 4.0] and len(up.timeouts) == 3
    assert clock.now - 1000.0 <= 9


def test_without_a_deadline_429_waits_are_capped_by_the_policy() -> None:
    clock = FakeClock(1000.0)
    up = Upstream(clock, throttled("4"))
    with pytest.raises(RateLimited) as caught:
        run(retrier(clock, policy=RetryPolicy(max_throttle_wait=10)), up, Deadline.never())
    assert clock.sleeps == [4.0, 4.0]
    assert caught.value.message == "ComputeStacks is throttling our requests; retry in 4 seconds."


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "120"}, 120.0),
    ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": "nan"}, 1.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ({}, 1.0),
])
def test_retry_after_parsing(headers: dict[str, str], expected: float) -> None:
    assert retry_after(httpx.Headers(headers)) == expected
