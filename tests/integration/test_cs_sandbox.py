"""ComputeStacksClient against the ComputeStacks sandbox over loopback (a real HTTP server)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs.adapters.computestacks import ComputeStacksClient, UserSelector
from cswhmcs.errors import (
    NotFound,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from sandboxes.computestacks import ComputeStacksSandbox, seed_demo

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json"}


@pytest.fixture
def sandbox() -> Iterator[ComputeStacksSandbox]:
    with ComputeStacksSandbox() as sb:
        yield sb


def make_client(sb: ComputeStacksSandbox, **kwargs: Any) -> ComputeStacksClient:
    kwargs.setdefault("sleep", lambda _s: None)
    kwargs.setdefault("timeout", 2.0)
    return ComputeStacksClient(sb.url, sb.api_key, sb.api_secret, **kwargs)


@pytest.fixture
def client(sandbox: ComputeStacksSandbox) -> Iterator[ComputeStacksClient]:
    with make_client(sandbox) as c:
        yield c


def raw(sb: ComputeStacksSandbox, method: str, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", JSON)
    kwargs.setdefault("auth", (sb.api_key, sb.api_secret))
    return httpx.request(method, sb.url + path, **kwargs)


def new_user(**overrides: Any) -> dict[str, Any]:
    fields = {"fname": "Jane", "lname": "Doe", "email": "jane.doe3-10@cs.example.com", "password": "s3cretpass",
              "password_confirmation": "s3cretpass", "skip_email_confirm": True, "external_id": "10",
              "currency": "EUR", "merge_labels": {"whmcs": {"client_id": 3, "service_id": 10}}}
    fields.update(overrides)
    return fields


# ---------------------------------------------------------------------------- users


def test_create_show_patch_round_trip(sandbox: ComputeStacksSandbox, client: ComputeStacksClient) -> None:
    # Given a group and an empty installation
    group = sandbox.add_user_group("pro")
    # When a user is created in that group
    created = client.create_user(new_user(user_group_id=group["id"]))
    # Then the create body carries what the integration needs
    assert created["email"] == "jane.doe3-10@cs.example.com"
    assert created["external_id"] == "10"
    assert created["currency"] == "EUR" and created["currency_symbol"] == "€"
    assert created["labels"] == {"whmcs": {"client_id": 3, "service_id": 10}}
    assert created["user_group_id"] == group["id"]
    assert isinstance(created["auth_token"], str) and "services" not in created
    assert sandbox.user(created["id"])["password"] == "s3cretpass"  # type: ignore[index]

    # When it is shown with its balance
    shown = client.get_user(UserSelector.by_id(created["id"]), include_balance=True)
    # Then the show body has services, run_rate (integer 0: no subscriptions), group and plan
    assert shown is not None
    assert shown["services"]["deployments"] == 0 and shown["services"]["container_services"] == 0
    assert shown["run_rate"] == 0
    assert shown["unprocessed_usage"] == "0.0"
    assert shown["user_group"] == {"id": group["id"], "name": "pro"}
    assert shown["billing_plan"] == {"id": 1, "name": "default"}

    # When it is suspended and its labels merged
    patched = client.update_user(UserSelector.by_id(created["id"]),
                                 {"active": False, "merge_labels": {"cpanel": {"srv": "jane"}}, "password": ""})
    # Then the PATCH answers the show body without the balance; other labels and the password survive
    assert patched is not None
    assert patched["active"] is False
    assert patched["labels"] == {"whmcs": {"client_id": 3, "service_id": 10}, "cpanel": {"srv": "jane"}}
    assert "unprocessed_usage" not in patched and "services" in patched
    assert sandbox.user(created["id"])["password"] == "s3cretpass"  # type: ignore[index]


def test_every_lookup_finds_the_same_user(sandbox: ComputeStacksSandbox, client: ComputeStacksClient) -> None:
    # Given a user with an external id and integer whmcs labels
    created = client.create_user(new_user(email="Mixed.Case+tag@Example.com"))
    # When it is looked up by id, email (any case), external id and both labels
    found = [
        client.get_user(UserSelector.by_id(created["id"])),
        client.get_user(UserSelector.by_email("MIXED.case+TAG@example.COM")),
        client.get_user(UserSelector.by_external_id("10")),
        client.get_user(UserSelector.by_external_id(10)),
        client.get_user(UserSelector.by_label_service_id(10)),
        client.get_user(UserSelector.by_label_client_id(3)),
    ]
    # Then each finds it
    assert [u["id"] if u else None for u in found] == [created["id"]] * 6
    # And the email was stored lower-cased, so the lower-cased Base64 lookup is the one that works
    assert created["email"] == "mixed.case+tag@example.com"


def test_lookup_misses_are_404_with_empty_body_and_none(sandbox: ComputeStacksSandbox,
                                                         client: ComputeStacksClient) -> None:
    # Given a user whose labels hold the ids as strings (not matched by find_by_label)
    sandbox.add_user("str@example.com", "S", "Tr", external_id="77",
                     labels={"whmcs": {"client_id": "5", "service_id": "77"}})
    # When the label lookup and an unknown email are tried
    by_label = client.get_user(UserSelector.by_label_service_id(77))
    by_email = client.get_user(UserSelector.by_email("nobody@example.com"))
    response = raw(sandbox, "GET", "/api/admin/users/77?find_by_label=whmcs_service_id")
    # Then both miss: 404 with an empty body, which the client reports as None
    assert by_label is None and by_email is None
    assert response.status_code == 404 and response.content == b""
    # And the external id still finds it
    assert client.get_user(UserSelector.by_external_id(77)) is not None


def test_label_lookup_takes_precedence_over_external_id(sandbox: ComputeStacksSandbox) -> None:
    # Given user A with external id "10" and user B labelled service 10
    a = sandbox.add_user("a@example.com", "A", "A", external_id="10")
    b = sandbox.add_user("b@example.com", "B", "B", labels={"whmcs": {"service_id": 10, "client_id": 1}})
    # When both flags are sent
    response = raw(sandbox, "GET", "/api/admin/users/10?find_by_external_id=1&find_by_label=whmcs_service_id")
    # Then the label wins
    assert response.json()["user"]["id"] == b["id"] != a["id"]


def test_duplicate_email_is_rejected_once_per_message(sandbox: ComputeStacksSandbox,
                                                       client: ComputeStacksClient) -> None:
    # Given an existing user
    client.create_user(new_user())
    # When another is created with the same email in another case
    with pytest.raises(UpstreamRejected) as caught:
        client.create_user(new_user(email="JANE.DOE3-10@CS.EXAMPLE.COM", external_id="11"))
    # Then the duplicate message is passed on once (ComputeStacks says it twice)
    assert caught.value.messages == ["Email has already been taken"]
    assert caught.value.message == "ComputeStacks rejected the request: Email has already been taken."
    body = raw(sandbox, "POST", "/api/admin/users", json={"user": new_user()}).json()
    assert body == {"errors": ["Email has already been taken", "Email has already been taken"]}


def test_validation_messages(client: ComputeStacksClient) -> None:
    # Given a create with blank names, a bad email and a short mismatched password
    fields = new_user(fname=" ", lname="", email="not an email", password="short", password_confirmation="other")
    # When it is sent
    with pytest.raises(UpstreamRejected) as caught:
        client.create_user(fields)
    # Then every Rails message comes back, in Rails' order, with no password in them
    assert caught.value.messages == ["Email is invalid", "Password confirmation doesn't match Password",
                                     "Password is too short (minimum is 8 characters)", "Fname can't be blank",
                                     "Lname can't be blank"]
    assert "other" not in caught.value.message


def test_missing_user_object(sandbox: ComputeStacksSandbox) -> None:
    # Given a create whose user is null
    # When it is sent
    response = raw(sandbox, "POST", "/api/admin/users", json={"user": None})
    # Then ComputeStacks says so
    assert (response.status_code, response.json()) == (422, {"errors": ["Missing User Object"]})


def test_flat_body_is_wrapped_but_loses_password_and_labels(sandbox: ComputeStacksSandbox) -> None:
    # Given a create without the "user" wrapper (Rails' ParamsWrapper keeps only column names)
    body = {k: v for k, v in new_user().items() if k not in ("password", "password_confirmation")}
    # When it is sent
    response = raw(sandbox, "POST", "/api/admin/users", json=body)
    # Then the user exists, but merge_labels and skip_email_confirm were silently dropped
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["labels"] == {} and user["confirmed_at"] is None


@pytest.mark.parametrize(("sent", "stored"), [("EUR", "EUR"), ("eur", "USD"), ("JPY", "USD"), (None, "USD"),
                                               ("GBP", "GBP")])
def test_currency_outside_the_price_currencies_silently_becomes_the_default(client: ComputeStacksClient,
                                                                            sent: str | None, stored: str) -> None:
    # Given price currencies USD, EUR, GBP (default USD)
    # When a user is created with a currency
    user = client.create_user(new_user(currency=sent))
    # Then an unknown or lower-case one is replaced by the default, never rejected
    assert user["currency"] == stored


def test_nonexistent_user_group_falls_back_to_the_default(client: ComputeStacksClient) -> None:
    # Given no group 999
    # When a user is created in it
    user = client.create_user(new_user(user_group_id=999))
    # Then it lands in the default group
    assert user["user_group_id"] == 1


def test_blank_password_is_generated(sandbox: ComputeStacksSandbox, client: ComputeStacksClient) -> None:
    # Given a create without a password
    # When it is sent
    user = client.create_user(new_user(password="", password_confirmation=""))
    # Then ComputeStacks made one up
    assert len(sandbox.user(user["id"])["password"]) == 16  # type: ignore[index]


def test_patch_duplicate_email_and_password_rules(sandbox: ComputeStacksSandbox,
                                                  client: ComputeStacksClient) -> None:
    # Given two users
    sandbox.add_user("taken@example.com", "T", "Aken")
    user = client.create_user(new_user())
    sel = UserSelector.by_id(user["id"])
    # When one takes the other's email, or a short password
    with pytest.raises(UpstreamRejected) as dup:
        client.update_user(sel, {"email": "Taken@example.com"})
    with pytest.raises(UpstreamRejected) as short:
        client.update_user(sel, {"password": "abc"})
    # Then both are refused with Rails' messages and nothing changed
    assert dup.value.messages == ["Email has already been taken"]
    assert short.value.messages == ["Password is too short (minimum is 8 characters)"]
    assert sandbox.user(user["id"])["email"] == "jane.doe3-10@cs.example.com"  # type: ignore[index]
    # And a good new password is applied
    client.update_user(sel, {"password": "n3w-passw0rd"})
    assert sandbox.user(user["id"])["password"] == "n3w-passw0rd"  # type: ignore[index]


def test_delete_and_suspension_endpoints(sandbox: ComputeStacksSandbox) -> None:
    # Given a user
    user = sandbox.add_user("gone@example.com", "G", "One")
    # When it is suspended, unsuspended and deleted
    suspended = raw(sandbox, "POST", f"/api/admin/users/{user['id']}/suspension")
    after_suspend = sandbox.user(user["id"])["active"]  # type: ignore[index]
    unsuspended = raw(sandbox, "DELETE", f"/api/admin/users/{user['id']}/suspension")
    deleted = raw(sandbox, "DELETE", f"/api/admin/users/{user['id']}")
    again = raw(sandbox, "DELETE", f"/api/admin/users/{user['id']}")
    # Then the statuses and bodies are ComputeStacks'
    assert (suspended.status_code, suspended.json(), after_suspend) == (202, {}, False)
    assert (unsuspended.status_code, unsuspended.json()) == (202, {})
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (again.status_code, again.content) == (404, b"")
    assert sandbox.user(user["id"]) is None


# ---------------------------------------------------------------------------- lists


def test_pagination_of_75_users_follows_every_page() -> None:
    # Given 75 users (no admin) created in scrambled name order
    with ComputeStacksSandbox(with_admin_user=False) as sb, make_client(sb) as c:
        for i in range(75):
            n = (i * 37) % 75
            sb.add_user(f"user{n:02d}@example.com", f"F{n:02d}", f"L{n % 5}")
        sb.reset_requests()
        # When they are listed 7 per page
        users = list(c.iter_users(per_page=7))
        # Then all 75 arrive once, sorted by lower(lname), lower(fname), from ceil(75/7) = 11 requests
        assert len(users) == 75 == len({u["id"] for u in users})
        assert [(u["lname"], u["fname"]) for u in users] == sorted((u["lname"], u["fname"]) for u in users)
        assert [r["query"]["page"] for r in sb.requests] == [str(p) for p in range(1, 12)]
        assert c.request_count == 11


def test_pagination_headers_are_api_paginations(sandbox: ComputeStacksSandbox) -> None:
    # Given 5 users (4 + the admin)
    for i in range(4):
        sandbox.add_user(f"p{i}@example.com", "P", f"P{i}")
    # When page 2 of 2-per-page, page 1, the last page and a page past the end are read
    middle = raw(sandbox, "GET", "/api/admin/users?per_page=2&page=2&include=balance")
    first = raw(sandbox, "GET", "/api/admin/users?per_page=2")
    last = raw(sandbox, "GET", "/api/admin/users?per_page=2&page=3")
    beyond = raw(sandbox, "GET", "/api/admin/users?per_page=2&page=9")
    default = raw(sandbox, "GET", "/api/admin/users?page=0&per_page=junk")
    # Then Total, Per-Page and Link (first/prev/last/next, omitted at the ends) are set
    base = f"{sandbox.url}/api/admin/users"
    assert middle.headers["Total"] == "5" and middle.headers["Per-Page"] == "2"
    assert middle.headers["Link"] == (
        f'<{base}?include=balance&page=1&per_page=2>; rel="first", '
        f'<{base}?include=balance&page=1&per_page=2>; rel="prev", '
        f'<{base}?include=balance&page=3&per_page=2>; rel="last", '
        f'<{base}?include=balance&page=3&per_page=2>; rel="next"')
    assert all("unprocessed_usage" in u for u in middle.json()["users"])
    assert 'rel="next"' in first.headers["Link"] and 'rel="prev"' not in first.headers["Link"]
    assert 'rel="prev"' in last.headers["Link"] and 'rel="next"' not in last.headers["Link"]
    assert len(last.json()["users"]) == 1
    assert (beyond.status_code, beyond.json()) == (200, {"users": []})
    assert default.headers["Per-Page"] == "30" and len(default.json()["users"]) == 5
    assert "Link" not in default.headers
    assert any(u["is_admin"] for u in default.json()["users"])


def test_user_groups_and_locations(sandbox: ComputeStacksSandbox, client: ComputeStacksClient) -> None:
    # Given a location and two more groups
    location = sandbox.add_location("Frankfurt")
    sandbox.add_user_group("Beta", location_ids=[location["id"]])
    sandbox.add_user_group("alpha")
    # When they are listed
    groups = list(client.iter_user_groups(per_page=2))
    locations = client.list_locations()
    # Then groups come sorted by lower(name) across pages, with the group fields
    assert [g["name"] for g in groups] == ["alpha", "Beta", "default"]
    assert groups[1]["locations"] == [{"id": location["id"], "name": "Frankfurt"}]
    assert {"is_default", "billing_plan_id", "bill_suspended", "regions"} <= set(groups[0])
    assert [loc["name"] for loc in locations] == ["Frankfurt"]
    assert locations[0]["links"] == {"regions": f"/api/admin/locations/{location['id']}/regions"}


def test_billing_usages_newest_first_with_numeric_strings(sandbox: ComputeStacksSandbox,
                                                          client: ComputeStacksClient) -> None:
    # Given a user with 5 usage rows over 5 days, two already processed
    user = sandbox.add_user("u@example.com", "U", "Sage", currency="EUR")
    start = datetime(2026, 10, 27, 21, 20, tzinfo=UTC)
    for day in range(5):
        sandbox.add_usage(user["id"], product_name="small", subscription_product_id=261, rate="0.00685",
                          qty="3", total="0.02054795", period_start=start + timedelta(days=day),
                          period_end=start + timedelta(days=day, hours=3), processed=day < 2)
    # When the rows are read two per page
    rows = list(client.iter_billing_usages(user["id"], per_page=2))
    shown = client.get_user(UserSelector.by_id(user["id"]), include_balance=True)
    # Then they come newest first with ComputeStacks' shapes, and the balance is the exact unprocessed sum
    assert [r["period_end"] for r in rows] == ["2026-11-01T00:20:00.000Z", "2026-10-31T00:20:00.000Z",
                                               "2026-10-30T00:20:00.000Z", "2026-10-29T00:20:00.000Z",
                                               "2026-10-28T00:20:00.000Z"]
    assert rows[-1]["period_start"] == "2026-10-27T21:20:00.000Z"
    assert rows[0]["total"] == "0.02054795" and rows[0]["qty"] == "3.0" and rows[0]["rate"] == "0.00685"
    assert rows[0]["subscription_product"]["id"] == 261
    assert rows[0]["subscription_product"]["product"]["label"] == "small"
    assert rows[0]["user"]["email"] == "u@example.com"
    assert [r["processed"] for r in rows] == [False, False, False, True, True]
    assert shown is not None and shown["unprocessed_usage"] == str(Decimal("0.02054795") * 3)


def test_billing_usages_are_read_lazily_and_unknown_users_raise(sandbox: ComputeStacksSandbox,
                                                               client: ComputeStacksClient) -> None:
    # Given 10 rows
    user = sandbox.add_user("lazy@example.com", "L", "Azy")
    for i in range(10):
        sandbox.add_usage(user["id"], product_name="p", subscription_product_id=1, total="1", qty="1",
                          period_start=f"2026-10-{i + 1:02d}T00:00:00Z", period_end=f"2026-10-{i + 1:02d}T03:00:00Z")
    sandbox.reset_requests()
    # When the caller stops after the first row
    first = next(iter(client.iter_billing_usages(user["id"], per_page=3)))
    # Then one request was made
    assert first["period_start"] == "2026-10-10T00:00:00.000Z"
    assert len(sandbox.requests) == 1
    # And an unknown user is NotFound
    with pytest.raises(NotFound):
        list(client.iter_billing_usages(999))
    assert raw(sandbox, "GET", "/api/admin/users/999/billing_usages").json() == {"errors": ["Unknown User"]}


# ---------------------------------------------------------------------------- SSO


def test_sso_token_logs_in_once_and_a_new_token_replaces_it(sandbox: ComputeStacksSandbox,
                                                             client: ComputeStacksClient) -> None:
    # Given a confirmed user
    user = client.create_user(new_user())
    sel = UserSelector.by_email(user["email"])
    # When two tokens are requested
    first = client.create_sso_token(sel)
    second = client.create_sso_token(sel)
    assert first is not None and second is not None
    # Then each is new, the old one no longer logs in, the new one does
    assert first["token"] != second["token"] and second["username"] == user["email"]
    old = httpx.get(sandbox.url + "/", params={"username": user["email"], "token": first["token"]})
    new = httpx.get(sandbox.url + "/", params={"username": user["email"], "token": second["token"]})
    assert (old.status_code, old.headers["location"]) == (302, f"{sandbox.url}/login")
    assert new.status_code == 302 and new.headers["location"].startswith(f"{sandbox.url}/deployments")
    assert [x["user_id"] for x in sandbox.sso_logins] == [user["id"]]


def test_sso_token_expires_after_a_minute() -> None:
    # Given a sandbox with a controllable clock
    now = [1_800_000_000.0]
    with ComputeStacksSandbox(clock=lambda: now[0]) as sb, make_client(sb) as c:
        user = c.create_user(new_user())
        token = c.create_sso_token(UserSelector.by_id(user["id"]))
        assert token is not None
        # When 61 seconds pass
        now[0] += 61
        response = httpx.get(sb.url + "/", params={"username": user["email"], "token": token["token"]})
        # Then the token is refused
        assert response.headers["location"].endswith("/login")
        assert token["expires"] == "2027-01-15T08:01:00.000Z"


# ---------------------------------------------------------------------------- faults


def test_timeout_after_commit_is_maybe_applied_and_the_user_exists(sandbox: ComputeStacksSandbox) -> None:
    # Given a sandbox that commits the next create, then answers too late for the client
    sandbox.timeout_after_commit_next(1, 0.3)
    with make_client(sandbox, timeout=0.1) as c:
        # When the user is created
        with pytest.raises(UpstreamTimeout) as caught:
            c.create_user(new_user())
        # Then the client reports "maybe applied", did not re-send, and the user does exist
        assert caught.value.maybe_applied is True
        assert c.request_count == 1
    assert sandbox.user_by_email("jane.doe3-10@cs.example.com") is not None
    assert [r["method"] for r in sandbox.requests] == ["POST"]


def test_patch_timeout_after_commit_is_retried_safely(sandbox: ComputeStacksSandbox) -> None:
    # Given a user, and one PATCH whose answer comes too late
    user = sandbox.add_user("p@example.com", "P", "Atch")
    sandbox.timeout_after_commit_next(1, 0.3)
    with make_client(sandbox, timeout=0.1) as c:
        # When it is suspended
        answer = c.update_user(UserSelector.by_id(user["id"]), {"active": False})
    # Then the retry answered, and the state is the same as after one PATCH
    assert answer is not None and answer["active"] is False
    assert [r["method"] for r in sandbox.requests] == ["PATCH", "PATCH"]


def test_5xx_knob(sandbox: ComputeStacksSandbox, client: ComputeStacksClient) -> None:
    # Given a user and one failing answer
    user = sandbox.add_user("f@example.com", "F", "Ail")
    sandbox.fail_next(1, status=503)
    # When the user is read
    # Then the GET was retried and succeeded
    assert client.get_user(UserSelector.by_id(user["id"])) is not None
    # And when ComputeStacks keeps failing a create, it is tried once and nothing was created
    sandbox.fail_next(3)
    with pytest.raises(UpstreamError) as caught:
        client.create_user(new_user())
    assert caught.value.message == "ComputeStacks answered with HTTP 500."
    assert sandbox.user_by_email("jane.doe3-10@cs.example.com") is None


def test_latency_beyond_the_timeout_is_a_timeout_without_effect(sandbox: ComputeStacksSandbox) -> None:
    # Given a slow sandbox
    sandbox.latency = 0.3
    with make_client(sandbox, timeout=0.1, max_retries=0) as c:
        # When a GET is made
        with pytest.raises(UpstreamTimeout) as caught:
            c.list_locations()
    # Then it timed out, and a GET is never "maybe applied"
    assert caught.value.maybe_applied is False
    sandbox.latency = 0


def test_unreachable_server() -> None:
    # Given a port nobody listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ComputeStacksClient(f"http://127.0.0.1:{port}", "k", "s", sleep=lambda _s: None) as c:
        # When a user is created
        with pytest.raises(UpstreamUnreachable) as caught:
            c.create_user(new_user())
    # Then nothing was sent, so nothing was applied
    assert caught.value.maybe_applied is False
    assert c.request_count == 3


def test_wrong_secret_is_auth_failure_and_five_lock_the_owner(sandbox: ComputeStacksSandbox) -> None:
    # Given a client with a wrong secret
    with ComputeStacksClient(sandbox.url, sandbox.api_key, "wrong-secret", sleep=lambda _s: None) as bad:
        # When it calls
        with pytest.raises(UpstreamAuthFailed) as caught:
            bad.list_locations()
        # Then it is refused once, without retry, and the message names no credential
        assert caught.value.message == "ComputeStacks rejected the API credentials."
        assert bad.request_count == 1
        for _ in range(4):
            with pytest.raises(UpstreamAuthFailed):
                bad.list_locations()
    # And after 5 wrong secrets even the right one is refused (Devise lockable)
    with make_client(sandbox) as good, pytest.raises(UpstreamAuthFailed):
        good.list_locations()
    assert raw(sandbox, "GET", "/api/admin/locations").json() == {"errors": ["Not Authorized"]}


def test_non_admin_credential_and_missing_auth_are_401(sandbox: ComputeStacksSandbox) -> None:
    # Given a valid credential of a non-admin user
    plain = sandbox.add_user("plain@example.com", "Plain", "User")
    sandbox.add_credential("plain-key", "plain-secret", user_id=plain["id"])
    # When it (or nobody) calls the admin API
    as_plain = raw(sandbox, "GET", "/api/admin/users", auth=("plain-key", "plain-secret"))
    anonymous = httpx.get(sandbox.url + "/api/admin/users", headers=JSON)
    # Then both get the admin gate's 401
    assert (as_plain.status_code, as_plain.json()) == (401, {"errors": ["Not Authorized"]})
    assert (anonymous.status_code, anonymous.json()) == (401, {"errors": ["Not Authorized"]})


def test_rate_limit_429(sandbox: ComputeStacksSandbox) -> None:
    # Given a sandbox limited to 3 requests per window
    with ComputeStacksSandbox(rate_limit=3, rate_period=300) as sb:
        for _ in range(3):
            assert raw(sb, "GET", "/api/admin/locations").status_code == 200
        # When the 4th request comes
        response = raw(sb, "GET", "/api/admin/locations")
        # Then it is Rack::Attack's 429
        assert (response.status_code, response.text) == (429, "Throttled\n")
        assert response.headers["RateLimit-Limit"] == "3" and response.headers["RateLimit-Remaining"] == "0"
        assert 1 <= int(response.headers["Retry-After"]) <= 300
        # And a client that may not wait that long raises RateLimited
        with make_client(sb, max_rate_limit_wait=0.5) as c, pytest.raises(RateLimited) as caught:
            c.list_locations()
        assert caught.value.retry_after >= 1
        # And once the bench's knob forgets the window's counts, the next 3 pass and the 4th is refused again
        sb.forget_rate_counts()
        assert [raw(sb, "GET", "/api/admin/locations").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_api_versions_and_formats(sandbox: ComputeStacksSandbox) -> None:
    # Given the version and format rules
    # When different Accept headers are sent
    v50 = raw(sandbox, "GET", "/api/admin/locations", headers={"Accept": "application/json; api_version=50"})
    v93 = raw(sandbox, "GET", "/api/admin/locations", headers={"Accept": "application/json; api_version=93"})
    v60 = raw(sandbox, "GET", "/api/admin/locations", headers={"Accept": "application/json; api_version=60"})
    v80 = raw(sandbox, "GET", "/api/admin/locations", headers={"Accept": "application/json; api_version=80"})
    html = raw(sandbox, "GET", "/api/admin/locations", headers={"Accept": "text/html"})
    suffix = raw(sandbox, "GET", "/api/admin/locations.json", headers={"Accept": "text/html"})
    unknown = raw(sandbox, "GET", "/api/admin/widgets")
    # Then unsupported versions are 422, deprecated ones flagged, non-JSON 406, unknown routes 404
    assert (v50.status_code, v50.json()) == (422, {"errors": ["You requested an unsupported version (50)"]})
    assert v50.headers["API-Version-Supported"] == "false"
    assert v93.json() == {"errors": ["You requested an unsupported version (93)"]}
    assert v60.status_code == 200 and v60.headers["API-Deprecated"] == "true"
    assert v80.status_code == 200 and "API-Deprecated" not in v80.headers
    assert (html.status_code, html.text) == (406, "Unknown format. Only JSON and XML are permitted.")
    assert suffix.status_code == 200
    assert (unknown.status_code, unknown.json()) == (404, {"errors": ["Unknown API Call. Please check the "
                                                                      "documentation."]})


def test_client_reports_version_and_base_url_mistakes(sandbox: ComputeStacksSandbox) -> None:
    # Given a client pinned to an obsolete version, and one whose base URL already ends in /api
    with make_client(sandbox, api_version=50) as old, pytest.raises(UpstreamRejected) as rejected:
        old.list_locations()
    with ComputeStacksClient(sandbox.url + "/api", sandbox.api_key, sandbox.api_secret) as doubled:
        with pytest.raises(UpstreamError) as wrong:
            doubled.get_user(UserSelector.by_id(1))
    # Then the first says which version, the second does not pretend the user is missing
    assert rejected.value.message == "ComputeStacks rejected the request: You requested an unsupported version (50)."
    assert "check CS_API_URL" in wrong.value.message


def test_requests_are_recorded_without_the_authorization_header(sandbox: ComputeStacksSandbox,
                                                                client: ComputeStacksClient) -> None:
    # Given a create
    client.create_user(new_user())
    # When the recorded request is inspected
    recorded = sandbox.requests[-1]
    # Then it has the JSON body (password included: a sandbox) but no credentials
    assert recorded["method"] == "POST" and recorded["path"] == "/api/admin/users"
    assert recorded["json"]["user"]["password"] == "s3cretpass"
    assert "authorization" not in recorded["headers"] and "Authorization" not in recorded["headers"]
    assert recorded["headers"]["Accept"] == "application/json; api_version=80"
    assert recorded["status"] == 201
    encoded = base64.b64encode(f"{sandbox.api_key}:{sandbox.api_secret}".encode()).decode()
    assert encoded not in repr(sandbox.requests)


def test_seed_demo_gives_linked_users_in_two_currencies(sandbox: ComputeStacksSandbox,
                                                        client: ComputeStacksClient) -> None:
    # Given the demo data
    seed_demo(sandbox)
    # When the linked users are looked up by their WHMCS service ids
    jane = client.get_user(UserSelector.by_label_service_id(1), include_balance=True)
    max_ = client.get_user(UserSelector.by_label_service_id(2))
    # Then they exist, in USD and EUR, with usage
    assert jane is not None and max_ is not None
    assert (jane["currency"], max_["currency"]) == ("USD", "EUR")
    assert Decimal(jane["unprocessed_usage"]) > 0
    assert next(iter(client.iter_billing_usages(jane["id"])))["user"]["id"] == jane["id"]
