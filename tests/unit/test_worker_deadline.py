"""The billing worker inside its deadline (issue 8): a line is only marked "sending" when one whole WHMCS
attempt still fits; otherwise, or when WHMCS throttles, the account is released with its lines planned.
Uses the in-memory fakes and moto tables of tests/support/billing.py."""

from __future__ import annotations

from typing import Any

from cswhmcs import deadline
from cswhmcs.adapters.retry import OutOfTime
from cswhmcs.billing.handlers import worker_handler
from cswhmcs.billing.worker import WORKER_MARGIN_SECONDS, process_account
from cswhmcs.errors import RateLimited
from tests.support.billing import FakeWhmcs, World, message, month_of_usage, worker_event, world

__all__ = ["world"]  # the fixture


class TimedWhmcs(FakeWhmcs):
    """The fake WHMCS, with the attempt length a real client reports (connect + read timeout)."""

    attempt_seconds = 13.0


class Context:
    """A Lambda context whose remaining time is read from a list (the last value repeats)."""

    def __init__(self, *millis: int) -> None:
        self.millis = list(millis)

    def get_remaining_time_in_millis(self) -> int:
        return self.millis.pop(0) if len(self.millis) > 1 else self.millis[0]


def planned(world: World, uid: int) -> list[Any]:
    return [(ln.status, ln.attempts) for ln in world.ledger.load(uid).lines.values()]


def timed(world: World) -> None:
    whmcs = TimedWhmcs()
    whmcs.clients = world.whmcs.clients
    world.whmcs = whmcs


def test_no_line_is_marked_sending_without_time_for_a_whole_whmcs_attempt(world: World) -> None:
    # Given an account with a month of usage, a WHMCS attempt that may take 13 s, and 5 s left
    timed(world)
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    # When it is processed
    with deadline.use(deadline.Deadline.after(5)):
        result = process_account(message(acct), world.deps())
    # Then nothing was sent, the line waits planned (its attempt not counted), and the account is released
    assert world.whmcs.items == []
    assert planned(world, 2) == [("planned", 0)]
    assert result.error is not None and "time" in result.error
    # And the next delivery, with time, sends it once
    again = process_account(message(acct), world.deps())
    assert again.error is None and len(world.whmcs.items) == 1 and world.ledger.load(2).lines == {}


def test_a_client_that_ran_out_of_time_before_sending_leaves_the_line_planned(world: World) -> None:
    # Given WHMCS's client refusing to send for lack of time (its pacer made it wait, say)
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)

    def out_of_time(**_kw: Any) -> int:
        raise OutOfTime("WHMCS")

    deps = world.deps()
    deps.whmcs = type("W", (), {"__getattr__": lambda _s, name: getattr(world.whmcs, name),
                                "add_billable_item": staticmethod(out_of_time)})()
    # When the account is processed
    result = process_account(message(acct), deps)
    # Then the line is back to planned, its attempt not counted, and the account released
    assert planned(world, 2) == [("planned", 0)]
    assert result.error is not None and list(world.ledger.attention()) == []


def test_throttled_whmcs_releases_the_account_without_counting_a_refusal(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)

    def throttled(**_kw: Any) -> int:
        raise RateLimited("WHMCS is throttling our requests; retry in 120 seconds.", upstream="WHMCS",
                          retry_after=120)

    deps = world.deps()
    deps.whmcs = type("W", (), {"__getattr__": lambda _s, name: getattr(world.whmcs, name),
                                "add_billable_item": staticmethod(throttled)})()
    for _ in range(6):  # more deliveries than max_send_attempts: a throttle is never "refused 5 times"
        result = process_account(message(acct), deps)
        assert result.error is not None and "throttling" in result.error
    assert planned(world, 2) == [("planned", 0)]
    assert list(world.ledger.attention()) == []


def test_the_lambda_handler_gives_each_record_its_remaining_time_less_the_margin(world: World) -> None:
    # Given two accounts, and a worker invocation with time for the first one only: when the second
    # starts, 3 s are left beyond the margin, too few for a WHMCS attempt
    timed(world)
    one, two = world.add_account(10, 2, 3), world.add_account(11, 4, 5)
    month_of_usage(world.cs, 2)
    month_of_usage(world.cs, 4)
    event = worker_event({"m1": message(one).to_json(), "m2": message(two).to_json()})
    context = Context(60_000, int((WORKER_MARGIN_SECONDS + 3) * 1000))
    # When the batch is handled
    answer = worker_handler(event, context, {}, deps=world.deps())
    # Then the first account is billed, the second returns to the queue with nothing sent or "sending"
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert len(world.whmcs.items) == 1 and world.ledger.load(2).lines == {}
    assert planned(world, 4) == [("planned", 0)]
    # And its redelivery, with time, bills it
    event["Records"] = event["Records"][1:]
    assert worker_handler(event, Context(900_000), {}, deps=world.deps()) == {"batchItemFailures": []}
    assert len(world.whmcs.items) == 2
