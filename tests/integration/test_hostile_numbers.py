"""Hostile bodies that once gave 500 (issue 8): deep nesting, and numbers no field can hold.

Every route, through `cswhmcs serve`: a signed body nested 10,000-20,000 levels deep is 400
`bad_request`; a huge number (1e400, a 40-digit integer), NaN or Infinity in a numeric field is 422
naming the field. Nothing reaches DynamoDB's serializer or an upstream, nothing is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cswhmcs.signing import sign_headers
from tests.conftest import LiveStack

pytestmark = pytest.mark.integration

ACCOUNT_ROUTES = ["/v1/accounts/create", "/v1/accounts/suspend", "/v1/accounts/unsuspend",
                  "/v1/accounts/terminate", "/v1/accounts/change-password", "/v1/accounts/change-package",
                  "/v1/accounts/sso", "/v1/accounts/overview"]
ALL_ROUTES = [*ACCOUNT_ROUTES, "/v1/accounts/list", "/v1/user-groups", "/v1/connection/test",
              "/v1/hooks/order-paid"]
HUGE = ["1e400", "-1e400", "1" + "0" * 40, "1E+38", "NaN", "Infinity", "-Infinity", "2147483648", "12.5"]


def account_body() -> dict[str, Any]:
    return {"serviceid": 42, "userid": 7, "pid": 3, "password": "Xy7pQ2mN4kLm",
            "clientsdetails": {"client_id": 7, "userid": 7, "id": 7, "firstname": "Ann", "lastname": "Lee",
                               "email": "ann@example.org", "currency": 1, "currency_code": "USD"}}


def order_body() -> dict[str, Any]:
    return {"orderId": 5, "invoiceId": 6, "userId": 7, "lines": [{"serviceid": 42, "apply_credit": True}]}


def raw_with(body: dict[str, Any], path: tuple[Any, ...], literal: str) -> bytes:
    """The body as JSON with the value at `path` replaced by a raw JSON literal (1e400, NaN...)."""
    marker = "__HOSTILE__"
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(body).replace(f'"{marker}"', literal).encode()


def numeric_fields() -> list[tuple[str, dict[str, Any], tuple[Any, ...], list[str]]]:
    """(route, body, path of the field, literals to put there): every literal in the first field of each
    model, a few in every other numeric field (the same model answers them on every route)."""
    few = ["1e400", "-Infinity", "2147483648"]
    cases: list[tuple[str, dict[str, Any], tuple[Any, ...], list[str]]] = [
        ("/v1/accounts/overview", account_body(), ("serviceid",), HUGE),
        ("/v1/hooks/order-paid", order_body(), ("orderId",), HUGE),
        ("/v1/accounts/list", {"page": 1, "page_size": 10}, ("page",), HUGE),
    ]
    cases += [(route, account_body(), ("serviceid",), ["1e400", "NaN"]) for route in ACCOUNT_ROUTES]
    cases += [("/v1/accounts/suspend", account_body(), (name,), few) for name in ("userid", "pid")]
    cases += [("/v1/accounts/create", account_body(), ("clientsdetails", name), few)
              for name in ("client_id", "userid", "id", "currency")]
    cases += [("/v1/hooks/order-paid", order_body(), path, few)
              for path in (("invoiceId",), ("userId",), ("lines", 0, "serviceid"))]
    cases += [("/v1/accounts/list", {"page": 1, "page_size": 10}, ("page_size",), few)]
    return cases


class Caller:
    """Signed POSTs over one kept-alive connection (hundreds of requests stay fast)."""

    def __init__(self, stack: LiveStack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.url, timeout=30)
        self.sent: set[tuple[str, int, int]] = set()

    def post(self, route: str, raw: bytes) -> httpx.Response:
        # A request repeated within the same second is signed a second later, so it is not taken for a replay.
        ts = int(time.time())
        while (route, hash(raw), ts) in self.sent:
            ts += 1
        self.sent.add((route, hash(raw), ts))
        headers = {"Content-Type": "application/json",
                   **sign_headers(self.stack.signing_secret, route, raw, now=ts)}
        return self.http.post(route, content=raw, headers=headers)


@pytest.fixture
def caller(live_stack: LiveStack) -> Iterator[Caller]:
    c = Caller(live_stack)
    yield c
    c.http.close()


def nothing_happened(stack: LiveStack) -> None:
    assert stack.tables.scan("accounts") == [] and stack.tables.scan("ledger") == []
    assert stack.cs.requests == [] and stack.whmcs.credits == []


def test_a_deeply_nested_signed_body_is_400_on_every_route(live_stack: LiveStack, caller: Caller) -> None:
    bodies = {"arrays, 20,000 deep": b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
              "objects, 10,000 deep": b'{"a":' * 10_000 + b"1" + b"}" * 10_000}
    for name, raw in bodies.items():
        assert 40_000 <= len(raw) <= 64 * 1024, (name, len(raw))
        for route in ALL_ROUTES:
            resp = caller.post(route, raw)
            assert resp.status_code == 400, (name, route, resp.status_code, resp.text)
            assert resp.json() == {"result": "error", "code": "bad_request",
                                   "message": "The request body is nested too deeply."}, (name, route)
    nothing_happened(live_stack)


def test_a_body_the_parser_takes_but_nested_thousands_deep_is_400(live_stack: LiveStack, caller: Caller) -> None:
    # Python's parser takes ~9,000 levels; whatever recurses over the value afterwards (validation,
    # the request log line, its redaction) may not
    for raw in (b'{"serviceid":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
                b'{"serviceid":' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001,
                b'{"clientsdetails":' + b'{"a":' * 200 + b"1" + b"}" * 201):
        for route in ACCOUNT_ROUTES:
            resp = caller.post(route, raw)
            assert resp.status_code == 400, (route, resp.status_code, resp.text)
            assert resp.json()["message"] == "The request body is nested too deeply.", route
    nothing_happened(live_stack)


def test_a_number_no_field_can_hold_is_422_naming_the_field(live_stack: LiveStack, caller: Caller) -> None:
    failures = []
    for route, body, path, literals in numeric_fields():
        field = ".".join(str(p) for p in path)
        for literal in literals:
            resp = caller.post(route, raw_with(json.loads(json.dumps(body)), path, literal))
            answer = resp.json()
            if resp.status_code != 422 or answer.get("code") != "invalid_field" or \
                    f"'{field}'" not in answer.get("message", ""):
                failures.append((route, field, literal, resp.status_code, answer))
    assert failures == []
    nothing_happened(live_stack)
    # The routes that take no numbers ignore them, like any unknown key
    for route in ("/v1/user-groups", "/v1/connection/test"):
        resp = caller.post(route, b'{"serviceid": 1e400, "page": NaN, "x": -Infinity}')
        assert resp.status_code == 200, (route, resp.text)
