"""TokenBucket: the client-side pacer that keeps billing under 2,500 requests / 5 minutes."""

from __future__ import annotations

import threading
import time

import pytest

from cswhmcs.adapters.pacing import Pacer, TokenBucket


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_burst_passes_at_once_then_requests_are_spaced_by_the_rate() -> None:
    # Given a bucket of 3 tokens refilled at 2 per second
    t = FakeTime()
    bucket = TokenBucket(2.0, 3, clock=t.clock, sleep=t.sleep)
    # When 5 requests are made back to back
    waits = [bucket.acquire() for _ in range(5)]
    # Then the first 3 do not wait and the next ones wait half a second each
    assert waits == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert t.sleeps == [0.5, 0.5]


def test_idle_time_refills_up_to_the_burst_only() -> None:
    # Given an empty bucket
    t = FakeTime()
    bucket = TokenBucket(1.0, 2, clock=t.clock, sleep=t.sleep)
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
    t = FakeTime()
    bucket = TokenBucket.for_computestacks(clock=t.clock, sleep=t.sleep)
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
