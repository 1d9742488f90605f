"""Requests and seeds for the live stack (``tests.conftest.LiveStack``: `cswhmcs serve` in front of the
sandboxes): the module's account parameters, a created account, a paid order in the WHMCS sandbox, a timed call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import LiveStack


def client_details(**over: Any) -> dict[str, Any]:
    cd: dict[str, Any] = {"client_id": 7, "userid": 7, "firstname": "Ann", "lastname": "Lee",
                          "email": "ann.lee@example.org", "companyname": "Lee Hosting", "address1": "1 Main St",
                          "city": "Portland", "fullstate": "Oregon", "postcode": "97201", "country": "US",
                          "phonenumberformatted": "+1.5035550100", "currency": 1, "currency_code": "USD"}
    cd.update(over)
    return cd


def params(serviceid: int = 42, **over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"serviceid": serviceid, "userid": 7, "pid": 3, "username": "", "domain": "",
                         "configoption1": "", "configoption2": "on", "status": "Active",
                         "serverhostname": "127.0.0.1", "clientsdetails": client_details()}
    p.update(over)
    return p


def create_body(serviceid: int = 42, **over: Any) -> dict[str, Any]:
    """A CreateAccount body as the module sends it: the service's parameters, its password, the client."""
    body: dict[str, Any] = {
        "serviceid": serviceid, "userid": 7, "pid": 3, "username": "", "password": "Xy7pQ2mN4kLm",
        "configoption1": "", "serverhostname": "ignored", "serversecure": False,
        "clientsdetails": {"client_id": 7, "firstname": "Ann", "lastname": "Lee", "email": "ann@example.org",
                           "currency": 1, "currency_code": "USD"},
    }
    body.update(over)
    return body


def create(stack: LiveStack, serviceid: int = 42, **over: Any) -> dict[str, Any]:
    resp = stack.call("/v1/accounts/create", {**params(serviceid, **over), "password": over.get("password",
                                                                                                 "Xy7pQ2mN4kLm")})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def timed_call(stack: LiveStack, route: str, payload: Any, *, timeout: float) -> tuple[Any, float]:
    """``stack.call`` (signed), and how many seconds it took to be answered."""
    started = time.monotonic()
    resp = stack.call(route, payload, timeout=timeout)
    return resp, time.monotonic() - started


def seed_order(stack: LiveStack, *, currency: str = "USD", amounts: tuple[str, ...] = ("25.00",),
               status: str = "Paid", module: str = "computestacks") -> dict[str, Any]:
    client = stack.whmcs.add_client("Ann", "Lee", f"ann.{currency.lower()}@example.org", currency_code=currency)
    product = stack.whmcs.add_product("Cloud Account", module=module, configoption2="on")
    services = [stack.whmcs.add_service(client["id"], product["id"], username=f"s{i}@example.org")
                for i in range(len(amounts))]
    order_id, invoice_id = stack.whmcs.add_order(client["id"], [s["id"] for s in services], amounts=list(amounts),
                                                 status=status)
    return {"client": client, "services": services, "orderId": order_id, "invoiceId": invoice_id,
            "body": {"orderId": order_id, "invoiceId": invoice_id, "userId": client["id"],
                     "lines": [{"serviceid": s["id"], "apply_credit": True} for s in services]}}
