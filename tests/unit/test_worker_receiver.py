"""The billing worker through the module's billing receiver (API.md section 8, issue 9): lines of several
accounts sent together, every unknown outcome sent again with the same ref, currency refusals converted
again with fresh rates, definite refusals counted. Against an in-memory receiver with API.md section 8
semantics and fault knobs, the in-memory ComputeStacks/WHMCS fakes and the moto tables (all in
tests/support/billing.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs import deadline
from cswhmcs.adapters.receiver import (
    ReceiverMissing,
    ReceiverOutOfTime,
    ReceiverSignatureRefused,
)
from cswhmcs.billing.grouping import DONE, PLANNED, SENDING
from cswhmcs.billing.handlers import worker_handler
from cswhmcs.billing.messages import BILL, Account, RunContext, WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.run import run_billing
from cswhmcs.billing.usage import iso
from cswhmcs.billing.worker import process_account, process_accounts
from cswhmcs.errors import RateLimited
from tests.support.billing import AS_OF, OCT, FakeReceiver, SimulatedCrash, World, message, setup, worker_event, world

__all__ = ["world"]  # the fixture

LEASE_PASSED = timedelta(minutes=20)  # more than the sending lease (960 s)


# ---------------------------------------------------------------------- fakes


def use(world: World, receiver: Any, **kw: Any) -> Any:
    return world.deps(receiver=receiver, **kw)


def usage(world: World, uid: int, products: tuple[int, ...] = (1,), total: str = "1.25") -> None:
    for product in products:
        for day in (3, 9):
            world.cs.add_usage(uid, product=product, sp=product, total=total, end=OCT + timedelta(days=day))


def accounts(world: World, n: int, products: tuple[int, ...] = (1,), **kw: Any) -> list[WorkMessage]:
    out = []
    for i in range(n):
        acct = world.add_account(100 + i, 1000 + i, 5000 + i, **kw)
        usage(world, 1000 + i, products)
        out.append(message(acct))
    return out


def lost_once(world: World, n: int, *, lose_after: int = 0,
              lose_before: int = 0) -> tuple[FakeReceiver, list[WorkMessage], list[Any]]:
    """``n`` accounts processed once through a receiver that loses exchanges (``lose_after``: answers,
    ``lose_before``: requests); the receiver, the messages and the results of that first delivery."""
    receiver = setup(world)
    msgs = accounts(world, n)
    receiver.lose_after, receiver.lose_before = lose_after, lose_before
    return receiver, msgs, process_accounts(msgs, use(world, receiver))


def open_lines(world: World, uid: int) -> list[tuple[str, int, str]]:
    return [(ln.status, ln.attempts, ln.via) for ln in world.ledger.load(uid).lines.values()]


def all_done(world: World, msgs: list[WorkMessage], receiver: FakeReceiver) -> None:
    """Every line finished, with the receiver's id for its ref; nothing left open or needing attention."""
    for m in msgs:
        uid = m.account.cs_user_id
        assert world.ledger.load(uid).lines == {}
        for line in world.ledger.lines_of(uid):
            assert line.status == DONE and line.billable_id == receiver.refs[line.ref]
    assert list(world.ledger.attention()) == []
    assert set(receiver.per_ref().values()) <= {1}


# ---------------------------------------------------------------------- batching


def test_lines_of_many_accounts_share_receiver_requests_without_reading_clients(world: World) -> None:
    # Given 12 accounts with 3 products each (36 lines), and a receiver taking 10 items per request
    receiver = setup(world, max_items=10)
    msgs = accounts(world, 12, products=(1, 2, 3))

    # When they are processed as one group
    results = process_accounts(msgs, use(world, receiver))

    # Then ceil(36 / 10) = 4 receiver requests, no GetClientsDetails, no AddBillableItem
    assert [len(b) for b in receiver.batches] == [10, 10, 10, 6]
    assert world.whmcs.calls["GetClientsDetails"] == 0 and world.whmcs.calls["AddBillableItem"] == 0
    assert [r.error for r in results] == [None] * 12
    assert [r.service_id for r in results] == [100 + i for i in range(12)]
    assert sum(o.status == "created" for r in results for o in r.lines) == 36
    all_done(world, msgs, receiver)
    item = receiver.items[0]
    assert item["amount"] == "2.50" and item["currency"] == "USD" and item["unit"] == "quantity"
    assert item["description"].endswith("[ref 1000:2026-10:1]") and item["duedate"] == "2026-11-01"
    assert {ln.via for ln in world.ledger.lines_of(1000)} == {"receiver"}


def test_without_a_receiver_process_accounts_is_the_api_path(world: World) -> None:
    setup(world)
    msgs = accounts(world, 3)
    results = process_accounts(msgs, world.deps())
    assert [r.error for r in results] == [None] * 3
    assert world.whmcs.calls["AddBillableItem"] == 3 and world.whmcs.calls["GetClientsDetails"] == 3
    assert {ln.via for m in msgs for ln in world.ledger.lines_of(m.account.cs_user_id)} == {""}


def test_process_account_with_a_receiver_takes_the_receiver_path(world: World) -> None:
    receiver = setup(world)
    msgs = accounts(world, 1)
    result = process_account(msgs[0], use(world, receiver))
    assert result.error is None and len(receiver.batches) == 1 and world.whmcs.calls["AddBillableItem"] == 0
    all_done(world, msgs, receiver)


# ---------------------------------------------------------------------- lost answers


def test_an_answer_lost_after_the_receiver_committed_is_settled_by_the_next_delivery(world: World) -> None:
    # Given the receiver creating the items, then the answer lost
    receiver, msgs, first = lost_once(world, 2, lose_after=1)

    # Then the accounts are retried, the lines wait planned, not counted, nothing needs an operator
    assert all(r.error and "same ref" in r.error for r in first)
    assert open_lines(world, 1000) == [(PLANNED, 0, "receiver")]
    assert list(world.ledger.attention()) == [] and len(receiver.items) == 2

    # When the message comes again: the same refs answer "existing" with the first ids
    again = process_accounts(msgs, use(world, receiver))
    assert [r.error for r in again] == [None, None]
    assert [(o.status, o.reason, o.billable_id) for o in again[0].lines] == [("created", "existing", 1)]
    assert len(receiver.items) == 2
    all_done(world, msgs, receiver)


def test_a_request_lost_before_it_reached_the_receiver_is_created_by_the_next_delivery(world: World) -> None:
    receiver, msgs, first = lost_once(world, 2, lose_before=1)
    assert all(r.error for r in first) and receiver.items == []
    assert open_lines(world, 1001) == [(PLANNED, 0, "receiver")]

    again = process_accounts(msgs, use(world, receiver))
    assert [o.reason for r in again for o in r.lines] == ["", ""] and len(receiver.items) == 2
    all_done(world, msgs, receiver)


@pytest.mark.parametrize("error", [
    ReceiverOutOfTime("the WHMCS billing receiver"),
    RateLimited("The WHMCS billing receiver is throttling our requests.", upstream="receiver", retry_after=60),
    ReceiverSignatureRefused("The WHMCS billing receiver refused the backend's signature.", http_status=401),
    ReceiverMissing("The WHMCS billing receiver is missing (HTTP 404).", http_status=404),
    RuntimeError("something unexpected"),
])
def test_a_receiver_that_cannot_be_used_now_never_counts_or_reports(world: World, error: Exception) -> None:
    # Given a receiver failing the same way more often than max_send_attempts
    receiver = setup(world)
    msgs = accounts(world, 1)
    for _ in range(6):
        receiver.errors = [error]
        [result] = process_accounts(msgs, use(world, receiver))
        assert result.error is not None
    # Then the line waits planned, attempts not counted, nothing needs attention
    assert open_lines(world, 1000) == [(PLANNED, 0, "receiver")] and list(world.ledger.attention()) == []
    # And once the receiver works it is billed once
    process_accounts(msgs, use(world, receiver))
    all_done(world, msgs, receiver)
    assert len(receiver.items) == 1


def test_no_line_is_marked_sending_without_time_for_a_whole_receiver_attempt(world: World) -> None:
    receiver = setup(world, attempt_seconds=13.0)
    msgs = accounts(world, 1)
    with deadline.use(deadline.Deadline.after(5)):
        [result] = process_accounts(msgs, use(world, receiver))
    assert result.error is not None and "time" in result.error
    assert receiver.batches == [] and open_lines(world, 1000) == [(PLANNED, 0, "")]
    process_accounts(msgs, use(world, receiver))
    all_done(world, msgs, receiver)


def test_accounts_are_not_started_once_the_sends_behind_them_would_not_fit(world: World) -> None:
    # Given a group of 3 accounts whose preparation leaves only 3 whole receiver attempts of time after the first
    receiver = setup(world, attempt_seconds=2.0)
    msgs = accounts(world, 3)
    clock = {"now": 100.0}
    budget = deadline.Deadline(clock["now"] + 7.0, clock=lambda: clock["now"])
    deps = use(world, receiver)
    original = deps.faults

    def slow_preparation(point: str) -> None:  # each account's claim costs 2 s
        if point == "claim.after_save":
            clock["now"] += 2.0
        original(point)

    deps.faults = slow_preparation
    # When they are processed as one group
    with deadline.use(budget):
        results = process_accounts(msgs, deps)

    # Then the first account is sent, the later ones are left untouched (retried), none half-sent
    assert results[0].error is None and [r.error is not None for r in results[1:]] == [True, True]
    assert all("time" in (r.error or "") for r in results[1:])
    assert open_lines(world, 1001) == [] and open_lines(world, 1002) == []
    assert [len(b) for b in receiver.batches] == [1]
    process_accounts(msgs, use(world, receiver))
    all_done(world, msgs, receiver)


# ---------------------------------------------------------------------- crashes


@pytest.mark.parametrize("point", ["claim.before_save", "claim.after_save", "send.after_mark", "send.after_call",
                                   "send.after_finish"])
def test_a_crash_at_any_point_converges_to_one_item_per_ref(world: World, point: str) -> None:
    # Given a worker dying at one point while sending two accounts' lines
    receiver = setup(world)
    msgs = accounts(world, 2, products=(1, 2))
    world.faults = [point]
    with pytest.raises(SimulatedCrash):
        process_accounts(msgs, use(world, receiver))

    # When the message is delivered again after the sending lease (SQS's visibility timeout is longer)
    world.clock.now += LEASE_PASSED
    again = process_accounts(msgs, use(world, receiver))

    # Then every line is billed once, and nothing needs an operator
    assert [r.error for r in again] == [None, None]
    assert sorted(receiver.per_ref()) == ["1000:2026-10:1", "1000:2026-10:2", "1001:2026-10:1", "1001:2026-10:2"]
    all_done(world, msgs, receiver)


def test_a_fresh_sending_line_of_another_worker_is_left_to_it(world: World) -> None:
    receiver = setup(world)
    msgs = accounts(world, 1)
    world.faults = ["send.after_call"]  # created, the worker died before recording it
    with pytest.raises(SimulatedCrash):
        process_accounts(msgs, use(world, receiver))

    [soon] = process_accounts(msgs, use(world, receiver))  # inside the lease: in flight, not sent
    assert [o.status for o in soon.lines] == ["in_flight"] and len(receiver.batches) == 1
    assert open_lines(world, 1000) == [(SENDING, 0, "receiver")]

    world.clock.now += LEASE_PASSED
    [later] = process_accounts(msgs, use(world, receiver))
    assert [(o.status, o.reason) for o in later.lines] == [("created", "existing")]
    all_done(world, msgs, receiver)


def test_a_line_left_sending_by_the_api_path_still_needs_attention(world: World) -> None:
    # Given a line interrupted while AddBillableItem was being sent (before the receiver was configured)
    receiver = setup(world)
    msgs = accounts(world, 1)
    world.faults = ["send.after_mark"]
    with pytest.raises(SimulatedCrash):
        process_account(msgs[0], world.deps())

    # When the receiver path sees it: in flight inside the lease, reported after it, never sent
    [soon] = process_accounts(msgs, use(world, receiver))
    world.clock.now += LEASE_PASSED
    [later] = process_accounts(msgs, use(world, receiver))
    assert [o.status for o in soon.lines] == ["in_flight"]
    assert [o.status for o in later.lines] == ["attention"] and "interrupted" in later.lines[0].reason
    assert receiver.batches == [] and [ln.ref for ln in world.ledger.attention()] == ["1000:2026-10:1"]


def test_the_api_path_never_sends_a_line_that_may_have_reached_the_receiver(world: World) -> None:
    # Given a line whose receiver answer was lost, then WHMCS_RECEIVER_URL unset
    receiver, msgs, _ = lost_once(world, 1, lose_after=1)

    # When the API path processes it
    result = process_account(msgs[0], world.deps())

    # Then it is reported, not sent through AddBillableItem (it exists in WHMCS)
    assert [o.status for o in result.lines] == ["attention"] and "billing receiver" in result.lines[0].reason
    assert world.whmcs.calls["AddBillableItem"] == 0
    # And an operator's --resend sends it (the receiver configured again: "existing", still one item)
    [line] = world.ledger.attention()
    world.ledger.resolve_resend(line.ref)
    process_accounts(msgs, use(world, receiver))
    all_done(world, msgs, receiver)
    assert len(receiver.items) == 1


# ---------------------------------------------------------------------- refusals


def test_a_currency_refusal_is_converted_again_with_fresh_rates_and_billed_once(world: World) -> None:
    # Given a USD user whose WHMCS client pays in EUR, the run's rates older than WHMCS's current ones
    receiver = setup(world)
    acct = world.add_account(10, 2, 3, cs_cur="USD", client_cur="EUR")
    world.cs.add_usage(2, product=1, sp=1, total="100.00", end=OCT + timedelta(days=3))
    run = RunContext(f"bill#{iso(AS_OF)}", BILL, AS_OF, "quantity",
                     currencies=[{"id": 1, "code": "USD", "rate": "1"}, {"id": 2, "code": "EUR", "rate": "0.9"}])

    # When billed through the receiver (the mapping says USD)
    deps = use(world, receiver)
    [result] = process_accounts([WorkMessage(run, acct)], deps)

    # Then the USD item is refused, converted with WHMCS's fresh rates, and billed once in EUR
    assert result.error is None
    assert [(i["amount"], i["currency"]) for i in receiver.items] == [("92.00", "EUR")]
    assert "converted from 100.00 USD at 1 USD = 0.92 EUR [ref 2:2026-10:1]" in receiver.items[0]["description"]
    assert [len(b) for b in receiver.batches] == [1, 1]
    assert world.whmcs.calls["GetCurrencies"] == 1 and world.whmcs.calls["GetClientsDetails"] == 0
    [line] = world.ledger.lines_of(2)
    assert (line.amount, line.currency, line.rate, line.source_total) == (
        Decimal("92.00"), "EUR", Decimal("0.92"), Decimal("100.00"))

    # And the process now knows the client's currency: its next line goes in EUR at once (the run's rates)
    world.cs.add_usage(2, product=1, sp=1, total="10.00", end=datetime(2026, 11, 3, tzinfo=UTC))
    nov = RunContext("bill#nov", BILL, datetime(2026, 11, 30, 23, tzinfo=UTC), "quantity", currencies=run.currencies)
    world.clock.now = nov.as_of + timedelta(minutes=5)
    process_accounts([WorkMessage(nov, acct)], deps)
    assert receiver.items[1]["amount"] == "9.00" and len(receiver.batches) == 3


def test_a_line_converted_into_the_wrong_currency_is_converted_again_from_the_source(world: World) -> None:
    # Given a EUR user whose mapping says GBP while the WHMCS client pays in USD
    receiver = setup(world)
    world.cs.add_user(2, "EUR")
    world.whmcs.add_client(3, "USD")
    acct = Account(10, 2, 3, "u2@example.com", "GBP")
    world.cs.add_usage(2, product=1, sp=1, total="92.00", end=OCT + timedelta(days=3))

    [result] = process_accounts([message(acct)], use(world, receiver))

    # Then the GBP item is refused and the USD one says only its own conversion, from the EUR amount
    assert result.error is None and [len(b) for b in receiver.batches] == [1, 1]
    [item] = receiver.items
    assert (item["amount"], item["currency"]) == ("100.00", "USD")
    assert item["description"].count("converted from") == 1
    assert "; converted from 92.00 EUR at 1 EUR = 1.086957 USD [ref 2:2026-10:1]" in item["description"]


def test_currency_refusals_are_converted_again_at_most_twice_then_counted(world: World) -> None:
    receiver = setup(world)
    acct = world.add_account(10, 2, 3, cs_cur="USD", client_cur="EUR")
    world.cs.add_usage(2, product=1, sp=1, total="10.00", end=OCT + timedelta(days=3))
    receiver.hint = "GBP"  # never the currency it accepts
    [result] = process_accounts([message(acct)], use(world, receiver))
    assert [len(b) for b in receiver.batches] == [1, 1, 1] and receiver.items == []
    assert [o.status for o in result.lines] == ["failed"] and result.error
    assert open_lines(world, 2) == [(PLANNED, 1, "receiver")]
    assert world.whmcs.calls["GetCurrencies"] <= 2  # the run's table once, fresh rates once per call


def test_a_line_under_a_cent_in_the_client_s_currency_is_carried_over(world: World) -> None:
    receiver = setup(world)
    acct = world.add_account(10, 2, 3, cs_cur="USD", client_cur="GBP")
    world.cs.add_usage(2, product=1, sp=1, total="0.012", end=OCT + timedelta(days=3))
    [result] = process_accounts([message(acct)], use(world, receiver))
    assert result.error is None and receiver.items == []
    assert result.carried == [("Product 1", Decimal("0.012") * Decimal("0.79"), "GBP")]
    state = world.ledger.load(2)
    assert state.lines == {} and state.pending_total() == Decimal("0.012")

    # And it is billed with the next period's line, in GBP
    world.cs.add_usage(2, product=1, sp=1, total="1.000", end=datetime(2026, 11, 3, tzinfo=UTC))
    world.clock.now = datetime(2026, 11, 30, 23, 5, tzinfo=UTC)
    process_accounts([message(acct, datetime(2026, 11, 30, 23, tzinfo=UTC))], use(world, receiver))
    assert [(i["amount"], i["currency"]) for i in receiver.items] == [("0.80", "GBP")]


def test_definite_refusals_are_counted_and_then_need_attention(world: World) -> None:
    receiver = setup(world)
    msgs = accounts(world, 2)
    receiver.refuse["1000:2026-10:1"] = 99
    for _ in range(5):
        first, second = process_accounts(msgs, use(world, receiver))
        assert first.error and "refused" in first.error and second.error is None
    assert open_lines(world, 1000) == [(PLANNED, 5, "receiver")]
    [again, _] = process_accounts(msgs, use(world, receiver))
    assert [o.status for o in again.lines] == ["attention"]
    [line] = world.ledger.attention()
    assert "refused it 5 times" in line.reason and "Invalid description" in line.reason
    assert sorted(receiver.per_ref()) == ["1001:2026-10:1"]


def test_a_refused_line_is_sent_again_and_billed_once(world: World) -> None:
    receiver = setup(world)
    msgs = accounts(world, 1)
    receiver.refuse["1000:2026-10:1"] = 1
    [first] = process_accounts(msgs, use(world, receiver))
    assert [o.status for o in first.lines] == ["failed"] and open_lines(world, 1000) == [(PLANNED, 1, "receiver")]
    process_accounts(msgs, use(world, receiver))
    all_done(world, msgs, receiver)


def test_a_body_refused_as_a_whole_counts_only_against_the_item_it_is_about(world: World) -> None:
    receiver = setup(world)
    msgs = accounts(world, 4)
    receiver.bad = {"1002:2026-10:1"}
    results = process_accounts(msgs, use(world, receiver))
    assert [r.error is None for r in results] == [True, True, False, True]
    assert sorted(receiver.per_ref()) == ["1000:2026-10:1", "1001:2026-10:1", "1003:2026-10:1"]
    assert open_lines(world, 1002) == [(PLANNED, 1, "receiver")]
    assert "bad item" in world.ledger.load(1002).lines["2026-10#p1"].last_error


# ---------------------------------------------------------------------- concurrency


def test_two_workers_on_the_same_accounts_at_once_bill_each_line_once(world: World) -> None:
    receiver = setup(world, delay=0.02)
    msgs = accounts(world, 6, products=(1, 2))
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _i: process_accounts(msgs, use(world, receiver)), range(2)))
    assert all(r.error is None for results in runs for r in results)
    world.clock.now += LEASE_PASSED
    process_accounts(msgs, use(world, receiver))  # anything left in flight is settled
    assert len(receiver.items) == 12
    all_done(world, msgs, receiver)


# ---------------------------------------------------------------------- wiring


def test_the_lambda_handler_processes_the_batch_as_one_group(world: World) -> None:
    receiver = setup(world)
    ok = world.add_account(10, 2, 3)
    bad = world.add_account(11, 4, 5, cs_cur="CHF")
    also = world.add_account(12, 6, 7)
    for uid in (2, 4, 6):
        usage(world, uid)
    event = worker_event({"m-ok": message(ok).to_json(), "m-junk": "{not json", "m-bad": message(bad).to_json(),
                          "m-also": message(also).to_json()})

    answer = worker_handler(event, None, {}, deps=use(world, receiver))

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-junk"}, {"itemIdentifier": "m-bad"}]}
    # (the CHF line went too: refused for its currency, which WHMCS cannot convert: counted)
    assert receiver.batches == [["2:2026-10:1", "4:2026-10:1", "6:2026-10:1"]]
    assert open_lines(world, 4) == [(PLANNED, 1, "receiver")]
    assert "CHF" in world.ledger.load(4).lines["2026-10#p1"].last_error


def test_an_in_process_run_groups_accounts_and_counts_receiver_requests(world: World) -> None:
    receiver = setup(world)
    for i in range(7):
        world.add_account(100 + i, 1000 + i, 5000 + i)
        usage(world, 1000 + i)
    options = BillingOptions(concurrency=2, batch_accounts=3)

    summary = run_billing(as_of=AS_OF, ledger=world.ledger, accounts=world.accounts,
                          deps=use(world, receiver), options=options)

    assert summary.items == 7 and summary.exit_code == 0
    assert sorted(len(b) for b in receiver.batches) == [1, 3, 3]
    assert summary.receiver_requests == 3
    assert summary.whmcs_requests == 3 + world.whmcs.request_count and world.whmcs.calls["GetClientsDetails"] == 0
    assert "WHMCS requests (3 through the billing receiver)" in summary.render()


def test_an_in_process_run_without_receiver_says_nothing_about_it(world: World) -> None:
    setup(world)
    world.add_account(10, 2, 3)
    usage(world, 2)
    summary = run_billing(as_of=AS_OF, ledger=world.ledger, accounts=world.accounts, deps=world.deps())
    assert summary.items == 1 and summary.receiver_requests == 0
    assert "billing receiver" not in summary.render()
