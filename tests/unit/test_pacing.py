"""TokenBucket: the client-side pacer that keeps billing under 2,500 requests / 5 minutes."""

from __future__ import annotations

import threading
import time

import pytest

from cswhmcs.adapters.pacing import Pacer, TokenBucket
from tests.support.clocks import FakeClock


def test_burst_passes_at_once_then_requests_are_spaced_by_the_rate() -> None:
    # Given a bucket of 3 tokens refilled at 2 per second
    t = FakeClock(1000.0)  # moves only when someone sleeps
    bucket = TokenBucket(2.0, 3, clock=t, sleep=t.sleep)
    # When 5 requests are made back to back
    waits = [bucket.acquire() for _ in range(5)]
    # Then the first 3 do not wait and the next ones wait half a second each
    assert waits == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert t.sleeps == [0.5, 0.5]


def test_idle_time_refills_up_to_the_burst_only() -> None:
    # Given an empty bucket
    t = FakeClock(1000.0)  # moves only when someone sleeps
    bucket = TokenBucket(1.0, 2, clock=t, sleep=t.sleep)
    bucket.acquire()
    bucket.acquire()
    # When a long time passes
    t.now += 3600
    # Then only `burst` tokens are available, not an hour's worth
    assert bucket.available == 2
    assert bucket.try_acquire() and bucket.try_acquire()
    assert not bucket.try_acquire()


def test_computestacks_bucket_never_exceeds_the_limit_in_any_window() -> None:
    # Given the bucket sized for ComputeStacks' 2,500 requests per 300 s (with 10 % headroom)
    t = FakeClock(1000.0)  # moves only when someone sleeps
    bucket = TokenBucket.for_computestacks(clock=t, sleep=t.sleep)
    # When 6,000 requests go out as fast as the bucket lets them
    stamps = []
    for _ in range(6000):
        bucket.acquire()
        stamps.append(t.now)
    # Then no 300-second window (fixed like Rack::Attack's, or sliding) holds more than 2,250
    fixed: dict[int, int] = {}
    for s in stamps:
        fixed[int(s // 300)] = fixed.get(int(s // 300), 0) + 1
    assert max(fixed.values()) <= 2250
    left = 0
    for right, stamp in enumerate(stamps):
        while stamp - stamps[left] >= 300:
            left += 1
        assert right - left + 1 <= 2250
    # And it is not needlessly slow: 6,000 requests take under 14 minutes
    assert stamps[-1] - stamps[0] < 14 * 60


def test_concurrent_callers_share_one_budget() -> None:
    # Given a fast real-time bucket (2,000/s, burst 5) shared by 8 threads
    bucket = TokenBucket(2000.0, 5)
    taken: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            bucket.acquire()
            with lock:
                taken.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    started = time.monotonic()
    # When they all take tokens at once
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Then all 200 got one, and it took at least (200 - burst) / rate seconds
    assert len(taken) == 200
    assert time.monotonic() - started >= (200 - 5) / 2000.0 * 0.95


def test_token_bucket_satisfies_the_pacer_protocol() -> None:
    # Given a bucket
    bucket: Pacer = TokenBucket(1.0, 1)
    # When / Then it can be used where a Pacer is expected
    assert bucket.acquire() == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1.0, 5), (1.0, 0)])
def test_invalid_settings_are_refused(rate: float, burst: int) -> None:
    # Given / When / Then nonsense settings raise
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_cannot_take_more_than_the_burst_at_once() -> None:
    # Given a bucket of 2
    bucket = TokenBucket(1.0, 2)
    # When / Then asking for 3 at once is refused rather than waiting forever
    with pytest.raises(ValueError):
        bucket.acquire(3)


# ---------------------------------------------------------------------- issue 8: waits inside the deadline


def test_a_wait_longer_than_allowed_does_not_start_and_takes_no_token() -> None:
    # Given an empty bucket refilled at 1 token per 2 s
    from cswhmcs.adapters.pacing import PacingOutOfTime

    t = FakeClock(1000.0)  # moves only when someone sleeps
    bucket = TokenBucket(0.5, 1, clock=t, sleep=t.sleep)
    bucket.acquire()
    # When a caller may wait 1.5 s but its token would take 2 s
    with pytest.raises(PacingOutOfTime) as caught:
        bucket.acquire(max_wait=1.5)
    # Then nothing slept, and no token was taken: the next caller waits 2 s, not 4 s
    assert t.sleeps == [] and caught.value.status == 504 and caught.value.maybe_applied is False
    assert bucket.available == 0.0
    assert bucket.acquire(max_wait=2.0) == 2.0 and t.sleeps == [2.0]


def test_the_wait_is_bounded_by_the_current_deadline_by_default() -> None:
    from cswhmcs import deadline
    from cswhmcs.adapters.pacing import PacingOutOfTime

    t = FakeClock(1000.0)  # moves only when someone sleeps
    bucket = TokenBucket(0.5, 1, clock=t, sleep=t.sleep)
    bucket.acquire()
    with deadline.use(deadline.Deadline.after(1.0, clock=t)), pytest.raises(PacingOutOfTime):
        bucket.acquire()
    assert t.sleeps == []
    with deadline.use(deadline.Deadline.after(3.0, clock=t)):
        assert bucket.acquire() == 2.0


def test_a_client_whose_pacer_wait_does_not_fit_sends_nothing_and_raises_out_of_time() -> None:
    # Given a WHMCS client behind an exhausted bucket (next token in 10 s) and a request with 8 s left
    import httpx

    from cswhmcs import deadline
    from cswhmcs.adapters.retry import OutOfTime
    from cswhmcs.adapters.whmcs import WhmcsClient
    from cswhmcs.api import error_response

    t = FakeClock(1000.0)  # moves only when someone sleeps
    bucket = TokenBucket(0.1, 1, clock=t, sleep=t.sleep)
    bucket.acquire()
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"result": "success", "whmcs": {"version": "8.10.1"}})

    client = WhmcsClient("https://whmcs.example/includes/api.php", "ident", "secret-value", None, pacer=bucket,
                         transport=httpx.MockTransport(answer), sleep=t.sleep, timeout=2.0, connect_timeout=1.0)
    # When it is asked for something
    with deadline.use(deadline.Deadline.after(8.0, clock=t)), pytest.raises(OutOfTime) as caught:
        client.version()
    # Then the pacer's wait never started, no token was spent, nothing was sent, and it is a 504
    assert t.sleeps == [] and sent == [] and client.request_count == 0
    assert error_response(caught.value)["statusCode"] == 504
    assert bucket.available == 0.0
    # And with time for the wait plus an attempt, it waits and sends
    with deadline.use(deadline.Deadline.after(14.0, clock=t)):
        client.version()
    assert t.sleeps == [10.0] and len(sent) == 1
