"""The overview's billing figures (API.md section 3 additions, docs/billing.md "The overview's billing figures"):
months billed through the real in-process run against the sandboxes and DynamoDB Local, then
`/v1/accounts/overview` through `cswhmcs serve`."""

from __future__ import annotations

from calendar import monthrange
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs.accounts.overview import what_to_do
from cswhmcs.billing.ledger import LineSummary
from cswhmcs.billing.messages import COLLECT
from cswhmcs.contract import Overview
from tests.conftest import LiveStack
from tests.support.billing_stack import Acct, BillingStack
from tests.support.live import client_details, params

pytestmark = pytest.mark.integration

MONTHS = [(2026, m) for m in range(4, 11)]  # April to October 2026: 7 periods, 2 products each = 14 lines


def month_end(year: int, month: int) -> datetime:
    return datetime(year, month, monthrange(year, month)[1], 23, tzinfo=UTC)


def overview(live: LiveStack, acct: Acct) -> dict[str, Any]:
    live.cs.reset_requests()
    resp = live.call("/v1/accounts/overview", params(serviceid=acct.service_id, userid=acct.client_id,
                                                     username=acct.email,
                                                     clientsdetails=client_details(currency=2, currency_code="EUR")))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    Overview.model_validate(body)  # the contract's model (docs/openapi.json)
    # API.md section 3: at most one ComputeStacks request per overview, whatever the ledger holds
    assert len(live.cs.requests) <= 1, live.cs.requests
    return body


@pytest.fixture
def billing(live_stack: LiveStack) -> BillingStack:
    return BillingStack(live_stack.tables, live_stack.cs, live_stack.whmcs)


def test_usage_billed_lines_periods_and_attention(live_stack: LiveStack, billing: BillingStack) -> None:
    # Given a EUR account billed for seven months, two products a month (amounts that differ per month)
    acct = billing.add_account("EUR")
    for i, (y, m) in enumerate(MONTHS):
        start, end = month_end(y, m) - timedelta(days=2), month_end(y, m)
        billing.add_usage(acct, "containerm", start=start, end=end, total=f"0.{i + 1}0000001",
                          every=timedelta(hours=12))
        billing.add_usage(acct, "storage", start=start, end=end, total="0.01000001", every=timedelta(hours=24))
    summaries = [billing.run(month_end(y, m)) for (y, m) in MONTHS[:-1]]
    # October's first billable item: WHMCS created it and the answer was lost, so that line needs an operator
    billing.whmcs.drop_next(1, actions=["AddBillableItem"], applied=True)
    october = billing.run(month_end(*MONTHS[-1]))
    assert all(s.exit_code == 0 for s in summaries) and october.exit_code == 3 and len(october.attention) == 1
    [attention_ref] = [o.ref for o in october.attention]

    # And November's usage so far, read by a daily collection on 10 November
    nov_end, as_of = month_end(*MONTHS[-1]), datetime(2026, 11, 10, 6, tzinfo=UTC)
    billing.add_usage(acct, "containerm", start=nov_end, end=as_of, total="0.10000001", qty="2")  # 74 rows
    billing.add_usage(acct, "storage", start=nov_end, end=as_of, total="0.015", every=timedelta(hours=24))  # 9
    billing.add_usage(acct, "bandwidth", start=nov_end, end=as_of, total="0.0001", every=timedelta(days=3))  # 3
    billing.run(as_of, kind=COLLECT)

    # When the client area asks for the overview
    body = overview(live_stack, acct)

    # Then this period's usage per product: exact sums rounded once, largest first, in the account's currency
    assert body["usage_by_product"] == [
        {"product": "Containerm", "quantity": "148", "amount": "7.40", "amount_display": "€7.40"},  # 7.40000074
        {"product": "Storage", "quantity": "9", "amount": "0.14", "amount_display": "€0.14"},  # 0.135 half-up
        {"product": "Bandwidth", "quantity": "3", "amount": "0.00", "amount_display": "€0.00"},
    ]
    assert body["usage_as_of"] == "2026-11-10T06:00:00Z"

    # And the billed lines: newest period first, at most 12, each with the WHMCS sandbox's item id
    items = {item["description"].rsplit("[ref ", 1)[1].rstrip("]"): item for item in billing.whmcs.billable_items}
    billed = body["billed"]
    assert len(billed) == 12
    # (October lost its first line to attention: it has one billed line, then two per month down to April's first)
    assert [b["period"] for b in billed] == ["2026-10"] + [p for p in ("2026-09", "2026-08", "2026-07", "2026-06",
                                                                       "2026-05", "2026-04") for _ in (0, 1)][:11]
    by_id = {int(item["id"]): item for item in items.values()}
    for b in billed:
        item = by_id[b["billableid"]]
        assert b["amount"] == f"{Decimal(item['amount']):.2f}" and b["currency"] == "EUR"
        assert f"(period {b['period']})" in item["description"]
    september = [b for b in billed if b["period"] == "2026-09"]
    assert [(b["product"], b["amount"]) for b in september] == [("Containerm", "2.40"), ("Storage", "0.02")]

    # And billed_periods: every period of the chart, not only the 6 that 12 lines reach
    periods = body["billed_periods"]
    assert [p["period"] for p in periods] == ["2026-10", "2026-09", "2026-08", "2026-07", "2026-06", "2026-05",
                                              "2026-04"]
    for p in periods:
        lines = [i for r, i in items.items() if f":{p['period']}:" in r and r != attention_ref]
        assert p["amount"] == f"{sum(Decimal(i['amount']) for i in lines):.2f}" and p["currency"] == "EUR"

    # And the line needing an operator, with what to do
    [att] = body["attention"]
    assert att["ref"] == attention_ref and att["period"] == "2026-10" and att["currency"] == "EUR"
    assert Decimal(att["amount"]) > 0 and att["product"] in ("Containerm", "Storage")
    assert f"cswhmcs billing resolve {attention_ref} --billed" in att["what_to_do"]
    assert f"[ref {attention_ref}]" in att["what_to_do"]


def test_an_account_without_a_ledger_has_empty_lists(live_stack: LiveStack, billing: BillingStack) -> None:
    acct = billing.add_account("EUR")
    body = overview(live_stack, acct)
    assert body["usage_by_product"] == [] and body["usage_as_of"] is None
    assert body["billed"] == [] and body["billed_periods"] == [] and body["attention"] == []
    assert body["current_usage"] == "0.00"  # the four figures are still ComputeStacks'


def test_a_line_whmcs_refused_says_fix_then_resend() -> None:
    line = LineSummary(period="2026-10", product_id=3, product="Containerm", status="attention",
                       amount=Decimal("1.25"), currency="EUR", billable_id=None, ref="12:2026-10:3",
                       reason="WHMCS refused it 5 times (last: Invalid client); it was not created: fix the cause, "
                              "then resolve it with --resend")
    text = what_to_do(line)
    assert "cswhmcs billing resolve 12:2026-10:3 --resend" in text and "--billed" not in text
