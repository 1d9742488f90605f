"""The order in which an account route works (API.md sections 1-2: signature, replay, body, action), pinned
through `cswhmcs serve` on DynamoDB Local, on the routes whose action starts from the service's mapping.

An action never starts before the replay guard has written its record (the guard's failure stops it, and
ComputeStacks is never asked); a mapping that cannot be read after an accepting guard is the backend's 500 and
calls no one; a replay is 401 whatever its body; and each action reads its mapping once. These hold for any
reordering of the guard and the mapping's read (docs/performance.md section 4 measured one that ran them side
by side).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from cswhmcs.api import reset_deps
from cswhmcs.signing import sign_headers
from tests.conftest import LiveStack, Tables
from tests.security.conftest import link_account

pytestmark = pytest.mark.integration

MAPPING_ROUTES = ["/v1/accounts/suspend", "/v1/accounts/overview", "/v1/accounts/sso",
                  "/v1/accounts/change-password"]


def _body(route: str, service_id: int) -> dict[str, Any]:
    body: dict[str, Any] = {"serviceid": service_id, "userid": 7}
    if route.endswith("change-password"):
        body["password"] = "N3w-Passw0rd!"  # noqa: S105 - a test value
    return body


def _delete(tables: Tables, name: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=tables.endpoint)
    client.delete_table(TableName=name)
    client.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})


@pytest.mark.parametrize("gone", ["idempotency", "accounts"], ids=["replay guard's table", "mappings table"])
@pytest.mark.parametrize("route", MAPPING_ROUTES)
def test_a_table_that_cannot_be_written_or_read_is_a_500_before_the_action(live_stack: LiveStack, route: str,
                                                                           gone: str) -> None:
    # Given a linked, active account, and the replay guard's table or the mappings table gone
    user_id = link_account(live_stack, 501)
    _delete(live_stack.tables, getattr(live_stack.tables, gone))
    calls = len(live_stack.cs.requests)
    # When a signed request for the account arrives
    resp = live_stack.call(route, _body(route, 501))
    # Then it is the backend's own failure, in the error shape, and ComputeStacks was never asked
    assert resp.status_code == 500, resp.text
    assert resp.json()["code"] == "internal_error"
    assert len(live_stack.cs.requests) == calls
    assert live_stack.cs.users[user_id]["active"] is True
    if gone == "accounts":  # the guard had accepted the request: its signature is recorded
        assert len(live_stack.tables.scan("idempotency")) == 1


@pytest.mark.parametrize("route", ["/v1/accounts/suspend", "/v1/user-groups"])
@pytest.mark.parametrize("raw", [b"[1,2]", b"not json"], ids=["array", "text"])
def test_a_replay_is_401_whatever_its_body(live_stack: LiveStack, route: str, raw: bytes) -> None:
    # Given a signed request whose body is not a JSON object, refused once as such
    headers = sign_headers(live_stack.signing_secret, route, raw)
    first = live_stack.call(route, None, raw=raw, sign=False, headers=headers)
    assert first.status_code == 400 and first.json()["code"] == "bad_request"
    # When exactly the same request arrives again
    again = live_stack.call(route, None, raw=raw, sign=False, headers=headers)
    # Then it is refused as the replay it is
    assert again.status_code == 401 and again.json()["code"] == "signature_replayed"


def test_a_replayed_account_action_is_refused_and_changes_nothing(live_stack: LiveStack) -> None:
    # Given a suspend carried out, then the account reactivated
    user_id = link_account(live_stack, 503)
    raw = json.dumps({"serviceid": 503}).encode()
    headers = sign_headers(live_stack.signing_secret, "/v1/accounts/suspend", raw)
    assert live_stack.call("/v1/accounts/suspend", None, raw=raw, sign=False, headers=headers).status_code == 200
    assert live_stack.call("/v1/accounts/unsuspend", {"serviceid": 503}).status_code == 200
    calls = len(live_stack.cs.requests)
    # When the suspend is replayed
    again = live_stack.call("/v1/accounts/suspend", None, raw=raw, sign=False, headers=headers)
    # Then 401, no ComputeStacks request, the account still active
    assert again.status_code == 401 and again.json()["code"] == "signature_replayed"
    assert len(live_stack.cs.requests) == calls
    assert live_stack.cs.users[user_id]["active"] is True


@pytest.mark.parametrize(("route", "expected"), [
    ("/v1/accounts/suspend", ["GetItem", "PutItem"]),
    ("/v1/accounts/sso", ["GetItem", "PutItem"]),
    ("/v1/accounts/change-password", ["GetItem", "PutItem"]),
    ("/v1/accounts/overview", ["GetItem", "PutItem", "Query"]),
])
def test_each_account_action_reads_its_mapping_once(live_stack: LiveStack, route: str, expected: list[str]) -> None:
    # Given a linked account, and every DynamoDB call of the backend counted from here on
    link_account(live_stack, 504)
    calls: list[str] = []
    session = boto3._get_default_session()  # the session the routes' clients come from (built after this)
    session.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name),
                            unique_id="count-dynamodb-calls")
    try:
        reset_deps()
        # When the action is carried out
        resp = live_stack.call(route, _body(route, 504))
    finally:
        session.events.unregister("before-call.dynamodb", unique_id="count-dynamodb-calls")
    # Then its mapping was read once, beside the replay guard's one write (and the overview's ledger Query)
    assert resp.status_code == 200, resp.text
    assert sorted(calls) == expected
