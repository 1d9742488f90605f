"""Helpers for the security and reliability suite: seeding linked accounts and paid orders, a signer
for in-process calls, and a snapshot of everything a request could change (DynamoDB, both sandboxes)."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import SIGNING_SECRET, LiveStack, Tables, scan_pages
from tests.support import live

ALL_ROUTES = ["/v1/accounts/create", "/v1/accounts/suspend", "/v1/accounts/unsuspend", "/v1/accounts/terminate",
              "/v1/accounts/change-password", "/v1/accounts/change-package", "/v1/accounts/sso",
              "/v1/accounts/overview", "/v1/accounts/list", "/v1/user-groups", "/v1/connection/test",
              "/v1/hooks/order-paid", "/v1/hooks/invoice-paid"]
# The one route authenticated by a token in its URL instead of a signature (API.md section 3).
TOKEN_ROUTES = ["/v1/hooks/cs-user"]
ERROR_KEYS = {"result", "message", "code"}


def link_account(stack: LiveStack, service_id: int, *, email: str | None = None, active: bool = True,
                 client_id: int = 7) -> int:
    """A ComputeStacks user linked to a WHMCS service (the mapping in DynamoDB); returns its id."""
    email = email or f"svc{service_id}@example.org"
    user = stack.cs.add_user(email, "Ann", f"Svc{service_id}", external_id=str(service_id), active=active)
    scan(stack.tables, "accounts")  # makes the cached resource
    _resources[stack.tables.endpoint].Table(stack.tables.accounts).put_item(Item={
        "service_id": service_id, "cs_user_id": int(user["id"]), "email": email, "client_id": client_id,
        "currency": "USD"})
    return int(user["id"])


def seed_order(stack: LiveStack, amount: str = "25.00", currency: str = "USD") -> dict[str, Any]:
    """A paid WHMCS order with one ComputeStacks service line; its OrderPaid body."""
    client = stack.whmcs.add_client("Ann", "Lee", f"ann{time.monotonic_ns()}@example.org", currency_code=currency)
    product = stack.whmcs.add_product("Cloud Account", module="computestacks", configoption2="on")
    service = stack.whmcs.add_service(client["id"], product["id"], username=f"s{client['id']}@example.org")
    order_id, invoice_id = stack.whmcs.add_order(client["id"], [service["id"]], amounts=[amount])
    return {"orderId": order_id, "invoiceId": invoice_id, "userId": client["id"],
            "lines": [{"serviceid": service["id"], "apply_credit": True}]}


def create_body(serviceid: int, **over: Any) -> dict[str, Any]:
    """The live stack's CreateAccount body with this suite's own password and a loopback server hostname."""
    return live.create_body(serviceid, **{"password": "Create-Pw-8812xq", "serverhostname": "127.0.0.1", **over})


_resources: dict[str, Any] = {}


def scan(tables: Tables, which: str) -> list[dict[str, Any]]:
    """`Tables.scan` with one boto3 resource per endpoint (a new resource per scan costs ~50 ms)."""
    if tables.endpoint not in _resources:
        _resources[tables.endpoint] = tables.resource()
    return scan_pages(_resources[tables.endpoint].Table(getattr(tables, which)), ConsistentRead=True)


@dataclass
class Snapshot:
    """Everything a request could change; equal snapshots mean the request changed nothing."""

    tables: dict[str, list[dict[str, Any]]]
    cs_users: dict[int, dict[str, Any]]
    cs_requests: int
    whmcs_requests: int
    credits: list[dict[str, Any]]
    billable_items: list[dict[str, Any]]

    @classmethod
    def take(cls, stack: LiveStack) -> Snapshot:
        def key(item: dict[str, Any]) -> str:
            return json.dumps(item, sort_keys=True, default=str)

        return cls(
            tables={name: sorted(scan(stack.tables, name), key=key) for name in ("accounts", "ledger", "idempotency")},
            cs_users=copy.deepcopy(stack.cs.users), cs_requests=len(stack.cs.requests),
            whmcs_requests=len(stack.whmcs.requests), credits=stack.whmcs.credits,
            billable_items=stack.whmcs.billable_items)

    def differences(self, other: Snapshot) -> list[str]:
        out = [f"table {name} changed" for name in self.tables if self.tables[name] != other.tables[name]]
        if self.cs_users != other.cs_users:
            out.append("ComputeStacks users changed")
        if self.cs_requests != other.cs_requests:
            out.append(f"{other.cs_requests - self.cs_requests} ComputeStacks request(s) made")
        if self.whmcs_requests != other.whmcs_requests:
            out.append(f"{other.whmcs_requests - self.whmcs_requests} WHMCS request(s) made")
        if self.credits != other.credits:
            out.append("WHMCS credits changed")
        if self.billable_items != other.billable_items:
            out.append("WHMCS billable items changed")
        return out


def error_shape_problems(status: int, text: str) -> list[str]:
    """What is wrong with an error answer, measured against API.md section 2 ([] when it is right)."""
    problems = []
    if "Traceback" in text or 'File "' in text:
        problems.append("a traceback in the body")
    try:
        body = json.loads(text)
    except ValueError:
        return [*problems, f"not JSON: {text[:200]!r}"]
    if not isinstance(body, dict) or set(body) != ERROR_KEYS:
        return [*problems, f"not the error shape: {text[:200]!r}"]
    if body["result"] != "error":
        problems.append("result is not 'error'")
    if not isinstance(body["message"], str) or not body["message"].strip() or "\n" in body["message"]:
        problems.append(f"message is not one sentence: {body['message']!r}")
    if not isinstance(body["code"], str) or not body["code"].replace("_", "").isalpha() \
            or body["code"] != body["code"].lower():
        problems.append(f"code is not snake_case: {body['code']!r}")
    if status >= 500 and body.get("code") == "internal_error":
        problems.append("internal_error")
    return problems


class Signer:
    """Signs in-process requests (API.md section 1) with distinct timestamps inside the window, so that a
    body sent twice (Hypothesis repeats examples) is not taken for a replay."""

    def __init__(self, secret: str = SIGNING_SECRET) -> None:
        self.secret = secret
        self._offsets = itertools.cycle(range(-250, 251))
        self._lock = threading.Lock()

    def headers(self, route: str, body: bytes) -> dict[str, str]:
        from cswhmcs.signing import sign_headers

        with self._lock:
            offset = next(self._offsets)
        return {"Content-Type": "application/json",
                **sign_headers(self.secret, route, body, now=round(time.time()) + offset)}


def invoke(stack: LiveStack, route: str, body: bytes, signer: Signer) -> tuple[int, str]:
    """One signed request through the real route handler, in-process (the path `cswhmcs serve` takes, no
    HTTP); returns status and body text."""
    status, _, data, _ = stack.server.api.invoke("POST", route, signer.headers(route, body), body, "127.0.0.1")
    return status, data.decode("utf-8")


_client: list[Any] = []


def post(stack: LiveStack, route: str, body: bytes, headers: dict[str, str], *, timeout: float = 30) -> Any:
    """POST raw bytes with exactly these headers to the stack's `cswhmcs serve` (one shared keep-alive client:
    `httpx.post` builds a client, SSL context included, per call)."""
    import httpx

    if not _client:
        _client.append(httpx.Client(timeout=timeout))
    return _client[0].post(stack.url + route, content=body,
                           headers={"Content-Type": "application/json", **headers}, timeout=timeout)


@pytest.fixture
def signer() -> Signer:
    return Signer()
