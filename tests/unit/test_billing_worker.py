"""The worker, ledger, planner and Lambda handlers against in-memory ComputeStacks/WHMCS fakes and moto
(DynamoDB tables built from template.yaml's own definitions; SQS)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import httpx
import pytest
from moto import mock_aws

from cswhmcs.adapters.whmcs import WhmcsClient
from cswhmcs.billing.grouping import ATTENTION, DONE
from cswhmcs.billing.handlers import worker_handler
from cswhmcs.billing.messages import BILL, COLLECT, RunContext, WorkMessage
from cswhmcs.billing.planner import SqsSink, Trigger, parse_trigger, plan_run
from cswhmcs.billing.usage import parse_time
from cswhmcs.billing.worker import process_account
from cswhmcs.errors import Conflict, InvalidInput
from tests.support.billing import (
    AS_OF,
    OCT,
    ROOT,
    ListSink,
    SimulatedCrash,
    World,
    message,
    month_of_usage,
    worker_event,
    world,
)

__all__ = ["world"]  # the fixture (tests/support/billing.py), used by name

# ---------------------------------------------------------------------- the happy path


def test_month_end_bills_one_line_per_product_exactly_once(world: World) -> None:
    # Given an account with two products over October
    acct = world.add_account(10, 2, 3)
    exact1 = month_of_usage(world.cs, 2, product=1, sp=11)
    exact2 = month_of_usage(world.cs, 2, product=2, sp=12, total="0.00685")

    # When the month-end message is processed
    result = process_account(message(acct), world.deps())

    # Then one item per product, amount = exact sum rounded once, quantity = sum of qty
    assert result.error is None
    assert [i["amount"] for i in world.whmcs.items] == [exact1.quantize(Decimal("0.01")),
                                                        exact2.quantize(Decimal("0.01"))]
    item = world.whmcs.items[0]
    assert item["quantity"] == Decimal(247) and item["unit_mode"] == "quantity"
    assert item["invoice_action"] == "duedate" and str(item["due_date"]) == "2026-11-01"
    assert "Product 1" in item["description"] and "u2@example.com (#2)" in item["description"]
    assert "2026-10" in item["description"] and "[ref 2:2026-10:1]" in item["description"]
    lines = world.ledger.lines_of(2)
    assert {ln.status for ln in lines} == {DONE} and {ln.billable_id for ln in lines} == {1, 2}
    assert world.ledger.load(2).lines == {} and world.ledger.load(2).buckets == {}


def test_second_run_creates_nothing_and_does_not_read_again(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    process_account(message(acct), world.deps())
    reads = world.cs.request_count

    # When the same message is delivered again
    result = process_account(message(acct), world.deps())

    # Then nothing new: no item, no ComputeStacks request
    assert result.lines == [] and len(world.whmcs.items) == 1
    assert world.cs.request_count == reads


def test_next_month_bills_only_new_rows(world: World) -> None:
    # Given October billed
    acct = world.add_account(10, 2, 3)
    octo = month_of_usage(world.cs, 2, total="1")
    process_account(message(acct), world.deps())

    # When November's usage is billed at November's month-end
    nov = month_of_usage(world.cs, 2, total="2", start=datetime(2026, 11, 1, tzinfo=UTC), days=30)
    process_account(message(acct, datetime(2026, 11, 30, 23, tzinfo=UTC)), world.deps())

    # Then the November item has only November's rows
    assert [i["amount"] for i in world.whmcs.items] == [octo, nov]
    assert [ln.period for ln in world.ledger.lines_of(2)] == ["2026-10", "2026-11"]


def test_hours_for_whmcs_before_8_2(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    process_account(message(acct, unit="hours"), world.deps())
    assert world.whmcs.items[0]["unit_mode"] == "hours"


def test_sub_cent_line_carries_over(world: World) -> None:
    # Given a product worth 0.004 this month
    acct = world.add_account(10, 2, 3)
    world.cs.add_usage(2, product=1, sp=1, total="0.004", end=OCT + timedelta(days=3))

    # When billed
    result = process_account(message(acct), world.deps())

    # Then nothing is sent; the amount waits
    assert world.whmcs.items == [] and result.carried == [("Product 1", Decimal("0.004"), "USD")]
    assert world.ledger.load(2).pending_total() == Decimal("0.004")

    # And next month it is billed with the new usage
    world.cs.add_usage(2, product=1, sp=1, total="0.007", end=datetime(2026, 11, 5, tzinfo=UTC))
    process_account(message(acct, datetime(2026, 11, 30, 23, tzinfo=UTC)), world.deps())
    assert world.whmcs.items[0]["amount"] == Decimal("0.01")


def test_usage_after_a_mid_month_run_is_held_for_the_next_period_and_shown(world: World) -> None:
    from cswhmcs.billing.cli import _summary_json

    # Given an operator's run in the middle of October (as-of = now) that billed October's line
    acct = world.add_account(10, 2, 3, cs_cur="EUR", client_cur="EUR")
    world.cs.add_usage(2, product=1, sp=1, total="5", end=OCT + timedelta(days=10))
    mid = world.run(OCT + timedelta(days=15))
    assert mid.items == 1 and [i["amount"] for i in world.whmcs.items] == [Decimal("5.00")]
    assert mid.held == 0 and "held for the next period" not in mid.render()

    # And a row of the same product that ends later in October, before the month-end's as-of
    world.cs.add_usage(2, product=1, sp=1, total="0.15", end=OCT + timedelta(days=20))

    # When the real month-end runs
    month_end = world.run(keep_lines=False)

    # Then nothing is billed (one item per service, product and period) but the row is shown as held
    assert month_end.items == 0 and len(world.whmcs.items) == 1 and month_end.rows_absorbed == 1
    assert (month_end.held, month_end.held_amounts) == (1, {"EUR": Decimal("0.15")})
    assert ("held for the next period (a line for this period was already billed): 1 lines (0.15 EUR)"
            in month_end.render())
    assert _summary_json(month_end)["held_for_next_period"] == {"lines": 1, "amounts": {"EUR": "0.15"}}
    assert world.ledger.load(2).pending_total() == Decimal("0.15")

    # And the worker reports it per product, like carried amounts, also when the message comes again
    again = process_account(message(acct), world.deps())
    assert again.held == [("Product 1", Decimal("0.15"), "EUR")] and again.lines == []

    # When November's month-end runs
    nov = world.run(datetime(2026, 11, 30, 23, tzinfo=UTC))

    # Then November's line bills it, and nothing is held any more
    assert nov.items == 1 and [i["amount"] for i in world.whmcs.items] == [Decimal("5.00"), Decimal("0.15")]
    assert nov.held == 0 and "held for the next period" not in nov.render()
    assert _summary_json(nov)["held_for_next_period"] == {"lines": 0, "amounts": {}}
    assert world.ledger.load(2).pending_total() == 0


def test_currency_is_converted_and_stated(world: World) -> None:
    # Given a EUR ComputeStacks user whose WHMCS client pays in GBP
    acct = world.add_account(10, 2, 3, cs_cur="EUR", client_cur="GBP")
    world.cs.add_usage(2, product=1, sp=1, total="92.00", end=OCT + timedelta(days=3))

    # When billed
    process_account(message(acct), world.deps())

    # Then the amount is in GBP (92 EUR = 100 USD = 79 GBP) and the description says so
    item = world.whmcs.items[0]
    assert item["amount"] == Decimal("79.00")
    assert "converted from 92.00 EUR at 1 EUR = 0.858696 GBP" in item["description"]
    [line] = world.ledger.lines_of(2)
    assert (line.source_total, line.source_currency, line.currency) == (Decimal("92.00"), "EUR", "GBP")


def test_billing_start_excludes_older_usage(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    world.cs.add_usage(2, product=1, sp=1, total="5", end=OCT + timedelta(days=3))
    world.cs.add_usage(2, product=1, sp=1, total="7", end=OCT + timedelta(days=20))
    process_account(message(acct), world.deps(billing_start=OCT + timedelta(days=10)))
    assert [i["amount"] for i in world.whmcs.items] == [Decimal("7.00")]


# ---------------------------------------------------------------------- failures


def test_whmcs_5xx_is_retried_by_the_next_delivery(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.whmcs.script = ["5xx"]

    first = process_account(message(acct), world.deps())
    assert first.error and world.whmcs.items == []
    assert [ln.status for ln in world.ledger.load(2).lines.values()] == ["planned"]

    second = process_account(message(acct), world.deps())
    assert second.error is None and len(world.whmcs.items) == 1
    assert world.ledger.load(2).lines == {}


def test_refused_too_often_needs_attention_without_being_sent(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.whmcs.script = ["5xx"] * 5
    for _ in range(6):
        process_account(message(acct), world.deps())
    [line] = list(world.ledger.attention())
    assert line.attempts == 5 and "refused it 5 times" in line.reason and world.whmcs.items == []


def test_timeout_after_commit_needs_attention_and_is_never_resent(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.whmcs.script = ["tac"]

    result = process_account(message(acct), world.deps())
    again = process_account(message(acct), world.deps())

    assert [o.status for o in result.lines] == ["attention"] and again.lines == []
    assert len(world.whmcs.items) == 1  # created once, never again
    [line] = list(world.ledger.attention())
    assert line.status == ATTENTION and "[ref 2:2026-10:1]" in line.reason

    # When the operator finds it in WHMCS and records it
    world.ledger.resolve_billed(line.ref, 1)

    # Then it is done, no longer listed
    assert list(world.ledger.attention()) == []
    assert world.ledger.get_line(2, "2026-10", 1).billable_id == 1
    with pytest.raises(Conflict):
        world.ledger.resolve_billed(line.ref, 1)


def test_operator_resend_sends_it_once_more(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.whmcs.script = ["timeout"]  # sent, not created
    process_account(message(acct), world.deps())
    [line] = list(world.ledger.attention())

    world.ledger.resolve_resend(line.ref)
    process_account(message(acct, kind=COLLECT), world.deps())

    assert len(world.whmcs.items) == 1
    assert world.ledger.get_line(2, "2026-10", 1).status == DONE
    assert list(world.ledger.attention()) == []


def test_connect_failure_is_a_definite_failure(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.whmcs.script = ["unreachable"]
    assert process_account(message(acct), world.deps()).error
    assert process_account(message(acct), world.deps()).error is None
    assert len(world.whmcs.items) == 1


@pytest.mark.parametrize("point", ["claim.before_save", "send.after_finish"])
def test_crash_outside_the_send_window_loses_and_doubles_nothing(world: World, point: str) -> None:
    acct = world.add_account(10, 2, 3)
    exact = month_of_usage(world.cs, 2)
    world.faults = [point]
    with pytest.raises(SimulatedCrash):
        process_account(message(acct), world.deps())

    process_account(message(acct), world.deps())

    assert [i["amount"] for i in world.whmcs.items] == [exact.quantize(Decimal("0.01"))]
    assert list(world.ledger.attention()) == []


# The claim's write marks the first line "sending" (one write fewer): a crash after it is a crash after the mark.
@pytest.mark.parametrize(("point", "created"),
                         [("claim.after_save", 0), ("send.after_mark", 0), ("send.after_call", 1)])
def test_crash_while_sending_is_reported_after_the_lease_never_resent(world: World, point: str, created: int) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.faults = [point]
    with pytest.raises(SimulatedCrash):
        process_account(message(acct), world.deps())

    # A redelivery inside the lease sees it in flight; after the lease it is reported
    soon = process_account(message(acct), world.deps())
    world.clock.now += timedelta(minutes=20)
    later = process_account(message(acct), world.deps())

    assert [o.status for o in soon.lines] == ["in_flight"]
    assert [o.status for o in later.lines] == ["attention"]
    assert len(world.whmcs.items) == created
    assert [ln.ref for ln in world.ledger.attention()] == ["2:2026-10:1"]


def _count_dynamodb_calls(world: World) -> list[str]:
    calls: list[str] = []
    world.table.meta.client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    return calls


def test_the_claim_and_each_answer_are_recorded_in_the_write_that_marks_the_next_line(world: World) -> None:
    # Given an account with three products to bill through AddBillableItem
    acct = world.add_account(10, 2, 3)
    for product in (1, 2, 3):
        month_of_usage(world.cs, 2, product=product, sp=10 + product)
    calls = _count_dynamodb_calls(world)

    result = process_account(message(acct), world.deps())

    # Then one read, the claim (which marks the first line), and one write per answer (which marks the next)
    assert [o.status for o in result.lines] == ["created"] * 3 and len(world.whmcs.items) == 3
    assert calls == ["GetItem", "PutItem", "TransactWriteItems", "TransactWriteItems", "TransactWriteItems"]


def test_a_crash_after_an_answer_leaves_the_next_line_in_flight_never_resent(world: World) -> None:
    # Given two lines, and the worker dying right after recording the first answer (the same write marked
    # the second line "sending": a crash here is the crash after the second line's mark)
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2, product=1, sp=11)
    month_of_usage(world.cs, 2, product=2, sp=12)
    world.faults = ["send.after_finish"]
    with pytest.raises(SimulatedCrash):
        process_account(message(acct), world.deps())

    soon = process_account(message(acct), world.deps())
    world.clock.now += timedelta(minutes=20)
    later = process_account(message(acct), world.deps())

    # Then the first is billed once, the second is never sent blind but reported after the lease
    assert len(world.whmcs.items) == 1
    assert [o.status for o in soon.lines] == ["in_flight"]
    assert [o.status for o in later.lines] == ["attention"]
    assert [ln.ref for ln in world.ledger.attention()] == ["2:2026-10:2"]


def test_cs_failure_leaves_everything_for_the_retry(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    exact = month_of_usage(world.cs, 2)
    world.cs.fail = 1
    assert process_account(message(acct), world.deps()).error
    assert world.ledger.load(2).version == 0
    process_account(message(acct), world.deps())
    assert world.whmcs.items[0]["amount"] == exact.quantize(Decimal("0.01"))


def test_a_deleted_user_still_gets_what_was_collected_billed(world: World) -> None:
    # Given usage collected during the month, then the ComputeStacks user deleted
    acct = world.add_account(10, 2, 3, cs_cur="EUR", client_cur="EUR")
    world.cs.add_usage(2, product=1, sp=1, total="4.20", end=OCT + timedelta(days=3))
    process_account(message(acct, OCT + timedelta(days=4), kind=COLLECT), world.deps())
    del world.cs.users[2]

    # When the month-end runs
    result = process_account(message(acct), world.deps())

    # Then it is not a failure, and the collected usage is billed in the known currency
    assert result.error is None and result.missing
    assert [(i["amount"], i["client_id"]) for i in world.whmcs.items] == [(Decimal("4.20"), 3)]


def test_unknown_currency_fails_the_account_and_keeps_the_rows(world: World) -> None:
    acct = world.add_account(10, 2, 3, cs_cur="CHF")
    world.cs.add_usage(2, product=1, sp=1, total="5", end=OCT + timedelta(days=3))
    result = process_account(message(acct), world.deps())
    assert result.error and "CHF" in result.error and world.whmcs.items == []


# ---------------------------------------------------------------------- preview, runner, planner, handlers


def test_preview_writes_nothing(world: World) -> None:
    world.add_account(10, 2, 3)
    world.add_account(11, 4, 5, cs_cur="EUR", client_cur="EUR")
    month_of_usage(world.cs, 2)
    month_of_usage(world.cs, 4, total="1")

    summary = world.run(dry_run=True)

    assert world.table.scan()["Items"] == [] and world.whmcs.items == []
    assert summary.totals() == {"EUR": Decimal("247.00"), "USD": Decimal("5.08")}
    assert "PREVIEW" in summary.render() and summary.exit_code == 0


def test_run_summary_counts_per_currency_and_exit_code(world: World) -> None:
    world.add_account(10, 2, 3)
    world.add_account(11, 4, 5, cs_cur="EUR", client_cur="EUR")
    month_of_usage(world.cs, 2)
    month_of_usage(world.cs, 4, total="1")
    world.whmcs.script = ["ok", "tac"]

    summary = world.run()

    assert summary.accounts == 2 and len(summary.created) == 1 and len(summary.attention) == 1
    assert summary.open_attention == 1 and summary.exit_code == 3
    text = summary.render()
    assert "needing attention: 1 from this run, 1 open in the ledger" in text


def test_planner_reads_once_and_duplicate_triggers_are_one_run(world: World) -> None:
    world.add_account(10, 2, 3)
    world.add_account(11, 4, 5)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="work")["QueueUrl"]
        trigger = parse_trigger({"mode": "bill", "scheduled_time": "2026-10-31T23:00:00Z", "execution_id": "x"})

        first = plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs,
                         sink=SqsSink(sqs, url), segments=2)
        calls = world.whmcs.request_count
        second = plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs,
                          sink=SqsSink(sqs, url))

        bodies = []
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                break
            bodies += [WorkMessage.from_json(m["Body"]) for m in got]
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]}
                                                            for m in got])
    assert first.accounts == 2 and second.skipped == "done" and world.whmcs.request_count == calls == 2
    assert sorted(b.account.service_id for b in bodies) == [10, 11]
    assert {b.run.unit_mode for b in bodies} == {"quantity"} and {b.run.period for b in bodies} == {"2026-10"}
    assert {c["code"] for c in bodies[0].run.currencies} == {"USD", "EUR", "GBP"}


def test_collection_right_after_month_end_is_skipped(world: World) -> None:
    world.add_account(10, 2, 3)
    world.ledger.begin_run("bill#2026-10-31T23:00:00Z", kind=BILL, as_of=AS_OF, lease=timedelta(minutes=1))

    class Sink:
        def send(self, messages: list[WorkMessage]) -> None:
            raise AssertionError("nothing should be planned")

        def flush(self) -> None:
            pass

    result = plan_run(Trigger(COLLECT, AS_OF + timedelta(hours=1, minutes=30)), ledger=world.ledger,
                      accounts=world.accounts, whmcs=world.whmcs, sink=Sink())
    assert result.skipped == "after-bill"


def test_trigger_validation() -> None:
    with pytest.raises(InvalidInput):
        parse_trigger({"mode": "bill"})
    with pytest.raises(InvalidInput):
        parse_trigger({"mode": "other", "scheduled_time": "2026-10-31T23:00:00Z"})
    t = parse_trigger(json.loads((ROOT / "events/billing_planner.json").read_text()))
    assert (t.kind, t.as_of, t.run_id) == (BILL, AS_OF, "bill#2026-10-31T23:00:00Z")


def test_worker_handler_reports_only_failed_records(world: World) -> None:
    ok = world.add_account(10, 2, 3)
    bad = world.add_account(11, 4, 5, cs_cur="CHF")
    month_of_usage(world.cs, 2)
    month_of_usage(world.cs, 4)
    event = worker_event({"m-ok": message(ok).to_json(), "m-bad": message(bad).to_json()})

    answer = worker_handler(event, None, {}, deps=world.deps())

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    assert len(world.whmcs.items) == 1


def test_sample_worker_event_is_a_valid_message() -> None:
    event = json.loads((ROOT / "events/billing_worker.json").read_text())
    msg = WorkMessage.from_json(event["Records"][0]["body"])
    assert msg.run.kind == BILL and msg.account.service_id == 10 and msg.run.period == "2026-10"


# ---------------------------------------------------------------------- found in review


class RealClientWhmcs:
    """The fake WHMCS for reads, the real WhmcsClient (over a scripted transport) for AddBillableItem:
    WHMCS applies each AddBillableItem, then answers with ``answer`` (status, body)."""

    def __init__(self, fake: Any, answers: list[tuple[int, str]]) -> None:
        self.fake = fake
        self.answers = answers
        self.created = 0

        def handler(request: httpx.Request) -> httpx.Response:
            self.created += 1
            default = (200, f'{{"result":"success","billableid":{self.created}}}')
            status, body = self.answers.pop(0) if self.answers else default
            return httpx.Response(status, content=body.encode())

        self.client = WhmcsClient("https://whmcs.example/includes/api.php", "ident", "secret0",
                                  transport=httpx.MockTransport(handler), sleep=lambda _s: None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def add_billable_item(self, **kw: Any) -> int:
        return self.client.add_billable_item(**kw)


PHP_NOTICE = ('<br />\n<b>Deprecated</b>: something in /var/www/whmcs/x.php on line 3<br />\n'
              '{"result":"success","billableid":1}')


@pytest.mark.parametrize(("status", "body"), [
    (200, PHP_NOTICE),  # PHP printed a notice before the JSON: WHMCS did run the action
    (200, '{"billableid": 1}'),  # an answer without a result
    (504, "<html>Gateway Time-out</html>"),  # the proxy gave up waiting for PHP, which went on
    (502, "<html>Bad Gateway</html>"),  # PHP died (after or before the insert: unknown)
])
def test_an_answer_that_does_not_say_what_happened_is_never_resent(world: World, status: int, body: str) -> None:
    # Given WHMCS creates the item but answers with something that does not say so
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    wh = RealClientWhmcs(world.whmcs, [(status, body)])
    deps = world.deps()
    deps.whmcs = wh

    # When the account is processed, and the message delivered again later
    first = process(acct, deps)
    world.clock.now += timedelta(minutes=30)
    again = process(acct, deps)

    # Then the line needs attention and WHMCS got it exactly once
    assert wh.created == 1, "an ambiguous AddBillableItem was sent again"
    assert [o.status for o in first.lines] == ["attention"] and again.lines == []
    assert [ln.ref for ln in world.ledger.attention()] == ["2:2026-10:1"]


def test_a_definite_refusal_is_still_sent_again(world: World) -> None:
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    wh = RealClientWhmcs(world.whmcs, [(200, '{"result":"error","message":"Client ID not Found"}'),
                                       (500, "<html>Internal Server Error</html>")])
    deps = world.deps()
    deps.whmcs = wh
    assert process(acct, deps).error
    assert process(acct, deps).error
    assert process(acct, deps).error is None
    assert wh.created == 3 and [ln.status for ln in world.ledger.lines_of(2)] == [DONE]


def process(acct: Any, deps: Any) -> Any:
    return process_account(message(acct), deps)


def test_resend_after_too_many_refusals_really_sends(world: World) -> None:
    # Given a line WHMCS refused 5 times (now needing attention, known not created)
    acct = world.add_account(10, 2, 3)
    month_of_usage(world.cs, 2)
    world.whmcs.script = ["5xx"] * 5
    for _ in range(6):
        process(acct, world.deps())
    [line] = list(world.ledger.attention())
    assert world.whmcs.items == []

    # When the operator fixed the cause and asks for a re-send
    world.ledger.resolve_resend(line.ref)
    result = process(acct, world.deps())

    # Then the next run sends it (once), and it is done
    assert result.error is None and len(world.whmcs.items) == 1
    assert world.ledger.get_line(2, "2026-10", 1).status == DONE
    assert list(world.ledger.attention()) == []


class BrokenSink(ListSink):
    def __init__(self, fail_after: int | None) -> None:
        super().__init__()
        self.fail_after = fail_after

    def send(self, messages: list[WorkMessage]) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise RuntimeError("SQS is throttling")
        super().send(messages)


def test_a_planner_that_failed_is_resumed_by_the_retry(world: World) -> None:
    # Given two accounts and a planner that fails after sending the first message
    world.add_account(10, 2, 3)
    world.add_account(11, 4, 5)
    trigger = Trigger(BILL, AS_OF)
    with pytest.raises(RuntimeError):
        plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs,
                 sink=BrokenSink(fail_after=1), segments=1, page_size=1)

    # When Lambda retries the invocation a minute later (well inside the planner's lease)
    world.clock.now += timedelta(minutes=1)
    sink = BrokenSink(fail_after=None)
    result = plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs, sink=sink,
                      segments=1, page_size=1)

    # Then the retry resumes the run and every account gets its message
    assert result.skipped == "" and result.accounts == 2
    assert sorted(m.account.service_id for m in sink.sent) == [10, 11]


@pytest.mark.parametrize(("scheduled", "tz"), [
    ("2026-11-01T03:00:00Z", "America/New_York"),  # 23:00 EDT on 31 October
    ("2026-12-01T04:00:00Z", "America/New_York"),  # 23:00 EST on 30 November (after the DST change)
    ("2026-10-31T22:00:00Z", "Europe/Berlin"),
    ("2026-11-01T09:00:00Z", "Pacific/Honolulu"),
])
def test_a_month_end_scheduled_in_a_time_zone_bills_that_zone_s_month(world: World, scheduled: str, tz: str) -> None:

    # Given the month-end schedule in a time zone (its scheduled_time is in UTC: the next UTC day west of UTC)
    local = parse_time(scheduled).astimezone(ZoneInfo(tz))
    assert (local.hour, (local + timedelta(days=1)).day) == (23, 1)
    acct = world.add_account(10, 2, 3)
    world.cs.add_usage(2, product=1, sp=1, total="5", end=parse_time(scheduled) - timedelta(days=2))
    trigger = parse_trigger({"mode": "bill", "scheduled_time": scheduled, "timezone": tz})
    sink = ListSink()
    plan_run(trigger, ledger=world.ledger, accounts=world.accounts, whmcs=world.whmcs, sink=sink, segments=1)
    [msg] = sink.sent

    # When the worker bills it
    world.clock.now = parse_time(scheduled) + timedelta(minutes=5)
    process_account(msg, world.deps())

    # Then the line is for the local month that just ended, due in the month after it
    period = f"{local.year:04d}-{local.month:02d}"
    assert msg.run.period == period
    [line] = world.ledger.lines_of(2)
    assert line.period == period and f"(period {period})" in line.description
    nxt = datetime(local.year + local.month // 12, local.month % 12 + 1, 1).date()
    assert world.whmcs.items[0]["due_date"] == nxt
    assert acct.cs_user_id == 2


def test_a_trigger_without_or_with_an_unknown_time_zone_keeps_utc() -> None:
    from cswhmcs.billing.planner import parse_trigger

    for extra in ({}, {"timezone": "UTC"}, {"timezone": "Not/AZone"}):
        t = parse_trigger({"mode": "bill", "scheduled_time": "2026-11-01T00:00:01Z", **extra})
        assert RunContext(t.run_id, t.kind, t.as_of, timezone=t.timezone).period == "2026-11"


def test_a_run_read_before_its_as_of_still_finds_rows_committed_late(world: World) -> None:
    # Given an operator running October's billing at 20:00, three hours before its as-of
    acct = world.add_account(10, 2, 3)
    world.clock.now = AS_OF - timedelta(hours=3)
    world.cs.add_usage(2, product=1, sp=1, total="1.00", end=AS_OF - timedelta(hours=3, minutes=5))
    process_account(message(acct), world.deps())

    # And ComputeStacks then commits a row of another subscription, created ten minutes before that read
    late = world.cs.add_usage(2, product=1, sp=2, total="2.00", end=AS_OF - timedelta(hours=3, minutes=10))
    assert parse_time(late["created_at"]) < world.clock.now

    # When the following runs happen
    world.clock.now = datetime(2026, 11, 30, 23, 5, tzinfo=UTC)
    process_account(message(acct, datetime(2026, 11, 30, 23, tzinfo=UTC)), world.deps())

    # Then that row is billed (in the next period), not lost below the scan floor
    assert sorted(i["amount"] for i in world.whmcs.items) == [Decimal("1.00"), Decimal("2.00")]
