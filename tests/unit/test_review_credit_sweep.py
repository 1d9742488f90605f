"""Review of issue 8: the daily sweep of open order credits delivers each order inside the same time
budget as the route (25 s), so a delivery can never outlive its claim's 60 s lease (after which another
delivery may take the order over and, not yet seeing the credit in GetCredits, send a second one)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cswhmcs import credit, deadline
from cswhmcs.adapters.dynamo import OpenOrder


def test_each_swept_order_is_delivered_within_the_route_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two open orders, and a sweep run by a function with plenty of time left (the planner)
    seen: list[float] = []

    def fake_order_paid(req: Any) -> dict[str, Any]:
        seen.append(deadline.current().remaining())
        return {"credited": "1.00", "currency": "USD"}

    monkeypatch.setattr(credit, "order_paid", fake_order_paid)
    orders = [OpenOrder(order_id=i, body={"orderId": i, "invoiceId": 1, "userId": 1}, status="open",
                        opened_at=int(__import__("time").time()), last_error="") for i in (1, 2)]
    deps = SimpleNamespace(order_credits=SimpleNamespace(open_orders=lambda: iter(orders)), settings=None)
    with deadline.use(deadline.Deadline.after(800)):
        credit.retry_open_credits(deps, emit_metric=False)  # type: ignore[arg-type]
    # Then each delivery had at most the route's budget, not the planner's 800 s
    assert len(seen) == 2
    assert all(0 < left <= deadline.API_BUDGET_SECONDS for left in seen), seen
