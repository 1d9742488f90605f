"""Every account action through `cswhmcs serve`, checked in the sandboxes' recorded state (issue 3)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cswhmcs.api import reset_deps
from tests.conftest import LiveStack
from tests.support.live import client_details, create, params

pytestmark = pytest.mark.integration


def cs_calls(stack: LiveStack) -> int:
    return len(stack.cs.requests)


def last_body(stack: LiveStack, method: str) -> dict[str, Any]:
    for r in reversed(stack.cs.requests):
        if r["method"] == method:
            body: dict[str, Any] = r.get("json") or r.get("body") or {}
            return body
    raise AssertionError(f"no {method} request")


# --- create -------------------------------------------------------------------------------------------

def test_create_sends_everything_the_old_module_lost(live_stack: LiveStack) -> None:
    # Given a EUR client, a product with a user group, and a service whose username is an email
    group = live_stack.cs.add_user_group("pro")
    # When
    body = create(live_stack, username="Ann.Lee+cloud@example.org", configoption1=str(group["id"]),
                  clientsdetails=client_details(currency=2, currency_code="EUR"))
    # Then the ComputeStacks user has the email, currency, group, labels (integers), external id and phone
    user = live_stack.cs.users[body["cs_user_id"]]
    assert body["username"] == "ann.lee+cloud@example.org" == user["email"]
    assert user["currency"] == "EUR"
    assert user["user_group_id"] == group["id"]
    assert user["labels"]["whmcs"] == {"client_id": 7, "service_id": 42}
    assert user["external_id"] == "42"
    sent = last_body(live_stack, "POST")["user"]
    assert sent["skip_email_confirm"] is True
    assert sent["phone"] == "+1.5035550100" and sent["fname"] == "Ann" and sent["zip"] == "97201"
    assert sent["password"] == sent["password_confirmation"] == "Xy7pQ2mN4kLm"


def test_create_generates_the_login_like_the_old_module_when_the_username_is_not_an_email(
        live_stack: LiveStack) -> None:
    body = create(live_stack, serviceid=10, username="")
    host = urlsplit(live_stack.cs.url).hostname
    assert body["username"] == f"ann.lee7-10@{host}"
    body2 = create(live_stack, serviceid=11, username="Jane_Doe")
    assert body2["username"] == f"janedoe7-11@{host}" or body2["username"] == f"jane_doe7-11@{host}"


def test_create_resolves_the_currency_from_its_whmcs_id_when_no_code_is_given(live_stack: LiveStack) -> None:
    eur = next(c for c in live_stack.whmcs.currencies if c["code"] == "EUR")
    body = create(live_stack, clientsdetails=client_details(currency=eur["id"], currency_code=""))
    assert live_stack.cs.users[body["cs_user_id"]]["currency"] == "EUR"
    assert "GetCurrencies" in live_stack.whmcs.actions_called()


def test_create_with_an_email_taken_by_another_user_is_409(live_stack: LiveStack) -> None:
    live_stack.cs.add_user("taken@example.org", "Someone", "Else", external_id="999")
    resp = live_stack.call("/v1/accounts/create", {**params(username="taken@example.org"), "password": "Xy7pQ2mN4k"})
    assert resp.status_code == 409
    assert "taken@example.org" in resp.json()["message"]
    assert live_stack.tables.scan("accounts") == []


def test_create_after_a_crash_adopts_this_services_own_user(live_stack: LiveStack) -> None:
    # Given a user created by an earlier attempt whose answer was lost (no mapping stored)
    earlier = live_stack.cs.add_user("ann@example.org", "Ann", "Lee", external_id="42",
                                     labels={"whmcs": {"client_id": 7, "service_id": 42}})
    # When the create is retried
    body = create(live_stack, username="ann@example.org")
    # Then it succeeds with that user, and no second user exists
    assert body["cs_user_id"] == earlier["id"]
    assert len([u for u in live_stack.cs.users.values() if u["email"] == "ann@example.org"]) == 1


def test_create_rejected_by_computestacks_passes_its_message_on(live_stack: LiveStack) -> None:
    resp = live_stack.call("/v1/accounts/create", {**params(), "password": "short"})
    assert resp.status_code == 422
    assert "Password is too short" in resp.json()["message"]


def test_create_with_an_unknown_user_group_is_422_and_creates_nothing(live_stack: LiveStack) -> None:
    resp = live_stack.call("/v1/accounts/create", {**params(configoption1="9999"), "password": "Xy7pQ2mN4kLm"})
    assert resp.status_code == 422 and "configoption1" in resp.json()["message"]
    assert [u for u in live_stack.cs.users.values() if not u.get("is_admin")] == []


# --- suspend / unsuspend / terminate / password / package ---------------------------------------------

def test_suspend_unsuspend_terminate_toggle_active_and_never_delete(live_stack: LiveStack) -> None:
    uid = create(live_stack)["cs_user_id"]
    assert live_stack.call("/v1/accounts/suspend", params()).status_code == 200
    assert live_stack.cs.users[uid]["active"] is False
    assert live_stack.call("/v1/accounts/unsuspend", params()).status_code == 200
    assert live_stack.cs.users[uid]["active"] is True
    assert live_stack.call("/v1/accounts/terminate", params()).status_code == 200
    assert live_stack.cs.users[uid]["active"] is False
    assert uid in live_stack.cs.users
    assert not [r for r in live_stack.cs.requests if r["method"] == "DELETE"]


def test_each_mapped_action_costs_one_computestacks_call(live_stack: LiveStack) -> None:
    create(live_stack)
    group = live_stack.cs.add_user_group("big")
    live_stack.call("/v1/accounts/change-package", params(configoption1=str(group["id"])))  # warms the group cache
    for route, extra in [("/v1/accounts/suspend", {}), ("/v1/accounts/unsuspend", {}),
                         ("/v1/accounts/terminate", {}), ("/v1/accounts/change-password", {"password": "An0ther-pass"}),
                         ("/v1/accounts/change-package", {"configoption1": str(group["id"])}),
                         ("/v1/accounts/sso", {}), ("/v1/accounts/overview", {})]:
        before = cs_calls(live_stack)
        resp = live_stack.call(route, {**params(), **extra})
        assert resp.status_code == 200, (route, resp.text)
        assert cs_calls(live_stack) - before == 1, route


def test_change_password_and_package(live_stack: LiveStack) -> None:
    uid = create(live_stack)["cs_user_id"]
    assert live_stack.call("/v1/accounts/change-password", {**params(), "password": "N3w-Passw0rd"}).status_code == 200
    assert last_body(live_stack, "PATCH")["user"]["password"] == "N3w-Passw0rd"
    group = live_stack.cs.add_user_group("enterprise")
    assert live_stack.call("/v1/accounts/change-package", params(configoption1=str(group["id"]))).status_code == 200
    assert live_stack.cs.users[uid]["user_group_id"] == group["id"]


def test_change_package_to_a_missing_group_is_422_and_changes_nothing(live_stack: LiveStack) -> None:
    uid = create(live_stack)["cs_user_id"]
    before = live_stack.cs.users[uid]["user_group_id"]
    for value, status in (("", 422), ("abc", 422), ("9999", 422)):
        resp = live_stack.call("/v1/accounts/change-package", params(configoption1=value))
        assert resp.status_code == status and "configoption1" in resp.json()["message"]
    assert live_stack.cs.users[uid]["user_group_id"] == before


def test_change_password_without_a_password_is_422(live_stack: LiveStack) -> None:
    create(live_stack)
    resp = live_stack.call("/v1/accounts/change-password", params())
    assert resp.status_code == 422 and "password" in resp.json()["message"]


# --- sso, overview ------------------------------------------------------------------------------------

def test_sso_returns_a_percent_encoded_login_url_with_a_fresh_token(live_stack: LiveStack) -> None:
    create(live_stack, username="ann+cloud@example.org")
    first = live_stack.call("/v1/accounts/sso", params()).json()["redirect_url"]
    second = live_stack.call("/v1/accounts/sso", params()).json()["redirect_url"]
    parts = urlsplit(first)
    assert f"{parts.scheme}://{parts.netloc}" == live_stack.cs.url
    assert "username=ann%2Bcloud%40example.org&token=" in first
    assert parse_qs(parts.query)["username"] == ["ann+cloud@example.org"]
    assert first != second


def test_overview_in_the_accounts_currency(live_stack: LiveStack) -> None:
    # Given a EUR account with a run rate and unbilled usage in long decimals
    uid = create(live_stack, clientsdetails=client_details(currency=2, currency_code="EUR"))["cs_user_id"]
    services = {**live_stack.cs.users[uid]["services"], "deployments": 2, "container_services": 5}
    live_stack.cs.set_user_fields(uid, run_rate="12.3", services=services)
    for total in ("0.02054795", "1.00000001", "3.5"):
        live_stack.cs.add_usage(uid, product_name="containerm", subscription_product_id=1, total=total, qty="1",
                                period_start="2026-11-01T00:00:00Z", period_end="2026-11-01T03:00:00Z")
    # When
    body = live_stack.call("/v1/accounts/overview", params()).json()
    # Then
    assert body["result"] == "success"
    assert body["currency"] == "EUR" and body["currency_symbol"] == "€"
    assert body["run_rate"] == "12.30" and body["run_rate_display"] == "€12.30"
    assert body["current_usage"] == "4.52" and body["current_usage_display"] == "€4.52"
    assert body["projects"] == 2 and body["services"] == 5
    assert body["active"] is True and body["cs_user_id"] == uid


# --- finding accounts ---------------------------------------------------------------------------------

def test_an_imported_account_is_found_by_username_and_gets_its_mapping(live_stack: LiveStack) -> None:
    # Given a user that exists only in ComputeStacks (imported by the Server Sync Tool)
    user = live_stack.cs.add_user("old.customer@example.org", "Old", "Customer")
    # When WHMCS suspends its service (username = the email)
    resp = live_stack.call("/v1/accounts/suspend", params(serviceid=77, username="old.customer@example.org"))
    # Then the user is suspended, linked, and the mapping is written
    assert resp.status_code == 200, resp.text
    stored = live_stack.cs.users[user["id"]]
    assert stored["active"] is False
    assert stored["labels"]["whmcs"]["service_id"] == 77 and stored["external_id"] == "77"
    assert [int(m["cs_user_id"]) for m in live_stack.tables.scan("accounts")] == [user["id"]]
    # And the find_by_email lookup used standard base64
    lookup = next(r for r in live_stack.cs.requests if "find_by_email" in (r.get("query") or {}))
    assert base64.b64encode(b"old.customer@example.org").decode().rstrip("=") in lookup["path"].replace("%3D", "=")


def test_an_account_is_found_by_external_id_then_by_label(live_stack: LiveStack) -> None:
    by_ext = live_stack.cs.add_user("x1@example.org", "X", "One", external_id="501")
    by_label = live_stack.cs.add_user("x2@example.org", "X", "Two",
                                      labels={"whmcs": {"client_id": 7, "service_id": 502}})
    assert live_stack.call("/v1/accounts/suspend", params(serviceid=501)).status_code == 200
    assert live_stack.call("/v1/accounts/suspend", params(serviceid=502)).status_code == 200
    assert live_stack.cs.users[by_ext["id"]]["active"] is False
    assert live_stack.cs.users[by_label["id"]]["active"] is False


def test_a_user_whose_external_id_names_another_service_is_never_taken_by_email(live_stack: LiveStack) -> None:
    # Given a legacy user (no whmcs label) whose external id says it belongs to service 42
    other = live_stack.cs.add_user("owner42@example.org", "Owner", "FortyTwo", external_id="42")
    # When service 3 is suspended with that email as its username
    resp = live_stack.call("/v1/accounts/suspend", params(serviceid=3, username="owner42@example.org"))
    # Then nothing is found for service 3, and service 42's user is untouched and not relinked
    assert resp.status_code == 404, resp.text
    stored = live_stack.cs.users[other["id"]]
    assert stored["active"] is True and stored["external_id"] == "42"
    assert live_stack.tables.scan("accounts") == []


def test_a_service_without_an_account_is_404_with_a_clear_message(live_stack: LiveStack) -> None:
    resp = live_stack.call("/v1/accounts/overview", params(serviceid=404))
    assert resp.status_code == 404
    assert "service #404" in resp.json()["message"]


# --- sync tool, user groups -----------------------------------------------------------------------------

def test_list_returns_every_non_admin_user_across_pages(live_stack: LiveStack) -> None:
    # Given 75 users (more than ComputeStacks' default page of 30) and an admin
    group = live_stack.cs.add_user_group("sync")
    for i in range(75):
        live_stack.cs.add_user(f"user{i:02d}@example.org", f"F{i}", f"L{i:02d}", user_group_id=group["id"],
                               active=(i % 5 != 0))
    live_stack.cs.add_user("admin@example.org", "Ad", "Min", is_admin=True)
    # When
    resp = live_stack.call("/v1/accounts/list", {})
    # Then
    accounts = resp.json()["accounts"]
    assert len(accounts) == 75
    assert {a["email"] for a in accounts} == {f"user{i:02d}@example.org" for i in range(75)}
    a0 = next(a for a in accounts if a["email"] == "user00@example.org")
    assert a0["status"] == "Suspended" and a0["product"] == str(group["id"])
    assert a0["username"] == a0["uniqueIdentifier"] == "user00@example.org"
    assert all(isinstance(v, str) for a in accounts for v in a.values())
    import re

    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", a["created"]) for a in accounts)
    assert len([r for r in live_stack.cs.requests if r["path"].endswith("/admin/users")]) <= 2


def test_user_groups_lists_every_group(live_stack: LiveStack) -> None:
    made = [live_stack.cs.add_user_group(f"group-{i}") for i in range(40)]
    groups = live_stack.call("/v1/user-groups", {}).json()["groups"]
    for g in made:
        assert groups[str(g["id"])] == g["name"]


# --- connection test and upstream errors ----------------------------------------------------------------

def reconfigure(stack: LiveStack, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_deps()


def test_connection_test_names_the_side_and_the_reason(live_stack: LiveStack,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(live_stack, monkeypatch, CS_API_SECRET="wrong-secret")
    resp = live_stack.call("/v1/connection/test", {})
    assert resp.status_code == 502
    msg = resp.json()["message"]
    assert "ComputeStacks" in msg and "credentials" in msg and "WHMCS: OK" in msg
    assert "wrong-secret" not in resp.text

    reconfigure(live_stack, monkeypatch, CS_API_SECRET=live_stack.cs.api_secret,
                WHMCS_API_URL="http://127.0.0.1:9/includes/api.php")
    resp = live_stack.call("/v1/connection/test", {})
    assert resp.status_code == 504
    assert "WHMCS: unreachable" in resp.json()["message"] and "ComputeStacks: OK" in resp.json()["message"]


def test_computestacks_credential_failure_is_502_with_the_documented_message(
        live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    create(live_stack)
    reconfigure(live_stack, monkeypatch, CS_API_KEY="nobody")
    resp = live_stack.call("/v1/accounts/suspend", params())
    assert resp.status_code == 502
    assert resp.json()["message"].startswith("ComputeStacks rejected the API credentials")


def test_computestacks_5xx_is_502_and_a_timeout_is_504(live_stack: LiveStack,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    create(live_stack)
    live_stack.cs.fail_next(10, status=503)
    resp = live_stack.call("/v1/accounts/suspend", params())
    assert resp.status_code == 502 and "ComputeStacks" in resp.json()["message"]
    live_stack.cs.fail_next(0)
    reconfigure(live_stack, monkeypatch, CS_TIMEOUT="0.3")
    live_stack.cs.latency = 0.6
    resp = live_stack.call("/v1/accounts/overview", params())
    live_stack.cs.latency = 0
    assert resp.status_code == 504 and "ComputeStacks" in resp.json()["message"]
    assert "Traceback" not in resp.text


def test_list_can_be_paged_one_computestacks_page_per_answer(live_stack: LiveStack) -> None:
    # Given 75 users
    for i in range(75):
        live_stack.cs.add_user(f"p{i:02d}@example.org", f"F{i}", f"L{i:02d}")
    # When the list is asked page by page
    seen: list[str] = []
    page: int | None = 1
    answers = 0
    while page is not None:
        before = len(live_stack.cs.requests)
        body = live_stack.call("/v1/accounts/list", {"page": page, "page_size": 30}).json()
        assert len(live_stack.cs.requests) - before == 1  # one ComputeStacks request per answer
        assert body["page"] == page
        seen += [a["email"] for a in body["accounts"]]
        page = body["next_page"]
        answers += 1
    # Then every user came exactly once, in three answers
    assert answers == 3
    assert sorted(seen) == sorted(f"p{i:02d}@example.org" for i in range(75))
    # And a bad page size is refused, naming the field
    resp = live_stack.call("/v1/accounts/list", {"page": 1, "page_size": 50_000})
    assert resp.status_code == 422 and "page_size" in resp.json()["message"]
