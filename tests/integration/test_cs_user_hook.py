"""POST /v1/hooks/cs-user through `cswhmcs serve` and the sandboxes (API.md section 3, issue 12 section 2):
token-authenticated, trusts only ``user.id``, reads the user back, and the WHMCS service username follows."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from cswhmcs.api import reset_deps
from tests.conftest import LiveStack
from tests.security.capture import SecretsRegistry
from tests.support.live import client_details, params
from tests.support.logs import LogCollector, emitted

__all__ = ["emitted"]  # the fixture (tests/support/logs.py), used by name

pytestmark = pytest.mark.integration

ROUTE = "/v1/hooks/cs-user"
TOKEN = "cs-hook-token-9f2c41d7e8"  # noqa: S105 - a test-only token


@pytest.fixture
def stack(live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch, secrets_registry: SecretsRegistry
          ) -> LiveStack:
    """The live stack with CS_WEBHOOK_TOKEN set (the secrets capture scans every log line for it)."""
    secrets_registry.register(TOKEN, "CS_WEBHOOK_TOKEN")
    monkeypatch.setenv("CS_WEBHOOK_TOKEN", TOKEN)
    reset_deps()
    return live_stack


def hook_url(stack: LiveStack, token: str | None = TOKEN) -> str:
    return stack.url + ROUTE + ("" if token is None else f"?token={token}")


def post(stack: LiveStack, body: Any, *, token: str | None = TOKEN) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(hook_url(stack, token), content=raw, timeout=30,
                      headers={"Content-Type": "application/json; charset=UTF-8", "Accept": "application/json"})


def linked_account(stack: LiveStack, email: str = "ann.lee@example.org") -> dict[str, Any]:
    """A WHMCS service whose username is ``email`` and its ComputeStacks user, created through the API (so
    the user carries the service's link and the mapping is written)."""
    client = stack.whmcs.add_client("Ann", "Lee", "ann.billing@example.org")
    product = stack.whmcs.add_product("Cloud Account")
    service = stack.whmcs.add_service(client["id"], product["id"], username=email)
    resp = stack.call("/v1/accounts/create", {
        **params(service["id"], userid=client["id"], username=email,
                 clientsdetails=client_details(client_id=client["id"], userid=client["id"])),
        "password": "Xy7pQ2mN4kLm"})
    assert resp.status_code == 200, resp.text
    stack.whmcs.reset_requests()
    return {"service_id": service["id"], "cs_user_id": resp.json()["cs_user_id"], "email": email}


def mapping(stack: LiveStack, service_id: int) -> dict[str, Any]:
    item: dict[str, Any] = stack.tables.resource().Table(stack.tables.accounts).get_item(
        Key={"service_id": service_id})["Item"]
    return item


def username(stack: LiveStack, service_id: int) -> str:
    return str(stack.whmcs.service(service_id)["username"])


def shown(stack: LiveStack, user_id: int) -> dict[str, Any]:
    """ComputeStacks' own rendering of the user, as its webhook posts it."""
    body: dict[str, Any] = httpx.get(f"{stack.cs.url}/api/admin/users/{user_id}",
                                     auth=(stack.cs.api_key, stack.cs.api_secret), timeout=10).json()
    return body


# --- authentication ---------------------------------------------------------------------------------------

def test_no_token_a_wrong_token_or_none_configured_is_401_and_writes_nothing(
        live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch, secrets_registry: SecretsRegistry) -> None:
    # Given a linked account whose email changed in ComputeStacks
    acct = linked_account(live_stack)
    live_stack.cs.set_user_fields(acct["cs_user_id"], email="ann.new@example.org")
    body = shown(live_stack, acct["cs_user_id"])
    # When CS_WEBHOOK_TOKEN is unset, every request is refused, even one carrying a token
    monkeypatch.delenv("CS_WEBHOOK_TOKEN", raising=False)
    reset_deps()
    unset = [post(live_stack, body, token=t) for t in (None, "", TOKEN)]
    # And with it set, no token, an empty, a wrong and a longer token are refused
    secrets_registry.register(TOKEN, "CS_WEBHOOK_TOKEN")
    monkeypatch.setenv("CS_WEBHOOK_TOKEN", TOKEN)
    reset_deps()
    refused = [post(live_stack, body, token=t) for t in (None, "", "wrong-token-value", TOKEN + "x", TOKEN[:-1])]
    # even when the body is not JSON at all (the token is checked before the body is read)
    refused.append(post(live_stack, b"not json", token="wrong-token-value"))
    # Then each is 401 in the error shape, saying why
    assert [r.status_code for r in unset + refused] == [401] * 9
    assert {r.json()["code"] for r in unset} == {"webhook_token_not_configured"}
    assert [r.json()["code"] for r in refused] == ["webhook_token_missing"] * 2 + ["webhook_token_invalid"] * 4
    assert all(r.json()["result"] == "error" and TOKEN not in r.text for r in unset + refused)
    # And nothing was read or written: WHMCS saw no request, the username and the mapping are unchanged
    assert live_stack.whmcs.actions_called() == []
    assert username(live_stack, acct["service_id"]) == "ann.lee@example.org"
    assert mapping(live_stack, acct["service_id"])["email"] == "ann.lee@example.org"
    # And the right token is accepted (the same body)
    assert post(live_stack, body).json() == {"result": "success", "updated": True}


# --- ComputeStacks wins -----------------------------------------------------------------------------------

def test_the_body_is_not_trusted_only_the_user_id_computestacks_wins(stack: LiveStack) -> None:
    # Given a linked account whose email changed in ComputeStacks
    acct = linked_account(stack)
    stack.cs.set_user_fields(acct["cs_user_id"], email="ann.renamed@example.org")
    # When a delivery claims another email (and another service)
    forged = {"user": {"id": acct["cs_user_id"], "email": "mallory@evil.example",
                       "labels": {"whmcs": {"service_id": 999}}, "external_id": "999"}}
    resp = post(stack, forged)
    # Then the username is what ComputeStacks holds, and the mapping's email follows
    assert resp.status_code == 200 and resp.json() == {"result": "success", "updated": True}
    assert username(stack, acct["service_id"]) == "ann.renamed@example.org"
    assert mapping(stack, acct["service_id"])["email"] == "ann.renamed@example.org"
    update = [r for r in stack.whmcs.requests if r["action"] == "UpdateClientProduct"]
    assert [(r["params"]["serviceid"], r["params"]["serviceusername"]) for r in update] == [
        (str(acct["service_id"]), "ann.renamed@example.org")]
    # And the same delivery again changes nothing more
    assert post(stack, forged).json() == {"result": "success", "updated": False}


def test_deliveries_in_reverse_order_converge_on_what_computestacks_holds(stack: LiveStack) -> None:
    # Given two changes, the second one's delivery arriving first
    acct = linked_account(stack)
    stack.cs.set_user_fields(acct["cs_user_id"], email="ann.first@example.org")
    first = shown(stack, acct["cs_user_id"])
    stack.cs.set_user_fields(acct["cs_user_id"], email="ann.second@example.org")
    second = shown(stack, acct["cs_user_id"])
    # When they arrive newest first
    answers = [post(stack, second).json(), post(stack, first).json()]
    # Then the newest email stays: the late, stale delivery changed nothing
    assert answers == [{"result": "success", "updated": True}, {"result": "success", "updated": False}]
    assert username(stack, acct["service_id"]) == "ann.second@example.org"
    assert mapping(stack, acct["service_id"])["email"] == "ann.second@example.org"
    assert [r["params"]["serviceusername"] for r in stack.whmcs.requests if r["action"] == "UpdateClientProduct"] \
        == ["ann.second@example.org"]


def test_a_change_that_races_the_delivery_is_applied_too(stack: LiveStack) -> None:
    # Given a delivery whose WHMCS update is slow to answer, and another change made in ComputeStacks meanwhile
    import threading

    acct = linked_account(stack)
    stack.cs.set_user_fields(acct["cs_user_id"], email="ann.older@example.org")
    stack.whmcs.timeout_after_commit_next(1, delay=1.0, actions=["UpdateClientProduct"])

    def change_while_whmcs_holds_its_answer() -> None:
        # The other change is made once WHMCS has the delivery's update (it then holds its answer for 1 s), not
        # after a fixed time: a slow machine cannot move it before the delivery's first read
        waited = time.monotonic() + 20
        while not any(r["action"] == "UpdateClientProduct" for r in stack.whmcs.requests):
            if time.monotonic() > waited:
                return
            time.sleep(0.005)
        stack.cs.set_user_fields(acct["cs_user_id"], email="ann.newer@example.org")

    racer = threading.Thread(target=change_while_whmcs_holds_its_answer)
    racer.start()
    # When the delivery (which read the older email) finishes
    resp = post(stack, {"user": {"id": acct["cs_user_id"]}})
    racer.join()
    # Then it read the user again after writing and applied the newer email as well: nothing older is left
    assert resp.json() == {"result": "success", "updated": True}
    assert [r["params"]["serviceusername"] for r in stack.whmcs.requests if r["action"] == "UpdateClientProduct"] \
        == ["ann.older@example.org", "ann.newer@example.org"]
    assert username(stack, acct["service_id"]) == "ann.newer@example.org"
    assert mapping(stack, acct["service_id"])["email"] == "ann.newer@example.org"


def test_an_unknown_or_unlinked_user_is_success_updated_false(stack: LiveStack) -> None:
    # Given a ComputeStacks user without a WHMCS link, and one whose link names a service without a mapping
    loner = stack.cs.add_user("walk.in@example.org", "Walk", "In")
    claims = stack.cs.add_user("claims@example.org", "Claims", "Service", external_id="77",
                               labels={"whmcs": {"service_id": 77}})
    # When deliveries name them, and a user ComputeStacks does not have
    answers = [post(stack, {"user": {"id": uid}}) for uid in (loner["id"], claims["id"], 987654)]
    # Then each is a success that updated nothing, and WHMCS was not asked to change anything
    assert [(r.status_code, r.json()) for r in answers] == [(200, {"result": "success", "updated": False})] * 3
    assert "UpdateClientProduct" not in stack.whmcs.actions_called()


def test_a_user_whose_link_names_another_users_service_is_not_applied(stack: LiveStack) -> None:
    # Given Ann's account, and another ComputeStacks user carrying Ann's service id
    acct = linked_account(stack)
    other = stack.cs.add_user("other@example.org", "Other", "User", external_id=str(acct["service_id"]),
                              labels={"whmcs": {"service_id": acct["service_id"]}})
    # When the other user's delivery arrives
    resp = post(stack, {"user": {"id": other["id"]}})
    # Then the mapping (Ann's user) disagrees: nothing changes
    assert resp.json() == {"result": "success", "updated": False}
    assert username(stack, acct["service_id"]) == "ann.lee@example.org"


# --- ComputeStacks' own deliveries (the sandbox's webhook_users) ------------------------------------------

def test_an_email_changed_in_computestacks_reaches_whmcs_within_seconds(stack: LiveStack) -> None:
    # Given ComputeStacks' webhook_users setting pointing at the route
    acct = linked_account(stack)
    stack.cs.webhook_users_url = hook_url(stack)
    # When the customer changes their email in the ComputeStacks UI
    stack.cs.update_user_in_ui(acct["cs_user_id"], email="Ann.Moved@Example.org")
    # Then the webhook reached the backend, and the WHMCS username and the mapping follow
    assert stack.cs.wait_for_webhooks(5)
    assert [(d["attempt"], d["status"]) for d in stack.cs.webhook_deliveries] == [(0, 200)]
    assert username(stack, acct["service_id"]) == "ann.moved@example.org"
    assert mapping(stack, acct["service_id"])["email"] == "ann.moved@example.org"
    # And a change that does not touch the email reaches the route too, and changes nothing in WHMCS
    stack.cs.update_user_in_ui(acct["cs_user_id"], fname="Annie")
    assert stack.cs.wait_for_webhooks(5)
    assert [d["status"] for d in stack.cs.webhook_deliveries] == [200, 200]
    assert [r["action"] for r in stack.whmcs.requests].count("UpdateClientProduct") == 1


def test_whmcs_down_is_502_so_computestacks_retries_and_the_retry_applies_it(stack: LiveStack) -> None:
    # Given WHMCS failing the username update once, and ComputeStacks retrying quickly
    acct = linked_account(stack)
    stack.cs.webhook_users_url = hook_url(stack)
    stack.cs.webhook_users_retry_delays = (0.05, 0.05)
    stack.whmcs.fail_next(1, status=500, actions=["UpdateClientProduct"])
    # When the email changes in ComputeStacks
    stack.cs.update_user_in_ui(acct["cs_user_id"], email="ann.retry@example.org")
    # Then the first delivery got 502, the retry 200, and WHMCS holds the new username
    assert stack.cs.wait_for_webhooks(5)
    assert [(d["attempt"], d["status"]) for d in stack.cs.webhook_deliveries] == [(0, 502), (1, 200)]
    assert username(stack, acct["service_id"]) == "ann.retry@example.org"
    assert mapping(stack, acct["service_id"])["email"] == "ann.retry@example.org"
    # And WHMCS unreachable for reads is 502 as well, with the error shape
    stack.whmcs.fail_next(10, status=503, actions=["GetClientsProducts"])
    resp = post(stack, {"user": {"id": acct["cs_user_id"]}})
    assert resp.status_code == 502 and resp.json()["result"] == "error"
    stack.whmcs.clear_faults()


def test_computestacks_failing_is_502_and_nothing_is_written(stack: LiveStack) -> None:
    acct = linked_account(stack)
    stack.cs.set_user_fields(acct["cs_user_id"], email="ann.cs-down@example.org")
    stack.cs.fail_next(10, status=500)
    resp = post(stack, {"user": {"id": acct["cs_user_id"]}})
    stack.cs.clear_faults()
    assert resp.status_code == 502 and resp.json()["result"] == "error"
    assert stack.whmcs.actions_called() == []
    assert mapping(stack, acct["service_id"])["email"] == "ann.lee@example.org"


# --- what ComputeStacks 9.3.1 really sends: no body ------------------------------------------------------

def test_an_empty_body_is_a_clear_400_no_user_id_counted_and_logged(stack: LiveStack, emitted: LogCollector
                                                                     ) -> None:
    # Given ComputeStacks 9.3.1's behaviour: webhook_users posted without a body
    acct = linked_account(stack)
    stack.cs.webhook_users_url = hook_url(stack)
    stack.cs.webhook_users_retry_delays = ()
    stack.cs.webhook_users_body = "empty"
    # When the email changes
    stack.cs.update_user_in_ui(acct["cs_user_id"], email="ann.nobody@example.org")
    assert stack.cs.wait_for_webhooks(5)
    # Then the delivery is refused with 400, and nothing was changed
    assert [d["status"] for d in stack.cs.webhook_deliveries] == [400]
    assert username(stack, acct["service_id"]) == "ann.lee@example.org"
    # And the answer says why, for an empty body as for a body without user.id; other bad ids are 422
    for body in (b"", b"{}", {"user": {}}, {"user": {"email": "x@example.org"}}, {"user": None}):
        resp = post(stack, body)
        assert (resp.status_code, resp.json()["code"]) == (400, "no_user_id"), body
        assert "no user id" in resp.json()["message"]
    for bad in ("12", 0, -3, 1.5, True, [1], 10**30):
        resp = post(stack, {"user": {"id": bad}})
        assert (resp.status_code, resp.json()["code"]) == (422, "invalid_field"), bad
    assert post(stack, [1]).status_code == 400  # not an object
    # And each such delivery is logged as one (the metric UserWebhooksWithoutUserId counts them)
    warnings = [json.loads(line) for line in emitted.lines if "users webhook without a user id" in line]
    assert len(warnings) == 6
    assert stack.whmcs.actions_called() == []


# --- logs ------------------------------------------------------------------------------------------------

def test_the_token_never_appears_in_a_log_line(stack: LiveStack, emitted: LogCollector,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    # Given successful, refused and failing deliveries
    acct = linked_account(stack)
    stack.cs.set_user_fields(acct["cs_user_id"], email="ann.logs@example.org")
    post(stack, {"user": {"id": acct["cs_user_id"]}})
    post(stack, {"user": {"id": acct["cs_user_id"]}}, token=TOKEN + "-wrong")
    post(stack, b"", token=TOKEN)
    stack.whmcs.fail_next(1, status=500)
    post(stack, {"user": {"id": acct["cs_user_id"]}})
    # When we read everything that was logged
    out, err = capfd.readouterr()
    logged = out + err + "\n".join(emitted.lines) + "\n".join(stack.log_lines)
    # Then one request line per request names the route and the user, never the token or the query string
    lines = [json.loads(line) for line in emitted.lines if '"message":"request"' in line]
    assert [(r["route"], r["status"]) for r in lines if r["route"] == ROUTE][-4:] == [
        (ROUTE, 200), (ROUTE, 401), (ROUTE, 400), (ROUTE, 200)]
    assert lines[-1]["cs_user_id"] == acct["cs_user_id"]
    assert f"POST {ROUTE} -> 401" in "\n".join(stack.log_lines)
    assert TOKEN not in logged and "token=" not in logged


# --- schema fuzz (the committed OpenAPI document, as tests/security/test_schema_fuzz.py does for signed routes) --

def test_schema_fuzz_with_the_token_never_5xx_nor_401_and_answers_as_documented(stack: LiveStack) -> None:
    import requests

    from tests.support.fuzz import fuzz_operation, operations

    class WithToken(requests.auth.AuthBase):
        """The route's security scheme (apiKey ``token`` in the query), added to whatever was generated."""

        sent = 0

        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.prepare_url(r.url, {"token": TOKEN})
            WithToken.sent += 1
            return r

    # Given a linked account (so some generated user ids are found) and the route's operation
    linked_account(stack)
    op = operations()[ROUTE]
    # When its examples are sent, each with the token; Then none is refused and every answer is as documented
    fuzz_operation(op, stack.url, WithToken(), examples=25, refused="a request with the token")
    assert WithToken.sent >= 12
