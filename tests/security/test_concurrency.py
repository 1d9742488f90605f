"""Concurrent duplicates: what WHMCS really does when an admin double-clicks or a hook fires twice.

8 creates of one service at once -> one ComputeStacks user, every answer the same success (or a clear 409);
10 OrderPaid deliveries of one order at once -> one WHMCS credit; two month-end runs at once -> one
billable item per line.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs.signing import sign_headers
from tests.conftest import SIGNING_SECRET, LiveStack
from tests.security.conftest import create_body, error_shape_problems, scan, seed_order
from tests.support.billing_stack import OCT_END, BillingStack, seed_month

pytestmark = pytest.mark.integration


def at_once(n: int, stack: LiveStack, route: str, body: dict[str, Any]) -> list[httpx.Response]:
    """n deliveries of the same body released together, each signed anew with its own nonce (as the PHP
    module does), each on its own connection."""
    barrier = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        raw = json.dumps({**body, "csw_nonce": uuid.uuid4().hex}).encode()
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            return client.post(stack.url + route, content=raw, headers={
                "Content-Type": "application/json", **sign_headers(SIGNING_SECRET, route, raw)})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def same_success_or_clear_409(answers: list[httpx.Response], same: Callable[[dict[str, Any]], Any]) -> Any:
    ok = [a for a in answers if a.status_code == 200]
    others = [a for a in answers if a.status_code != 200]
    assert ok, [a.text for a in answers]
    for a in others:
        assert a.status_code == 409 and error_shape_problems(409, a.text) == [], a.text
    results = {json.dumps(same(a.json()), sort_keys=True) for a in ok}
    assert len(results) == 1, results
    return ok[0].json()


def test_eight_concurrent_creates_of_one_service_make_one_user(live_stack: LiveStack) -> None:
    # Given a ComputeStacks that takes a moment to create a user (so the eight overlap)
    live_stack.cs.latency = 0.15
    # When eight creates of service 77 arrive at once
    answers = at_once(8, live_stack, "/v1/accounts/create", create_body(77))
    live_stack.cs.latency = 0
    # Then they all answer the same success (or a clear 409), and there is exactly one user and mapping
    first = same_success_or_clear_409(answers, lambda b: (b["username"], b["cs_user_id"]))
    users = [u for u in live_stack.cs.users.values() if not u.get("is_admin")]
    assert len(users) == 1, users
    assert (first["username"], first["cs_user_id"]) == (users[0]["email"], users[0]["id"])
    assert users[0]["external_id"] == "77"
    mappings = scan(live_stack.tables, "accounts")
    assert [(int(m["service_id"]), int(m["cs_user_id"])) for m in mappings] == [(77, users[0]["id"])]
    # And a later create still answers the same
    again = at_once(1, live_stack, "/v1/accounts/create", create_body(77))[0]
    assert again.status_code == 200 and (again.json()["username"], again.json()["cs_user_id"]) == \
        (first["username"], first["cs_user_id"])


def test_ten_concurrent_order_paid_deliveries_credit_once(live_stack: LiveStack) -> None:
    # Given a paid order and a WHMCS that answers a little slowly
    body = seed_order(live_stack, amount="40.00")
    live_stack.whmcs.latency = 0.05
    # When the hook is delivered ten times at once
    answers = at_once(10, live_stack, "/v1/hooks/order-paid", body)
    live_stack.whmcs.latency = 0
    # Then one credit of 40.00, and every success says so
    same_success_or_clear_409(answers, lambda b: (b["credited"], b["currency"]))
    assert all(a.json()["credited"] == "40.00" for a in answers if a.status_code == 200)
    credits = [c for c in live_stack.whmcs.credits if int(c.get("clientid", c.get("client_id", 0))) == body["userId"]]
    assert len(credits) == 1 and Decimal(str(credits[0]["amount"])) == Decimal("40.00")
    assert live_stack.whmcs.actions_called().count("AddCredit") == 1
    # And a late delivery (after all settled) answers the same without crediting again
    late = at_once(1, live_stack, "/v1/hooks/order-paid", body)[0]
    assert late.status_code == 200 and late.json()["credited"] == "40.00"
    assert live_stack.whmcs.actions_called().count("AddCredit") == 1


def test_two_month_end_runs_at_once_create_one_item_per_line(tables: Any, cs_sandbox: Any,
                                                             whmcs_sandbox: Any) -> None:
    # Given a month of usage for several accounts and currencies, and two independent runtimes (as two
    # planners or two `cswhmcs billing run` would have)
    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    accts = seed_month(stack)
    runtimes = [stack.runtime(), stack.runtime()]
    cs_sandbox.latency = 0.02  # the runs interleave
    # When both run the same month-end at the same time
    try:
        with ThreadPoolExecutor(2) as pool:
            summaries = list(pool.map(lambda rt: stack.run(OCT_END, runtime=rt), runtimes))
    finally:
        cs_sandbox.latency = 0
        for rt in runtimes:
            rt.close()
    # Then every (account, product, period) line has exactly one billable item, with the exact amount
    by_ref = stack.items_by_ref()
    assert by_ref and all(len(items) == 1 for items in by_ref.values()), \
        {ref: len(items) for ref, items in by_ref.items() if len(items) != 1}
    want = {(a.cs_user_id, p): v for a in accts
            for p, v in stack.expected(a, "2026-10", datetime(2026, 1, 1, tzinfo=UTC), OCT_END).items()}
    got = {(int(ref.split(":")[0]), item["description"].split(":")[0].split(" (")[0].lower()): Decimal(item["amount"])
           for ref, (item,) in by_ref.items()}
    assert got == want
    # And the two runs between them created each item once and neither needs an operator
    assert sum(s.created_count or len(s.created) for s in summaries) == len(by_ref)
    assert all(not s.failed for s in summaries)
