"""The close run (docs/billing.md section 3b): accounts read after ComputeStacks' last collection before the
cut-off are billed at the cut-off without another read; an account whose rows may still be incomplete is read
again; a row that turns up later is billed in the next period, never lost, never twice."""
# ruff: noqa: F811

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs.billing.grouping import complete_for
from cswhmcs.billing.messages import BILL, CLOSE, COLLECT
from cswhmcs.billing.planner import parse_trigger
from cswhmcs.billing.usage import UsageRow
from cswhmcs.billing.worker import process_account
from cswhmcs.errors import InvalidInput

# `world` is the fixture of tests/support/billing.py (DynamoDB on moto, in-memory ComputeStacks and WHMCS fakes)
from tests.support.billing import AS_OF, OCT, ROOT, World, message, month_of_usage, world  # noqa: F401

CLOSE_AT = AS_OF - timedelta(minutes=100)  # 21:20, ComputeStacks' last collection before a 23:00 cut-off
H = timedelta(hours=1)


def row(sp: int, end: datetime) -> UsageRow:
    return UsageRow(id=sp * 1000 + int(end.timestamp()) % 1000, sp_id=sp, product_id=sp, product_name="p",
                    product_label="p", period_start=end - 3 * H, period_end=end, total=Decimal("1"), qty=Decimal("1"),
                    created_at=end)


# ---------------------------------------------------------------------- completeness, from the rows' own periods


@pytest.mark.parametrize(("ends", "complete"), [
    ([AS_OF - 100 * timedelta(minutes=1)], True),  # the 21:20 row is there: the next one ends at 00:20
    ([AS_OF - 5 * H + timedelta(minutes=20)], False),  # newest is 18:20: the 21:20 row is not committed yet
    ([AS_OF - 100 * timedelta(minutes=1), AS_OF - 5 * H], False),  # one product's row is missing
    ([AS_OF - 3 * H], False),  # collections at :00 -> one is due at 23:00 sharp, which ends at the cut-off
    ([AS_OF - 3 * H + timedelta(minutes=1)], True),  # its next row ends one minute after the cut-off
    ([AS_OF - 9 * H], True),  # stopped long ago: no row is due
    ([], True),  # nothing running
    ([AS_OF + H], True),  # a row listed before it ends (ends after the cut-off: next period)
])
def test_completeness_per_subscription_product(ends: list[datetime], complete: bool) -> None:
    rows = [row(i + 1, end) for i, end in enumerate(ends)]
    read_at = CLOSE_AT + timedelta(minutes=5)
    assert complete_for(rows, as_of=AS_OF, read_at=read_at, history_from=AS_OF - 24 * H) is complete


def test_a_read_after_the_cut_off_is_always_complete_and_a_short_history_never_before_it() -> None:
    old = [row(1, AS_OF - 5 * H)]
    assert complete_for(old, as_of=AS_OF, read_at=AS_OF, history_from=AS_OF - H) is True
    # The listing stopped at a floor 2 hours back: a product whose rows lie below it cannot be judged
    recent = [row(1, CLOSE_AT)]
    assert complete_for(recent, as_of=AS_OF, read_at=CLOSE_AT + H, history_from=CLOSE_AT - H) is False
    assert complete_for(recent, as_of=AS_OF, read_at=CLOSE_AT + H, history_from=None) is True


# ---------------------------------------------------------------------- the trigger


def test_close_trigger_as_of_is_the_cut_off() -> None:
    t = parse_trigger(json.loads((ROOT / "events/billing_planner_close.json").read_text()))
    assert (t.kind, t.as_of, t.run_id) == (CLOSE, AS_OF, "close#2026-10-31T23:00:00Z")
    t = parse_trigger({"mode": "close", "scheduled_time": "2026-10-31T21:20:00Z"})
    assert t.as_of == AS_OF  # the default lead is 100 minutes


@pytest.mark.parametrize("event", [
    {"mode": "close", "scheduled_time": "2026-10-31T21:20:00Z", "lead_minutes": 0},
    {"mode": "close", "scheduled_time": "2026-10-31T21:20:00Z", "lead_minutes": "soon"},
    {"mode": "close", "scheduled_time": "2026-10-31T21:20:00Z", "lead_minutes": 721},
    {"mode": "close", "scheduled_time": "2026-10-31T21:20:00Z", "lead_minutes": True},
    {"mode": "bill", "scheduled_time": "2026-10-31T23:00:00Z", "lead_minutes": 100},
])
def test_close_trigger_validation_names_the_field(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_trigger(event)
    assert info.value.field == "lead_minutes"


# ---------------------------------------------------------------------- close, then bill


def _close(world: World, acct: Any, at: datetime = CLOSE_AT + timedelta(minutes=10)) -> Any:
    world.clock.now = at
    return process_account(message(acct, AS_OF, kind=CLOSE), world.deps())


def _bill(world: World, acct: Any) -> Any:
    world.clock.now = AS_OF + timedelta(minutes=5)
    return process_account(message(acct, AS_OF, kind=BILL), world.deps())


def test_an_account_read_completely_before_the_cut_off_is_billed_without_another_read(world: World) -> None:
    # Given October's usage up to the 21:00 collection of the last day (collections every 3 h)
    acct = world.add_account(10, 2, 3)
    exact = month_of_usage(world.cs, 2, total="0.02054795")
    closed = _close(world, acct)
    assert closed.read and closed.complete is True and world.whmcs.items == []
    reads = world.cs.request_count

    # When the month-end run comes at the cut-off
    billed = _bill(world, acct)

    # Then it bills every row, to the cent, and asks ComputeStacks nothing
    assert world.cs.request_count == reads and not billed.read
    assert [i["amount"] for i in world.whmcs.items] == [exact.quantize(Decimal("0.01"))]


def test_an_incomplete_account_is_read_again_by_the_month_end_run(world: World) -> None:
    # Given the last collection's row not committed yet when the close run reads (newest row ends 18:00)
    acct = world.add_account(10, 2, 3)
    first = month_of_usage(world.cs, 2, total="1", days=31)
    last = world.cs.rows.pop()  # the 21:00 row: committed after the close read
    closed = _close(world, acct, at=CLOSE_AT + timedelta(minutes=1))
    assert closed.complete is False
    world.cs.rows.append(last)
    reads = world.cs.request_count

    # When the month-end run comes
    billed = _bill(world, acct)

    # Then it reads again and bills everything, once
    assert billed.read and world.cs.request_count == reads + 1
    assert [i["amount"] for i in world.whmcs.items] == [first]


def test_a_row_that_turns_up_after_a_complete_close_read_is_billed_next_period(world: World) -> None:
    # Given a complete close read, then a row ending before the cut-off that ComputeStacks writes only later
    # (a subscription stopped at 22:10, written by the 00:20 collection)
    acct = world.add_account(10, 2, 3)
    october = month_of_usage(world.cs, 2, product=1, sp=1, total="1")
    assert _close(world, acct).complete is True
    _bill(world, acct)
    late = datetime(2026, 10, 31, 22, 10, tzinfo=UTC)
    world.cs.add_usage(2, product=1, sp=1, total="5", end=late)
    world.cs.rows[-1]["created_at"] = "2026-11-01T00:20:00Z"

    # When November is collected daily and billed at its month-end
    world.clock.now = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)
    process_account(message(acct, datetime(2026, 11, 2, 0, 30, tzinfo=UTC), kind=COLLECT), world.deps())
    nov_end = datetime(2026, 11, 30, 23, tzinfo=UTC)
    world.clock.now = nov_end + timedelta(minutes=5)
    process_account(message(acct, nov_end), world.deps())

    # Then October's line has October's rows read by the close run, and the late row is in November's: once
    assert [i["amount"] for i in world.whmcs.items] == [october, Decimal("5.00")]
    assert "2026-11" in world.whmcs.items[1]["description"]


def test_close_messages_after_the_month_end_run_change_nothing(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    _bill(world, acct)
    reads = world.cs.request_count

    late_close = _close(world, acct, at=AS_OF + timedelta(minutes=30))  # a close message delivered late

    assert not late_close.read and world.cs.request_count == reads and len(world.whmcs.items) == 1


def test_a_close_message_reached_after_the_cut_off_bills_as_the_month_end_run_would(world: World) -> None:
    # Given the close run still draining its queue when the cut-off has passed
    acct = world.add_account(10, 2, 3)
    exact = month_of_usage(world.cs, 2, total="1")
    closed = _close(world, acct, at=AS_OF + timedelta(minutes=2))

    # Then its message reads and bills the account at once: the same as-of, period and refs
    assert closed.complete is True and [o.status for o in closed.lines] == ["created"]
    assert [i["amount"] for i in world.whmcs.items] == [exact]
    assert "[ref 2:2026-10:1]" in world.whmcs.items[0]["description"]
    reads = world.cs.request_count

    # And the month-end run's message for it finds nothing to read or bill
    billed = _bill(world, acct)
    assert billed.lines == [] and not billed.read and world.cs.request_count == reads
    assert len(world.whmcs.items) == 1


def test_a_close_run_does_not_spend_a_request_on_a_stale_currency(world: World) -> None:
    # Given an account whose ComputeStacks currency was last read 8 days ago (a daily collection refreshes it)
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2, days=20)
    world.clock.now = OCT + timedelta(days=20)
    process_account(message(acct, world.clock.now, kind=COLLECT), world.deps())
    month_of_usage(world.cs, 2, start=OCT + timedelta(days=20), days=11)
    reads = world.cs.request_count

    # When the close run reads it (more than 7 days later)
    assert _close(world, acct).complete is True

    # Then one request, the listing: no GET user at month-end
    assert world.cs.request_count == reads + 1


def test_at_the_cut_off_an_account_read_by_the_close_run_costs_three_dynamodb_requests(world: World) -> None:
    # Given an account with three products, read completely by the close run, billed through the receiver
    from collections import Counter

    from tests.support.billing import setup

    receiver = setup(world)
    acct = world.add_account(10, 2, 3)
    for product in (1, 2, 3):
        month_of_usage(world.cs, 2, product=product, sp=product, total="1")
    world.clock.now = CLOSE_AT + timedelta(minutes=10)
    assert process_account(message(acct, AS_OF, kind=CLOSE), world.deps(receiver=receiver)).complete is True
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    world.table.meta.client.meta.events.register("before-call.dynamodb", count)

    # When the month-end run bills it
    world.clock.now = AS_OF + timedelta(minutes=5)
    result = process_account(message(acct, AS_OF), world.deps(receiver=receiver))

    # Then: read the state, claim and mark, finish the three lines together; no ComputeStacks request
    assert result.error is None and len(receiver.items) == 3 and not result.read
    assert sum(calls.values()) == 3, calls
    assert calls["TransactWriteItems"] == 1
    assert {line.status for line in world.ledger.lines_of(2)} == {"done"}
