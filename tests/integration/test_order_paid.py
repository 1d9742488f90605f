"""OrderPaid: deposit -> WHMCS credit, exactly once (issue 3)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import LiveStack
from tests.support.live import seed_order

pytestmark = pytest.mark.integration


def credits_for(stack: LiveStack, client_id: int) -> list[dict[str, Any]]:
    return [c for c in stack.whmcs.credits if int(c.get("clientid", c.get("client_id", 0))) == client_id]


def deliver_at_once(stack: LiveStack, body: dict[str, Any], times: int, latency: float) -> list[Any]:
    """``times`` deliveries of the same OrderPaid hook at once, WHMCS answering after ``latency`` s so that
    they overlap; the answers, in the order they came."""
    stack.whmcs.latency = latency
    results: list[Any] = []

    def deliver() -> None:
        results.append(stack.call("/v1/hooks/order-paid", body))

    threads = [threading.Thread(target=deliver) for _ in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stack.whmcs.latency = 0
    return results


def test_a_paid_deposit_is_credited_once_in_the_clients_currency(live_stack: LiveStack) -> None:
    # Given a paid EUR order with two ComputeStacks lines
    o = seed_order(live_stack, currency="EUR", amounts=("25.00", "10.50"))
    # When the hook is delivered twice
    first = live_stack.call("/v1/hooks/order-paid", o["body"])
    second = live_stack.call("/v1/hooks/order-paid", o["body"])
    # Then one credit of 35.50, described with the order, and both answers agree
    assert first.status_code == 200, first.text
    assert first.json() == second.json() == {"result": "success", "credited": "35.50", "currency": "EUR"}
    credits = credits_for(live_stack, o["client"]["id"])
    assert len(credits) == 1
    assert Decimal(str(credits[0]["amount"])) == Decimal("35.50")
    assert credits[0]["description"] == f"Credit for Cloud Services Order #{o['orderId']}"


def test_lines_with_apply_credit_off_are_not_credited(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("25.00", "10.50"))
    o["body"]["lines"][1]["apply_credit"] = False
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).json()["credited"] == "25.00"


def test_without_lines_the_backend_finds_the_computestacks_services_itself(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("20.00",))
    other = seed_order(live_stack, currency="GBP", amounts=("99.00",), module="cpanel")
    body = {k: v for k, v in o["body"].items() if k != "lines"}
    assert live_stack.call("/v1/hooks/order-paid", body).json()["credited"] == "20.00"
    body = {k: v for k, v in other["body"].items() if k != "lines"}
    assert live_stack.call("/v1/hooks/order-paid", body).json()["credited"] == "0.00"
    assert credits_for(live_stack, other["client"]["id"]) == []


def test_an_unpaid_invoice_credits_nothing_and_writes_nothing(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, status="Unpaid")
    resp = live_stack.call("/v1/hooks/order-paid", o["body"])
    assert resp.json() == {"result": "success", "credited": "0.00", "currency": "USD"}
    assert live_stack.whmcs.credits == [] and live_stack.tables.scan("ledger") == []


def test_a_line_not_on_the_invoice_credits_nothing(live_stack: LiveStack) -> None:
    o = seed_order(live_stack)
    o["body"]["lines"] = [{"serviceid": 987654, "apply_credit": True}]
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).json()["credited"] == "0.00"
    assert live_stack.whmcs.credits == []


def test_an_invoice_of_another_client_is_refused(live_stack: LiveStack) -> None:
    o = seed_order(live_stack)
    o["body"]["userId"] = o["client"]["id"] + 1000
    resp = live_stack.call("/v1/hooks/order-paid", o["body"])
    assert resp.status_code == 422 and "invoiceId" not in resp.json()["message"].lower() or resp.status_code == 422
    assert live_stack.whmcs.credits == []


def test_missing_order_fields_are_422_naming_the_field(live_stack: LiveStack) -> None:
    resp = live_stack.call("/v1/hooks/order-paid", {"invoiceId": 1, "userId": 1})
    assert resp.status_code == 422 and "orderId" in resp.json()["message"]


def test_concurrent_duplicate_deliveries_credit_once(live_stack: LiveStack) -> None:
    # Given a paid order and a slow WHMCS, so the deliveries overlap
    o = seed_order(live_stack, amounts=("40.00",))
    results = deliver_at_once(live_stack, o["body"], 5, latency=0.2)
    # Then exactly one credit, and every delivery that answered 200 says 40.00
    assert len(credits_for(live_stack, o["client"]["id"])) == 1
    assert all(r.json()["credited"] == "40.00" for r in results if r.status_code == 200)
    assert all(r.status_code in (200, 409) for r in results)


def test_a_credit_whose_answer_was_lost_is_confirmed_not_repeated(live_stack: LiveStack) -> None:
    # Given WHMCS applies AddCredit but answers too late
    o = seed_order(live_stack, amounts=("15.00",))
    live_stack.whmcs.timeout_after_commit_next(1, delay=2.5, actions=["AddCredit"])
    # When the hook is delivered (and again later)
    first = live_stack.call("/v1/hooks/order-paid", o["body"])
    second = live_stack.call("/v1/hooks/order-paid", o["body"])
    # Then GetCredits confirmed it: one credit
    assert first.status_code == 200, first.text
    assert second.json()["credited"] == "15.00"
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_a_whmcs_failure_leaves_the_order_creditable_later(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("12.00",))
    live_stack.whmcs.fail_next(1, status=500, actions=["AddCredit"])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502
    assert live_stack.whmcs.credits == []
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).json()["credited"] == "12.00"
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


# --- a failed delivery is not lost: the daily sweep delivers it again ------------------------------------

def sweep(stack: LiveStack) -> list[dict[str, Any]]:
    from cswhmcs.api import get_deps
    from cswhmcs.credit import retry_open_credits

    return retry_open_credits(get_deps())


@pytest.mark.parametrize("action", ["GetInvoice", "AddCredit"])
def test_a_delivery_that_failed_is_credited_once_by_the_sweep(live_stack: LiveStack, action: str) -> None:
    # Given WHMCS failing while the one OrderPaid delivery is handled (WHMCS fires the hook only once)
    o = seed_order(live_stack, amounts=("30.00",))
    # (reads are retried by the client, so GetInvoice must fail 3 times; AddCredit is never re-sent)
    live_stack.whmcs.fail_next(3 if action == "GetInvoice" else 1, status=500, actions=[action])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502
    assert live_stack.whmcs.credits == []
    # When the daily sweep runs (twice)
    first = sweep(live_stack)
    second = sweep(live_stack)
    # Then the deposit was credited exactly once, and nothing stays open
    assert [(r["orderId"], r.get("credited")) for r in first] == [(o["orderId"], "30.00")]
    assert second == []
    assert len(credits_for(live_stack, o["client"]["id"])) == 1
    # And a later delivery of the hook answers the same
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).json()["credited"] == "30.00"


def test_a_credit_whose_answer_was_lost_and_not_yet_visible_is_settled_by_the_sweep(live_stack: LiveStack) -> None:
    # Given AddCredit applied by WHMCS but its answer lost, and GetCredits failing at that moment
    o = seed_order(live_stack, amounts=("18.00",))
    live_stack.whmcs.timeout_after_commit_next(1, delay=2.5, actions=["AddCredit"])
    live_stack.whmcs.fail_next(3, status=500, actions=["GetCredits"])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code in (502, 504)
    # When the sweep runs
    outcome = sweep(live_stack)
    # Then it finds the credit in WHMCS instead of sending a second one
    assert [r.get("credited") for r in outcome] == ["18.00"]
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_nothing_is_kept_open_for_refused_input_or_unpaid_invoices(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, status="Unpaid")
    live_stack.call("/v1/hooks/order-paid", o["body"])
    live_stack.call("/v1/hooks/order-paid", {"orderId": 5, "invoiceId": 5})
    assert sweep(live_stack) == []
    assert live_stack.tables.scan("ledger") == []


def test_an_order_that_turned_unpaid_is_settled_with_nothing(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("9.00",))
    live_stack.whmcs.fail_next(3, status=500, actions=["GetInvoice"])
    live_stack.call("/v1/hooks/order-paid", o["body"])
    live_stack.whmcs.set_invoice_status(o["invoiceId"], "Refunded")
    assert [r.get("credited") for r in sweep(live_stack)] == ["0.00"]
    assert sweep(live_stack) == [] and live_stack.whmcs.credits == []


def test_the_daily_collection_trigger_sweeps_open_credits(live_stack: LiveStack,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an order whose only OrderPaid delivery failed
    from cswhmcs.api import reset_deps
    from cswhmcs.billing.handlers import planner_handler

    monkeypatch.setenv("WORK_QUEUE_URL", "https://sqs.example/work")  # the planner's settings (template.yaml)
    reset_deps()

    o = seed_order(live_stack, amounts=("11.00",))
    live_stack.whmcs.fail_next(1, status=503, actions=["AddCredit"])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502

    class NoSqs:
        def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
            return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    # When the Scheduler's daily "collect" input reaches the planner
    event = {"mode": "collect", "scheduled_time": "2026-11-20T00:30:00Z", "execution_id": "x", "timezone": "UTC"}
    planner_handler(event, None, {"WORK_QUEUE_URL": "https://sqs.example/work"}, sqs=NoSqs())
    # Then the deposit is credited, once
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_another_order_id_naming_the_same_invoice_credits_nothing(live_stack: LiveStack) -> None:
    # Given an order already credited
    o = seed_order(live_stack, amounts=("3.00",))
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).json()["credited"] == "3.00"
    # When the same invoice arrives under order ids that did not buy those services (with and without lines)
    for fake_order in (o["orderId"] + 100, o["orderId"] + 101):
        body = {**o["body"], "orderId": fake_order}
        if fake_order % 2:
            body.pop("lines")
        resp = live_stack.call("/v1/hooks/order-paid", body)
        # Then nothing more is credited
        assert resp.json()["credited"] == "0.00", resp.text
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_a_credited_order_named_with_another_invoice_or_client_is_a_conflict(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("3.00",))
    live_stack.call("/v1/hooks/order-paid", o["body"])
    other = seed_order(live_stack, currency="EUR", amounts=("7.00",))
    resp = live_stack.call("/v1/hooks/order-paid", {"orderId": o["orderId"], "invoiceId": other["invoiceId"],
                                                   "userId": other["client"]["id"]})
    assert resp.status_code == 409 and resp.json()["code"] == "order_credit_mismatch"
    assert credits_for(live_stack, other["client"]["id"]) == []


# --- issue 8: definite refusals open nothing; settled orders are checked again; stale orders are reported --

def ledger_record(stack: LiveStack, order_id: int) -> dict[str, Any] | None:
    items = [i for i in stack.tables.scan("ledger") if i["pk"] == f"order#{order_id}"]
    return items[0] if items else None


def age_open_record(stack: LiveStack, order_id: int, days: float) -> None:
    """The order was kept open `days` ago (as if that long had passed since its failed delivery)."""
    import time

    stack.tables.resource().Table(stack.tables.ledger).update_item(
        Key={"pk": f"order#{order_id}", "sk": "credit"}, UpdateExpression="SET opened_at = :t",
        ExpressionAttributeValues={":t": int(time.time() - days * 86400)})


def test_an_invoice_whmcs_does_not_know_is_422_and_opens_nothing(live_stack: LiveStack) -> None:
    # Given a real client, and an invoice id WHMCS has never issued
    o = seed_order(live_stack, amounts=("25.00",))
    body = {**o["body"], "invoiceId": o["invoiceId"] + 5000}
    # When the signed hook names it
    resp = live_stack.call("/v1/hooks/order-paid", body)
    # Then it is the caller's error, naming the field, and nothing is kept for the daily sweep
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "invalid_field"
    assert resp.json()["message"] == f"The field 'invoiceId' is invalid: WHMCS has no invoice #{body['invoiceId']}."
    assert live_stack.tables.scan("ledger") == []
    assert sweep(live_stack) == [] and live_stack.whmcs.credits == []


@pytest.mark.parametrize(("action", "whmcs_says"), [("GetClientsDetails", "Client Not Found"),
                                                    ("AddCredit", "Client ID Not Found")])
def test_a_client_whmcs_does_not_know_is_422_and_opens_nothing(live_stack: LiveStack, action: str,
                                                               whmcs_says: str) -> None:
    # Given WHMCS answering that the order's client does not exist (deleted after the invoice was paid)
    o = seed_order(live_stack, amounts=("25.00",))
    live_stack.whmcs.error_next(1, whmcs_says, actions=[action])
    # When the hook is delivered
    resp = live_stack.call("/v1/hooks/order-paid", o["body"])
    # Then 422 naming userId; no open record, nothing for the sweep to deliver again
    assert resp.status_code == 422, resp.text
    assert "'userId'" in resp.json()["message"]
    record = ledger_record(live_stack, o["orderId"])
    assert record is None or (record["status"] == "refused" and "gsi1pk" not in record)
    assert sweep(live_stack) == [] and live_stack.whmcs.credits == []


def test_other_whmcs_errors_still_keep_the_order_open(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("25.00",))
    live_stack.whmcs.error_next(1, "Database connection lost", actions=["GetInvoice"])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502
    assert [r.get("credited") for r in sweep(live_stack)] == ["25.00"]
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_an_open_order_whose_invoice_is_gone_is_settled_not_retried_forever(live_stack: LiveStack) -> None:
    # Given an order kept open by a failing WHMCS
    o = seed_order(live_stack, amounts=("14.00",))
    live_stack.whmcs.fail_next(1, status=503, actions=["AddCredit"])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502
    # When the sweep finds that WHMCS no longer has the invoice
    live_stack.whmcs.error_next(1, "Invoice ID Not Found", actions=["GetInvoice"])
    first = sweep(live_stack)
    # Then the order is settled as refused: the next sweep has nothing to deliver
    assert [(r["orderId"], r.get("error")) for r in first] == [
        (o["orderId"], f"The field 'invoiceId' is invalid: WHMCS has no invoice #{o['invoiceId']}.")]
    assert sweep(live_stack) == []
    record = ledger_record(live_stack, o["orderId"])
    assert record is not None and record["status"] == "refused"
    # And a later delivery (the invoice is back) is checked again and credited once
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).json()["credited"] == "14.00"
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_an_order_settled_with_nothing_is_checked_again_when_delivered_again(live_stack: LiveStack) -> None:
    # Given an order settled as "nothing to credit" (its invoice was unpaid when the sweep checked it)
    o = seed_order(live_stack, amounts=("9.00",))
    live_stack.whmcs.fail_next(1, status=503, actions=["AddCredit"])
    assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502
    live_stack.whmcs.set_invoice_status(o["invoiceId"], "Unpaid")
    assert [r.get("credited") for r in sweep(live_stack)] == ["0.00"]
    # When the invoice is paid and the order is delivered again (twice)
    live_stack.whmcs.set_invoice_status(o["invoiceId"], "Paid")
    first = live_stack.call("/v1/hooks/order-paid", o["body"])
    second = live_stack.call("/v1/hooks/order-paid", o["body"])
    # Then it is credited, once, not refused as "being applied by another delivery"
    assert first.status_code == 200, first.text
    assert first.json() == second.json() == {"result": "success", "credited": "9.00", "currency": "USD"}
    assert len(credits_for(live_stack, o["client"]["id"])) == 1


def test_concurrent_deliveries_of_an_order_settled_with_nothing_credit_once(live_stack: LiveStack) -> None:
    o = seed_order(live_stack, amounts=("6.00",))
    live_stack.whmcs.fail_next(1, status=503, actions=["AddCredit"])
    live_stack.call("/v1/hooks/order-paid", o["body"])
    live_stack.whmcs.set_invoice_status(o["invoiceId"], "Unpaid")
    sweep(live_stack)
    live_stack.whmcs.set_invoice_status(o["invoiceId"], "Paid")
    results = deliver_at_once(live_stack, o["body"], 4, latency=0.1)
    assert len(credits_for(live_stack, o["client"]["id"])) == 1
    assert all(r.status_code == 200 and r.json()["credited"] == "6.00" for r in results), [r.text for r in results]


def test_an_order_open_for_more_than_7_days_is_reported_alarmed_and_no_longer_retried(
        live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    import json

    from cswhmcs.cli import main

    # Given two orders kept open by a failing WHMCS, one of them 8 days ago
    old, new = seed_order(live_stack, amounts=("21.00",)), seed_order(live_stack, currency="EUR", amounts=("4.00",))
    for o in (old, new):
        live_stack.whmcs.fail_next(1, status=503, actions=["AddCredit"])
        assert live_stack.call("/v1/hooks/order-paid", o["body"]).status_code == 502
    age_open_record(live_stack, old["orderId"], days=8)
    # When the daily sweep runs (with CloudWatch metrics on, as in AWS)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()
    outcomes = sweep(live_stack)
    # Then the old order is not delivered again: one error line, and OrderCreditsStale = 1
    assert {o["orderId"]: ("stale" in o, o.get("credited")) for o in outcomes} == {
        old["orderId"]: (True, None), new["orderId"]: (False, "4.00")}
    assert credits_for(live_stack, old["client"]["id"]) == []
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "more than 7 days" in r.getMessage()]
    assert len(errors) == 1 and getattr(errors[0], "order_ids", None) == [old["orderId"]]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], m["OrderCreditsStale"], m["service"]) for m in emf] \
        == [("ComputeStacksWHMCS", [1.0], "cswhmcs")]
    # And `cswhmcs credits open` marks it
    assert main(["credits", "open"]) == 3
    listed = capsys.readouterr()
    assert listed.out.count("\n") == 1 and f"order #{old['orderId']} " in listed.out and "STALE" in listed.out
    assert "cswhmcs credits retry --include-stale" in listed.err
    # And the operator's retry delivers it (once), after which nothing is open and the metric is 0
    assert main(["credits", "retry"]) == 3 and "not retried" in capsys.readouterr().out
    assert main(["credits", "retry", "--include-stale"]) == 0
    assert len(credits_for(live_stack, old["client"]["id"])) == 1
    capsys.readouterr()
    assert sweep(live_stack) == []
    assert [json.loads(line)["OrderCreditsStale"] for line in capsys.readouterr().out.splitlines()
            if '"_aws"' in line] == [[0.0]]
