"""SharedWindow, the billing workers' one ComputeStacks budget, against DynamoDB Local: any 300 s hold at most
the budget whatever the number of processes, an idle window gives the whole budget at once, and a wait that
does not fit takes nothing."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest

from cswhmcs import deadline
from cswhmcs.adapters.pacing import PacingOutOfTime, SharedWindow
from tests.support.clocks import FakeClock


@pytest.fixture
def ledger(tables: Any) -> Any:
    return boto3.resource("dynamodb", endpoint_url=tables.endpoint).Table(tables.ledger)


def peak(stamps: list[float], window: float) -> int:
    """The most stamps in any half-open interval of ``window`` seconds."""
    ts = sorted(stamps)
    best = left = 0
    for right, t in enumerate(ts):
        while t - ts[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best


def test_an_idle_window_gives_the_whole_budget_at_once_then_each_token_returns_a_window_later(ledger: Any) -> None:
    # Given an empty window of 10 requests per 300 s
    clock = FakeClock(1_000_000.0)
    pacer = SharedWindow(ledger, 10, clock=clock, sleep=clock.sleep)
    # When 10 requests go out over 5 seconds, then an 11th
    for _ in range(10):
        assert pacer.acquire(max_wait=0) == 0.0
        clock.advance(0.5)
    waited = pacer.acquire(max_wait=600)
    # Then the 10 did not wait, and the 11th waited until the first one's second had left the window
    # (its second + 301: any 300 s interval touches at most 301 one-second slots)
    assert waited == pytest.approx(1_000_301.0 - 1_000_005.0)
    assert clock.now == pytest.approx(1_000_301.0)


def test_a_wait_that_does_not_fit_takes_no_token(ledger: Any) -> None:
    # Given a window whose budget of 3 is used
    clock = FakeClock(2_000_000.0)
    pacer = SharedWindow(ledger, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        pacer.acquire(max_wait=0)
    before = ledger.get_item(Key={"pk": "pacer#computestacks", "sk": "window"}, ConsistentRead=True)["Item"]
    # When a request may wait only 10 s (the window frees in 301)
    with pytest.raises(PacingOutOfTime) as caught:
        pacer.acquire(max_wait=10)
    # Then it is refused before waiting, and the window's count is unchanged
    assert caught.value.wait == pytest.approx(301.0)
    assert clock.sleeps == []
    after = ledger.get_item(Key={"pk": "pacer#computestacks", "sk": "window"}, ConsistentRead=True)["Item"]
    assert after == before


def test_a_new_process_finds_the_budget_its_predecessors_used(ledger: Any) -> None:
    # Given one process (a Lambda environment) that used the whole budget of 5
    clock = FakeClock(3_000_000.0)
    first = SharedWindow(ledger, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        first.acquire(max_wait=0)
    # When a fresh process (a replaced or added environment) asks 100 s later
    clock.advance(100)
    second = SharedWindow(ledger, 5, clock=clock, sleep=clock.sleep)
    # Then it gets nothing until the window has moved past the first process's requests
    with pytest.raises(PacingOutOfTime):
        second.acquire(max_wait=0)
    assert second.acquire(max_wait=300) == pytest.approx(201.0)


def test_many_processes_taking_turns_stay_within_the_budget_and_use_it(ledger: Any) -> None:
    # Given 6 processes sharing a budget of 20 per 300 s, asking in turn every 5 s for 1,250 s, never waiting
    clock = FakeClock(4_000_000.0)
    pacers = [SharedWindow(ledger, 20, clock=clock, sleep=clock.sleep) for _ in range(6)]
    granted: list[float] = []
    i = 0
    while clock.now < 4_001_250.0:
        try:
            pacers[i % 6].acquire(max_wait=0)
            granted.append(clock.now)
        except PacingOutOfTime:
            pass
        i += 1
        clock.advance(5.0)
    # Then no 300 s interval holds more than 20, and each 301 s gave the whole budget (4 full windows and a part)
    assert peak(granted, 300.0) <= 20
    assert len(granted) >= 4 * 20
    # And the item keeps only the seconds still in the window (a few hundred bytes)
    item = ledger.get_item(Key={"pk": "pacer#computestacks", "sk": "window"}, ConsistentRead=True)["Item"]
    seconds = [int(k[1:]) for k in item if k[0] == "s" and k[1:].isdigit()]
    assert seconds and min(seconds) >= max(seconds) - 301


def test_a_process_whose_clock_lags_counts_in_the_newest_second(ledger: Any) -> None:
    # Given a process that wrote second T, and another whose clock reads T - 2
    ahead, behind = FakeClock(5_000_010.0), FakeClock(5_000_008.0)
    SharedWindow(ledger, 4, clock=ahead, sleep=ahead.sleep).acquire(max_wait=0)
    lagging = SharedWindow(ledger, 4, clock=behind, sleep=behind.sleep)
    # When the lagging one takes a token
    lagging.acquire(max_wait=0)
    # Then it is counted in second T, not in a second the other one has already summed
    item = ledger.get_item(Key={"pk": "pacer#computestacks", "sk": "window"}, ConsistentRead=True)["Item"]
    assert {k: int(v) for k, v in item.items() if k[0] == "s" and k[1:].isdigit()} == {"s5000010": 2}


def test_a_process_that_read_before_another_moved_on_reads_again(ledger: Any) -> None:
    # Given process A that took a token in second T (and keeps what the write returned), then process B whose
    # clock is already in T + 1 and took one there (so B summed second T as final)
    a_clock, b_clock = FakeClock(6_000_000.2), FakeClock(6_000_001.0)
    a = SharedWindow(ledger, 10, clock=a_clock, sleep=a_clock.sleep)
    b = SharedWindow(ledger, 10, clock=b_clock, sleep=b_clock.sleep)
    a.acquire(max_wait=0)
    b.acquire(max_wait=0)
    # When A takes another token, still in second T by its clock
    a_clock.advance(0.5)
    a.acquire(max_wait=0)
    # Then its first write is refused (the item's newest second moved) and the token counts in T + 1
    assert a.refused == 1
    item = ledger.get_item(Key={"pk": "pacer#computestacks", "sk": "window"}, ConsistentRead=True)["Item"]
    assert {k: int(v) for k, v in item.items() if k[0] == "s" and k[1:].isdigit()} == {"s6000000": 1, "s6000001": 2}


def test_concurrent_processes_and_threads_never_exceed_the_budget(ledger: Any) -> None:
    # Given 4 processes of 3 threads each on the real clock, a budget of 12 per 2 s window
    pacers = [SharedWindow(ledger, 12, window=2.0, name="race") for _ in range(4)]
    granted: list[float] = []
    lock = threading.Lock()
    stop = time.time() + 4.0

    def work(pacer: SharedWindow) -> None:
        while time.time() < stop:
            try:
                pacer.acquire(max_wait=max(0.0, stop - time.time()))
            except PacingOutOfTime:
                return
            with lock:
                granted.append(time.time())

    threads = [threading.Thread(target=work, args=(p,)) for p in pacers for _ in range(3)]
    # When they all ask as fast as they can for 4 s
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Then no 2 s interval held more than 12 (the write that takes a token is conditional on the window's sum),
    # and the budget was used: at least one full window's worth
    assert peak(granted, 2.0) <= 12
    assert len(granted) >= 12
    assert sum(p.refused for p in pacers) >= 1  # they did race


def test_bad_arguments_are_refused(ledger: Any) -> None:
    with pytest.raises(ValueError, match="budget"):
        SharedWindow(ledger, 0)
    with pytest.raises(ValueError, match="tokens"):
        SharedWindow(ledger, 3).acquire(4)


def _client(pacer: SharedWindow, sent: list[Any]) -> Any:
    import httpx

    from cswhmcs.adapters.computestacks import ComputeStacksClient

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"user": {"id": 5, "email": "a@example.org"}})

    return ComputeStacksClient("http://cs.example.test", "key", "secret", transport=httpx.MockTransport(answer),
                               pacer=pacer)


def test_through_the_computestacks_client_a_full_window_sends_nothing_and_is_out_of_time(ledger: Any) -> None:
    from cswhmcs.adapters.computestacks import UserSelector
    from cswhmcs.errors import UpstreamTimeout

    # Given the client paced by a window whose budget of 1 is used, and 5 s left of the deadline
    sent: list[Any] = []
    pacer = SharedWindow(ledger, 1, name="client")
    cs = _client(pacer, sent)
    assert cs.get_user(UserSelector.by_id(5)) is not None
    # When it is asked again
    with deadline.use(deadline.Deadline.after(5.0)), pytest.raises(UpstreamTimeout) as caught:
        cs.get_user(UserSelector.by_id(5))
    # Then it gives up before waiting (the window frees in ~301 s), nothing is sent, and it says so
    assert len(sent) == 1
    assert caught.value.maybe_applied is False


def test_a_dynamodb_error_in_the_window_sends_nothing(tables: Any) -> None:
    from botocore.exceptions import ClientError

    from cswhmcs.adapters.computestacks import UserSelector

    # Given a window on a table that does not exist
    missing = boto3.resource("dynamodb", endpoint_url=tables.endpoint).Table("no-such-table")
    sent: list[Any] = []
    cs = _client(SharedWindow(missing, 10), sent)
    # When ComputeStacks is asked, the DynamoDB error propagates and no request left
    with pytest.raises(ClientError):
        cs.get_user(UserSelector.by_id(5))
    assert sent == []
