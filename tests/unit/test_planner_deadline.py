"""The billing planner inside its Lambda's time (issue 8): a planner out of time gives its lease up and
fails, so the retry of the invocation resumes the run and every account still gets its message once.
Uses the in-memory fakes and moto tables of tests/support/billing.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from cswhmcs import deadline
from cswhmcs.billing.handlers import planner_handler
from cswhmcs.billing.messages import BILL, WorkMessage
from cswhmcs.billing.planner import PLANNER_MARGIN_SECONDS, PlanningOutOfTime, Trigger, plan_run
from cswhmcs.billing.usage import iso
from tests.support.billing import AS_OF, ListSink, World, world
from tests.support.clocks import FakeClock

__all__ = ["world"]  # the fixture

EVENT = {"mode": "bill", "scheduled_time": "2026-10-31T23:00:00Z", "execution_id": "x", "timezone": "UTC"}


class Context:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


class Sqs:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.bodies += [e["MessageBody"] for e in kwargs["Entries"]]
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    def service_ids(self) -> list[int]:
        return sorted(WorkMessage.from_json(b).account.service_id for b in self.bodies)


def run_item(world: World) -> dict[str, Any]:
    return world.table.get_item(Key={"pk": "run#bill#2026-10-31T23:00:00Z", "sk": "run"}, ConsistentRead=True)["Item"]


@pytest.fixture
def planner_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from cswhmcs.api import reset_deps

    monkeypatch.setenv("WORK_QUEUE_URL", "https://sqs.example/work")  # the planner's settings (template.yaml)
    reset_deps()
    yield
    reset_deps()


@pytest.mark.usefixtures("planner_env")
def test_a_planner_without_time_left_releases_the_run_for_its_retry(world: World) -> None:
    # Given three accounts and a planner invocation with less time left than its margin
    for sid, uid, cid in ((10, 2, 3), (11, 4, 5), (12, 6, 7)):
        world.add_account(sid, uid, cid)
    sqs = Sqs()
    kw = {"sqs": sqs, "whmcs": world.whmcs, "ledger": world.ledger, "accounts": world.accounts}
    short = Context(int((PLANNER_MARGIN_SECONDS - 1) * 1000))
    # When it runs
    with pytest.raises(PlanningOutOfTime):
        planner_handler(EVENT, short, None, **kw)
    # Then it enqueued nothing, and left the run "planning" with its lease given up
    item = run_item(world)
    assert sqs.bodies == [] and item["status"] == "planning"
    assert item["lease_until"] == iso(world.clock.now)
    # And Lambda's retry a minute later, with time, resumes it: every account gets its message, once
    world.clock.now += timedelta(minutes=1)
    answer = planner_handler(EVENT, Context(900_000), None, **kw)
    assert answer["accounts"] == 3 and answer["skipped"] == "" and sqs.service_ids() == [10, 11, 12]
    assert run_item(world)["status"] == "planned"


class SlowSink(ListSink):
    """Each page takes ``seconds`` of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def send(self, messages: list[WorkMessage]) -> None:
        self.clock.advance(self.seconds)
        super().send(messages)


def test_a_planner_that_runs_out_of_time_mid_scan_stops_and_is_resumed(world: World) -> None:
    # Given three accounts, one per page, and pages that take 4 s of a 6 s budget each
    for sid, uid, cid in ((10, 2, 3), (11, 4, 5), (12, 6, 7)):
        world.add_account(sid, uid, cid)
    clock = FakeClock(100.0)
    sink = SlowSink(clock, 4.0)
    trigger = Trigger(BILL, AS_OF)
    # When the planner runs
    with deadline.use(deadline.Deadline.after(6.0, clock=clock)), pytest.raises(PlanningOutOfTime) as caught:
        plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs, sink=sink,
                 segments=1, page_size=1)
    # Then it stopped sending once the time was gone, and released the run
    assert len(sink.sent) == 2 and caught.value.sent == 2
    assert run_item(world)["status"] == "planning"
    # And the next attempt resumes it (re-sending is harmless: the worker is idempotent per account)
    world.clock.now += timedelta(minutes=1)
    again = SlowSink(clock, 0.0)
    result = plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs, sink=again,
                      segments=2, page_size=1)
    assert result.accounts == 3 and sorted(m.account.service_id for m in again.sent) == [10, 11, 12]
