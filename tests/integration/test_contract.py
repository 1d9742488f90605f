"""Every route's real answers, success and error, match the contract models (cswhmcs.contract)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cswhmcs.api import reset_deps
from cswhmcs.contract import ROUTES, ApiError
from tests.conftest import LiveStack
from tests.support.live import params, seed_order

pytestmark = pytest.mark.integration


def test_every_route_answers_in_its_declared_shape(live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an account, a group, usage, a paid order, and the users webhook's token set
    group = live_stack.cs.add_user_group("contract")
    order = seed_order(live_stack, amounts=("5.00",))
    bodies: dict[str, dict[str, Any]] = {
        "/v1/accounts/create": {**params(), "password": "Contract-pass-1"},
        "/v1/accounts/suspend": params(), "/v1/accounts/unsuspend": params(), "/v1/accounts/terminate": params(),
        "/v1/accounts/change-password": {**params(), "password": "Contract-pass-2"},
        "/v1/accounts/change-package": params(configoption1=str(group["id"])),
        "/v1/accounts/sso": params(), "/v1/accounts/overview": params(),
        "/v1/accounts/list": {}, "/v1/user-groups": {}, "/v1/connection/test": {},
        "/v1/hooks/order-paid": order["body"],
        "/v1/hooks/invoice-paid": {"invoiceid": order["invoiceId"]},
        "/v1/hooks/cs-user": {"user": {"id": 1}},
    }
    monkeypatch.setenv("CS_WEBHOOK_TOKEN", "contract-hook-token")
    reset_deps()
    assert set(bodies) == set(ROUTES)
    for route, body in bodies.items():
        # When
        if ROUTES[route].auth == "token":
            resp = httpx.post(f"{live_stack.url}{route}?token=contract-hook-token", json=body, timeout=30)
        else:
            resp = live_stack.call(route, body)
        # Then
        assert resp.status_code == 200, (route, resp.text)
        ROUTES[route].response.model_validate(resp.json())
    paged = live_stack.call("/v1/accounts/list", {"page": 1, "page_size": 10})
    ROUTES["/v1/accounts/list"].response.model_validate(paged.json())


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_route_answers_errors_in_the_error_shape_with_a_declared_status(live_stack: LiveStack,
                                                                           route: str) -> None:
    for resp in (live_stack.call(route, {"serviceid": "x", "orderId": "x"}),  # 422 or success-less refusal
                 live_stack.call(route, [1]),  # 400
                 live_stack.call(route, {}, sign=False)):  # 401
        if resp.status_code == 200:
            continue
        ApiError.model_validate(resp.json())
        assert resp.status_code in ROUTES[route].statuses, (route, resp.status_code)
