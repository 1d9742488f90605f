"""ComputeStacksClient against httpx.MockTransport: headers, error mapping, retry rules, 429, pagination."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cswhmcs.adapters.computestacks import ComputeStacksClient, UserSelector
from cswhmcs.config import Settings
from cswhmcs.errors import (
    ConfigurationError,
    DomainError,
    EmailTaken,
    NotFound,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tests.support.clocks import FakeClock
from tests.support.cs_http import (
    BASE,
    KEY,
    ROTATED,
    SECRET,
    USER,
    FakeSource,
    Handler,
    Harness,
    basic,
    errors,
    ok_user,
    script,
)


def assert_no_secrets(exc: BaseException, *extra: str) -> None:
    text = str(exc) + " " + getattr(exc, "message", "") + " " + " ".join(getattr(exc, "messages", []) or [])
    for value in (KEY, SECRET, *extra):
        assert value not in text


# ---------------------------------------------------------------------------- request shape


def test_create_user_sends_wrapped_json_with_accept_version_and_basic_auth() -> None:
    # Given ComputeStacks that accepts the user
    h = Harness(script(ok_user(201)))
    # When a user is created
    user = h.client.create_user({"fname": "Jane", "lname": "Doe", "email": "jane@example.com",
                                 "merge_labels": {"whmcs": {"client_id": 3, "service_id": 10}}})
    # Then the request is a POST of {"user": ...} with the headers ComputeStacks needs
    req = h.requests[0]
    assert req.method == "POST"
    assert str(req.url) == f"{BASE}/api/admin/users"
    assert req.headers["accept"] == "application/json; api_version=80"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    assert json.loads(req.content) == {"user": {"fname": "Jane", "lname": "Doe", "email": "jane@example.com",
                                                "merge_labels": {"whmcs": {"client_id": 3, "service_id": 10}}}}
    # And the answer is unwrapped
    assert user == USER
    assert h.client.request_count == 1


def test_api_version_is_configurable_and_decimals_serialise_as_strings() -> None:
    # Given a client pinned to version 60
    h = Harness(script(ok_user()), api_version=60)
    # When a PATCH carries a Decimal
    h.client.update_user(UserSelector.by_id(42), {"vat": Decimal("19.0")})
    # Then the Accept header names 60 and the Decimal is sent as a string
    assert h.requests[0].headers["accept"] == "application/json; api_version=60"
    assert h.requests[0].method == "PATCH"
    assert json.loads(h.requests[0].content) == {"user": {"vat": "19.0"}}


def test_get_request_has_no_body_and_asks_for_balance_when_told() -> None:
    # Given a user
    h = Harness(script(ok_user()))
    # When it is fetched by label with its balance
    h.client.get_user(UserSelector.by_label_service_id(10), include_balance=True)
    # Then the query names the label flag and include=balance, and nothing is sent as body
    req = h.requests[0]
    assert req.url.path == "/api/admin/users/10"
    assert dict(req.url.params) == {"find_by_label": "whmcs_service_id", "include": "balance"}
    assert req.content == b""
    assert "content-type" not in req.headers


def test_numbers_in_answers_are_kept_raw_and_floats_become_decimal() -> None:
    # Given a show body with a string run_rate, an integer 0 and a float
    h = Harness(script(httpx.Response(200, content=b'{"user":{"id":1,"run_rate":"14.6","unprocessed_usage":0,'
                                                   b'"x":0.1}}')))
    # When it is read
    user = h.client.get_user(UserSelector.by_id(1))
    # Then nothing is converted except JSON floats, which are parsed as Decimal (never float)
    assert user == {"id": 1, "run_rate": "14.6", "unprocessed_usage": 0, "x": Decimal("0.1")}


# ---------------------------------------------------------------------------- error mapping


def test_404_with_empty_body_is_none_for_lookups() -> None:
    # Given ComputeStacks that does not know the user (head :not_found)
    h = Harness(script(httpx.Response(404)))
    # When the user is fetched, updated, or asked for an SSO token
    # Then each returns None
    assert h.client.get_user(UserSelector.by_email("nobody@example.com")) is None
    assert h.client.update_user(UserSelector.by_id(7), {"active": False}) is None
    assert h.client.create_sso_token(UserSelector.by_id(7)) is None
    assert h.client.request_count == 3  # a 404 is an answer: no retry


def test_404_unknown_api_call_is_a_configuration_problem_not_a_missing_user() -> None:
    # Given a wrong CS_API_URL (ComputeStacks answers its catch-all route)
    h = Harness(script(errors(404, "Unknown API Call. Please check the documentation.")))
    # When a user is looked up
    with pytest.raises(UpstreamError) as caught:
        h.client.get_user(UserSelector.by_id(1))
    # Then it is an upstream error, not "no such user"
    assert "check CS_API_URL" in caught.value.message
    assert caught.value.http_status == 404


def test_401_is_auth_failed_and_never_retried() -> None:
    # Given ComputeStacks that refuses the credential
    h = Harness(script(errors(401, "Not Authorized")))
    # When anything is asked
    with pytest.raises(UpstreamAuthFailed) as caught:
        h.client.get_user(UserSelector.by_id(1))
    # Then the message says so, without the key or secret, after exactly one try
    # (each wrong secret counts towards ComputeStacks' 5-attempt lockout)
    assert caught.value.message == "ComputeStacks rejected the API credentials."
    assert caught.value.status == 502
    assert caught.value.upstream == "ComputeStacks"
    assert h.client.request_count == 1
    assert_no_secrets(caught.value)


def test_422_messages_are_deduplicated_and_joined() -> None:
    # Given a duplicate email: Devise and the model both add "has already been taken"
    h = Harness(script(errors(422, "Email has already been taken", "Fname can't be blank",
                              "Email has already been taken")))
    # When the user is created
    with pytest.raises(UpstreamRejected) as caught:
        h.client.create_user({"email": "jane@example.com"})
    # Then each message appears once, and the message lists them
    assert caught.value.messages == ["Email has already been taken", "Fname can't be blank"]
    assert caught.value.message == ("ComputeStacks rejected the request: Email has already been taken; "
                                    "Fname can't be blank.")
    assert caught.value.status == 422
    assert caught.value.upstream == "ComputeStacks"


def test_a_422_naming_the_email_as_taken_is_the_typed_email_taken_error() -> None:
    # Given ComputeStacks' answer to a duplicate email (Devise and the model both say it), then another 422
    h = Harness(script(errors(422, "Email has already been taken", "Email has already been taken"),
                       errors(422, "Fname can't be blank")))
    # When a user is created with a taken email
    with pytest.raises(EmailTaken) as caught:
        h.client.create_user({"email": "jane@example.com"})
    # Then the client says so by type (still a 422 rejection with ComputeStacks' message)
    assert isinstance(caught.value, UpstreamRejected) and caught.value.status == 422
    assert caught.value.messages == ["Email has already been taken"]
    # And another validation failure is a plain rejection, not EmailTaken
    with pytest.raises(UpstreamRejected) as other:
        h.client.create_user({"email": "jane@example.com"})
    assert not isinstance(other.value, EmailTaken)


def test_422_messages_never_echo_passwords_or_credentials() -> None:
    # Given a (hypothetical) upstream message that quotes what it was sent
    password = "hunter2-but-longer"
    h = Harness(script(errors(422, f"Password {password} is weak", f"key {KEY} secret {SECRET}")))
    # When the user is created with that password
    with pytest.raises(UpstreamRejected) as caught:
        h.client.create_user({"email": "a@b.c", "password": password, "password_confirmation": password})
    # Then neither the password nor the credentials appear anywhere in the error
    assert_no_secrets(caught.value, password)
    assert "[redacted]" in caught.value.message


def test_422_without_errors_list_still_maps_to_rejected() -> None:
    # Given an odd 422 body
    h = Harness(script(httpx.Response(422, text="nope")))
    # When / Then it is still a rejection
    with pytest.raises(UpstreamRejected) as caught:
        h.client.update_user(UserSelector.by_id(1), {"email": "x"})
    assert caught.value.message == "ComputeStacks rejected the request."


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, text="<html>hello</html>"), "ComputeStacks answered with something that is not JSON."),
        (httpx.Response(200, json={"users": []}), "ComputeStacks answered HTTP 200 with an unexpected body."),
        (httpx.Response(406, text="Unknown format. Only JSON and XML are permitted."),
         "ComputeStacks answered with HTTP 406."),
        (httpx.Response(302, headers={"location": "https://cs.example.net/login"}),
         "ComputeStacks answered with HTTP 302."),
    ],
)
def test_unexpected_answers_are_upstream_errors(response: httpx.Response, message: str) -> None:
    # Given ComputeStacks answering something we cannot use
    h = Harness(script(response))
    # When a user is fetched
    with pytest.raises(UpstreamError) as caught:
        h.client.get_user(UserSelector.by_id(1))
    # Then it is a 502-class upstream error with a clear sentence
    assert caught.value.message == message
    assert caught.value.status == 502
    assert_no_secrets(caught.value)


# ---------------------------------------------------------------------------- retries


def test_get_is_retried_on_5xx_with_backoff() -> None:
    # Given two 503s, then success
    h = Harness(script(httpx.Response(503, text="<html>oops</html>"), httpx.Response(502), ok_user()))
    # When a user is fetched
    user = h.client.get_user(UserSelector.by_id(42))
    # Then it succeeded on the third attempt after short backoffs
    assert user == USER
    assert h.client.request_count == 3
    assert h.sleeps == [0.25, 0.5]


def test_get_gives_up_after_max_retries_with_the_status_in_the_message() -> None:
    # Given ComputeStacks down
    h = Harness(script(httpx.Response(503)))
    # When a user is fetched
    with pytest.raises(UpstreamError) as caught:
        h.client.get_user(UserSelector.by_id(42))
    # Then 1 + max_retries attempts were made and the message names the status
    assert h.client.request_count == 3
    assert caught.value.message == "ComputeStacks answered with HTTP 503."
    assert caught.value.http_status == 503


def test_create_is_not_retried_on_5xx() -> None:
    # Given ComputeStacks failing with 500 (the user may or may not exist now)
    h = Harness(script(errors(500, "boom"), ok_user(201)))
    # When a user is created
    with pytest.raises(UpstreamError):
        h.client.create_user({"email": "jane@example.com"})
    # Then it was sent exactly once
    assert h.client.request_count == 1


def test_create_is_not_resent_after_a_read_timeout() -> None:
    # Given a create that reached ComputeStacks but whose answer never came
    h = Harness(script(httpx.ReadTimeout("timed out"), ok_user(201)))
    # When the user is created
    with pytest.raises(UpstreamTimeout) as caught:
        h.client.create_user({"email": "jane@example.com", "password": "s3cretpass!"})
    # Then it is reported as "maybe applied" and was never sent a second time
    assert caught.value.maybe_applied is True
    assert not isinstance(caught.value, UpstreamUnreachable)
    assert caught.value.status == 504
    assert h.client.request_count == 1
    assert h.sleeps == []
    assert_no_secrets(caught.value, "s3cretpass!")


def test_create_is_not_resent_after_the_connection_dropped_mid_request() -> None:
    # Given a server that closed the connection after receiving the create
    h = Harness(script(httpx.RemoteProtocolError("Server disconnected without sending a response."),
                       ok_user(201)))
    # When the user is created
    with pytest.raises(UpstreamTimeout) as caught:
        h.client.create_user({"email": "jane@example.com"})
    # Then it is ambiguous, not re-sent
    assert caught.value.maybe_applied is True
    assert h.client.request_count == 1


def test_create_is_retried_when_the_connection_could_not_be_made() -> None:
    # Given a first connection refused (nothing was sent), then success
    h = Harness(script(httpx.ConnectError("refused"), ok_user(201)))
    # When the user is created
    user = h.client.create_user({"email": "jane@example.com"})
    # Then the second attempt created it
    assert user == USER
    assert h.client.request_count == 2


def test_connect_failures_become_unreachable_with_nothing_applied() -> None:
    # Given ComputeStacks that cannot be reached at all
    h = Harness(script(httpx.ConnectTimeout("connect timed out")))
    # When a user is created
    with pytest.raises(UpstreamUnreachable) as caught:
        h.client.create_user({"email": "jane@example.com"})
    # Then it is "unreachable", clearly not applied, after all retries
    assert caught.value.message == "ComputeStacks could not be reached."
    assert caught.value.maybe_applied is False
    assert caught.value.status == 504
    assert h.client.request_count == 3


@pytest.mark.parametrize(
    ("call", "maybe_applied"),
    [
        (lambda c: c.get_user(UserSelector.by_id(1)), False),
        (lambda c: c.update_user(UserSelector.by_id(1), {"active": False}), True),
        (lambda c: c.create_sso_token(UserSelector.by_id(1)), True),
    ],
)
def test_idempotent_calls_are_retried_on_read_timeouts(call: Callable[[ComputeStacksClient], object],
                                                        maybe_applied: bool) -> None:
    # Given ComputeStacks that never answers in time
    h = Harness(script(httpx.ReadTimeout("timed out")))
    # When a GET, a PATCH or an SSO token request is made
    with pytest.raises(UpstreamTimeout) as caught:
        call(h.client)
    # Then it was tried 1 + max_retries times; only mutating calls may have been applied
    assert h.client.request_count == 3
    assert caught.value.maybe_applied is maybe_applied
    assert caught.value.message == "ComputeStacks did not answer in time."


def test_patch_retry_succeeds_after_one_timeout() -> None:
    # Given one lost answer, then success
    h = Harness(script(httpx.ReadTimeout("timed out"), ok_user()))
    # When the user is suspended
    user = h.client.update_user(UserSelector.by_id(42), {"active": False})
    # Then the second identical PATCH succeeded (absolute values: safe to repeat)
    assert user == USER
    assert [r.content for r in h.requests] == [b'{"user":{"active":false}}'] * 2


def test_max_retries_zero_means_one_attempt() -> None:
    # Given a client that must not retry
    h = Harness(script(httpx.Response(503)), max_retries=0)
    # When / Then one attempt only
    with pytest.raises(UpstreamError):
        h.client.get_user(UserSelector.by_id(1))
    assert h.client.request_count == 1


# ---------------------------------------------------------------------------- 429


def throttled(retry_after: str | None = "7") -> httpx.Response:
    headers = {"RateLimit-Limit": "2500", "RateLimit-Remaining": "0"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return httpx.Response(429, text="Throttled\n", headers=headers)


def test_429_waits_retry_after_then_retries() -> None:
    # Given one throttled answer asking to wait 7 s
    h = Harness(script(throttled("7"), ok_user()))
    # When a user is fetched
    user = h.client.get_user(UserSelector.by_id(42))
    # Then the client slept exactly 7 s (through the injected sleep) and retried
    assert user == USER
    assert h.sleeps == [7.0]
    assert h.client.request_count == 2


def test_429_create_is_resent_because_it_was_never_applied() -> None:
    # Given a throttled create (Rack::Attack refuses before the app runs)
    h = Harness(script(throttled("1"), ok_user(201)))
    # When the user is created
    user = h.client.create_user({"email": "jane@example.com"})
    # Then it was sent again after waiting
    assert user == USER
    assert h.client.request_count == 2


def test_persistent_429_raises_rate_limited_once_the_wait_budget_is_spent() -> None:
    # Given ComputeStacks that keeps throttling with Retry-After: 4, and a 10 s wait budget
    h = Harness(script(throttled("4")), max_rate_limit_wait=10.0)
    # When a user is fetched
    with pytest.raises(RateLimited) as caught:
        h.client.get_user(UserSelector.by_id(1))
    # Then it waited twice (8 s) and gave up rather than exceed the budget
    assert h.sleeps == [4.0, 4.0]
    assert caught.value.retry_after == 4.0
    assert caught.value.http_status == 429
    assert caught.value.message == "ComputeStacks is throttling our requests; retry in 4 seconds."


def test_429_without_retry_after_waits_a_second() -> None:
    # Given a 429 with no Retry-After and no RateLimit-Reset
    h = Harness(script(httpx.Response(429, text="Throttled\n"), ok_user()))
    # When a user is fetched
    h.client.get_user(UserSelector.by_id(1))
    # Then the client waited the default second
    assert h.sleeps == [1.0]


def test_429_with_http_date_retry_after() -> None:
    # Given a Retry-After in the past as an HTTP date
    h = Harness(script(throttled("Wed, 21 Oct 2015 07:28:00 GMT"), ok_user()))
    # When a user is fetched
    h.client.get_user(UserSelector.by_id(1))
    # Then the client did not wait a negative time
    assert h.sleeps == [0.0]


def test_pacer_is_asked_before_every_attempt() -> None:
    # Given a pacer that counts
    class CountingPacer:
        calls = 0

        def acquire(self) -> None:
            self.calls += 1

    pacer = CountingPacer()
    h = Harness(script(httpx.Response(503), throttled("0"), ok_user()), pacer=pacer)
    # When one GET needs three attempts
    h.client.get_user(UserSelector.by_id(1))
    # Then the pacer was consulted for each of them
    assert pacer.calls == 3 == h.client.request_count


# ---------------------------------------------------------------------------- pagination


def paged(total: int, key: str = "users", link_host: str = "https://cs.example.net",
          headers: bool = True) -> Handler:
    """A fake api-pagination endpoint over ids 1..total."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        per_page = int(request.url.params.get("per_page", "30"))
        rows = [{"id": i} for i in range((page - 1) * per_page + 1, min(total, page * per_page) + 1)]
        last = max(1, -(-total // per_page))
        links = []
        if page != 1:
            links += [("first", 1), ("prev", page - 1)]
        if page < last:
            links += [("last", last), ("next", page + 1)]
        out: dict[str, str] = {}
        if headers:
            out = {"Total": str(total), "Per-Page": str(per_page)}
            if links:
                out["Link"] = ", ".join(f'<{link_host}{request.url.path}?page={n}&per_page={per_page}>; rel="{r}"'
                                        for r, n in links)
        return httpx.Response(200, json={key: rows}, headers=out)

    return handler


def test_iter_users_follows_every_page() -> None:
    # Given 75 users served 30 per page... asked 20 per page
    h = Harness(paged(75))
    # When all users are listed
    ids = [u["id"] for u in h.client.iter_users(per_page=20)]
    # Then all 75 come back, from 4 requests
    assert ids == list(range(1, 76))
    assert [r.url.params["page"] for r in h.requests] == ["1", "2", "3", "4"]
    assert {r.url.params["per_page"] for r in h.requests} == {"20"}


def test_pagination_never_follows_the_link_host() -> None:
    # Given a Link header pointing elsewhere (ComputeStacks behind a proxy says http://internal)
    h = Harness(paged(5, link_host="http://evil.example"))
    # When the list is read
    ids = [u["id"] for u in h.client.iter_users(per_page=2)]
    # Then only the page number was taken from it: every request went to our base URL
    assert ids == [1, 2, 3, 4, 5]
    assert {r.url.host for r in h.requests} == {"cs.example.net"}


def test_pagination_without_headers_stops_on_a_short_page() -> None:
    # Given a server without pagination headers
    h = Harness(paged(6, headers=False))
    # When the list is read 3 per page
    ids = [u["id"] for u in h.client.iter_users(per_page=3)]
    # Then the empty third page ends it
    assert ids == [1, 2, 3, 4, 5, 6]
    assert len(h.requests) == 3


def test_single_page_without_link_header_is_the_end() -> None:
    # Given everything fits in one page (api-pagination then sends no Link header at all)
    h = Harness(paged(3))
    # When listed
    ids = [u["id"] for u in h.client.iter_users(per_page=500)]
    # Then one request was enough
    assert ids == [1, 2, 3]
    assert len(h.requests) == 1


def test_rows_shifting_between_pages_are_yielded_once() -> None:
    # Given a new row inserted at the front between page 1 and page 2 (offset pagination shifts)
    pages = {1: [{"id": 5}, {"id": 4}], 2: [{"id": 4}, {"id": 3}], 3: [{"id": 2}, {"id": 1}]}

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        link = f'<{BASE}/x?page={page + 1}&per_page=2>; rel="next"' if page < 3 else f'<{BASE}/x?page=1>; rel="first"'
        return httpx.Response(200, json={"billing_usages": pages[page]}, headers={"Link": link})

    h = Harness(handler)
    # When all usage rows are read
    ids = [r["id"] for r in h.client.iter_billing_usages(9, per_page=2)]
    # Then the duplicate is skipped
    assert ids == [5, 4, 3, 2, 1]


def test_billing_usages_are_fetched_lazily() -> None:
    # Given many pages of usage
    h = Harness(paged(100, key="billing_usages"))
    # When the caller stops after the first 3 rows
    rows = h.client.iter_billing_usages(42, per_page=10)
    first = [next(rows)["id"] for _ in range(3)]
    # Then only one page was requested, from the user's billing_usages path
    assert first == [1, 2, 3]
    assert len(h.requests) == 1
    assert h.requests[0].url.path == "/api/admin/users/42/billing_usages"


def test_billing_usages_of_an_unknown_user_raise_not_found() -> None:
    # Given ComputeStacks without that user
    h = Harness(script(errors(404, "Unknown User")))
    # When its usage is read
    # Then NotFound is raised while iterating
    with pytest.raises(NotFound):
        list(h.client.iter_billing_usages(99))


def test_user_groups_and_locations() -> None:
    # Given groups (paginated) and locations (not paginated)
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/admin/locations":
            return httpx.Response(200, json={"locations": [{"id": 1, "name": "Frankfurt"}]})
        return paged(3, key="user_groups")(request)

    h = Harness(handler)
    # When both are read
    groups = list(h.client.iter_user_groups(per_page=2))
    locations = h.client.list_locations()
    # Then they come back as lists of dicts
    assert [g["id"] for g in groups] == [1, 2, 3]
    assert locations == [{"id": 1, "name": "Frankfurt"}]


@pytest.mark.parametrize("per_page", [0, -1, True, "10"])
def test_per_page_must_be_a_positive_int(per_page: Any) -> None:
    # Given a client
    h = Harness(paged(1))
    # When / Then a nonsense page size is refused before any request
    with pytest.raises(ValueError):
        list(h.client.iter_users(per_page=per_page))
    assert h.requests == []


# ---------------------------------------------------------------------------- selectors


def test_selector_by_email_is_lowercased_standard_base64_percent_encoded() -> None:
    # Given an email whose Base64 contains '+', '/' and '=' padding
    email = "  Jane.Doe+Ops?>@Example.COM "
    # When a selector is built
    sel = UserSelector.by_email(email)
    # Then the segment decodes (percent, then standard Base64) to the lower-cased email
    assert sel.params == (("find_by_email", "1"),)
    assert all(ch not in sel.segment for ch in "+/=.")
    assert base64.b64decode(unquote(sel.segment)).decode() == "jane.doe+ops?>@example.com"
    assert sel.path() == f"/api/admin/users/{sel.segment}"


def test_selector_path_reaches_the_wire_unchanged() -> None:
    # Given a selector whose segment contains %2F and %3D
    sel = UserSelector.by_email("a??@b.c")
    h = Harness(script(ok_user()))
    # When it is used
    h.client.get_user(sel)
    # Then httpx did not decode or re-encode the segment
    assert h.requests[0].url.raw_path.decode().startswith(f"/api/admin/users/{sel.segment}?")
    assert "%2F" in sel.segment or "%2B" in sel.segment or "%3D" in sel.segment


@given(st.emails())
def test_any_email_round_trips_through_the_selector(email: str) -> None:
    # Given any valid email
    # When a selector is built
    sel = UserSelector.by_email(email)
    # Then the segment is a single safe path segment that decodes back to the lower-cased email
    assert "/" not in sel.segment and "." not in sel.segment
    assert base64.b64decode(unquote(sel.segment), validate=True).decode() == email.strip().lower()


def test_selector_by_external_id_encodes_dots_and_slashes() -> None:
    # Given external ids as WHMCS sends them
    # When selectors are built
    numeric = UserSelector.by_external_id(10)
    dotted = UserSelector.by_external_id("svc.10/a")
    # Then the id is a single segment, with '.' encoded (Rails would read it as a format suffix)
    assert numeric.segment == "10" and numeric.params == (("find_by_external_id", "1"),)
    assert dotted.segment == "svc%2E10%2Fa"


def test_selector_by_label() -> None:
    # Given WHMCS ids
    # When label selectors are built
    service = UserSelector.by_label_service_id(10)
    client = UserSelector.by_label_client_id(3)
    # Then the id is the integer and the flag names the label
    assert (service.segment, service.params) == ("10", (("find_by_label", "whmcs_service_id"),))
    assert (client.segment, client.params) == ("3", (("find_by_label", "whmcs_client_id"),))
    assert UserSelector.by_id(7).path("/user_sso") == "/api/admin/users/7/user_sso"


@pytest.mark.parametrize(
    "build",
    [
        lambda: UserSelector.by_id(0),
        lambda: UserSelector.by_id(-3),
        lambda: UserSelector.by_id(True),
        lambda: UserSelector.by_id(cast(Any, "5")),
        lambda: UserSelector.by_email("  "),
        lambda: UserSelector.by_external_id(""),
        lambda: UserSelector.by_external_id(False),
        lambda: UserSelector.by_label_service_id(0),  # ComputeStacks would ignore the flag for 0
        lambda: UserSelector.by_label_service_id(cast(Any, "10")),
    ],
)
def test_invalid_selectors_are_refused(build: Callable[[], UserSelector]) -> None:
    # Given / When / Then
    with pytest.raises(ValueError):
        build()


def test_sso_token_request() -> None:
    # Given ComputeStacks issuing a token
    h = Harness(script(httpx.Response(201, json={"username": "jane@example.com", "token": "tok",
                                                 "expires": "2026-01-01T00:01:00.000Z"})))
    # When a token is asked for a user found by external id
    answer = h.client.create_sso_token(UserSelector.by_external_id("10"))
    # Then it was a POST without body to .../user_sso with the lookup flag
    assert answer == {"username": "jane@example.com", "token": "tok", "expires": "2026-01-01T00:01:00.000Z"}
    req = h.requests[0]
    assert (req.method, req.url.path, dict(req.url.params)) == ("POST", "/api/admin/users/10/user_sso",
                                                                 {"find_by_external_id": "1"})
    assert req.content == b""


# ---------------------------------------------------------------------------- construction


def test_from_settings_uses_the_configured_url_credentials_and_timeouts() -> None:
    # Given settings
    settings = Settings.model_validate({"CS_API_URL": "https://cs.example.net/", "CS_API_KEY": KEY,
                                        "CS_API_SECRET": SECRET, "CS_TIMEOUT": 4.0, "CONNECT_TIMEOUT": 1.5})
    # When a client is built from them
    with ComputeStacksClient.from_settings(settings) as client:
        # Then it targets that URL, and its repr shows no secret
        assert "cs.example.net" in repr(client)
        assert SECRET not in repr(client) and KEY not in repr(client)
        timeout = client._http.timeout
        assert (timeout.read, timeout.connect) == (4.0, 1.5)


def test_from_settings_without_credentials_is_a_configuration_error() -> None:
    # Given settings without the ComputeStacks secret
    settings = Settings.model_validate({"CS_API_URL": "https://cs.example.net", "CS_API_KEY": KEY})
    # When / Then the missing setting is named, no value printed
    with pytest.raises(ConfigurationError) as caught:
        ComputeStacksClient.from_settings(settings)
    assert "CS_API_SECRET" in caught.value.message


def test_every_error_is_a_domain_error_without_secrets() -> None:
    # Given every failure mode at once
    cases: list[httpx.Response | Exception] = [
        errors(401, "Not Authorized"), errors(422, "x"), httpx.Response(500), httpx.Response(200, text="x"),
        httpx.ReadTimeout("t"), httpx.ConnectError("c"), throttled("999"),
    ]
    for case in cases:
        h = Harness(script(case), max_rate_limit_wait=0)
        # When a call fails
        with pytest.raises(DomainError) as caught:
            h.client.get_user(UserSelector.by_id(1))
        # Then it is typed, and quiet about credentials
        assert_no_secrets(caught.value)


# ---------------------------------------------------------------------------- credentials (issue 8)

def answer_for(accepted: tuple[str, str], ok: Callable[[], httpx.Response] = ok_user) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return ok() if request.headers["authorization"] == basic(accepted) else errors(401, "Not Authorized")

    return handler


def test_a_401_is_tried_once_more_with_the_rotated_secret() -> None:
    # Given ComputeStacks that only accepts the rotated secret, and a source that finds it on re-reading
    source = FakeSource()
    h = Harness(answer_for(ROTATED), credentials=source)
    # When a user is fetched with the old pair
    user = h.client.get_user(UserSelector.by_id(42))
    # Then the second request carried the new pair, at once, and the old one was reported
    assert user == USER
    assert [r.headers["authorization"] for r in h.requests] == [basic((KEY, SECRET)), basic(ROTATED)]
    assert source.rejections == [(KEY, SECRET)]
    assert h.sleeps == []


def test_a_second_401_stops_there_never_a_third_login() -> None:
    # Given ComputeStacks that refuses both the old and the re-read pair
    source = FakeSource()
    h = Harness(script(errors(401, "Not Authorized")), credentials=source)
    # When a user is fetched
    with pytest.raises(UpstreamAuthFailed) as caught:
        h.client.get_user(UserSelector.by_id(42))
    # Then exactly two logins were spent (each counts towards the lockout), both reported to the source
    assert caught.value.message == "ComputeStacks rejected the API credentials."
    assert len(h.requests) == 2 and h.client.request_count == 2
    assert source.rejections == [(KEY, SECRET), ROTATED]
    assert_no_secrets(caught.value, ROTATED[1])


def test_a_401_is_never_retried_with_the_same_pair() -> None:
    # Given a source whose re-read finds the same secret
    source = FakeSource(offer=(KEY, SECRET))
    h = Harness(script(errors(401, "Not Authorized"), ok_user()), credentials=source)
    # When / Then one login only
    with pytest.raises(UpstreamAuthFailed):
        h.client.update_user(UserSelector.by_id(42), {"active": False})
    assert len(h.requests) == 1


def test_a_pair_known_to_be_rejected_is_not_sent_at_all() -> None:
    # Given a source that knows its pair was refused (e.g. by another request of this run)
    source = FakeSource(refused=frozenset({(KEY, SECRET)}))
    h = Harness(script(ok_user()), credentials=source)
    # When / Then nothing reaches ComputeStacks
    with pytest.raises(UpstreamAuthFailed) as caught:
        h.client.get_user(UserSelector.by_id(42))
    assert caught.value.message == "ComputeStacks rejected the API credentials."
    assert h.requests == [] and h.client.request_count == 0


def test_the_source_may_stop_the_client_itself() -> None:
    class Stopping(FakeSource):
        def rejected(self, used: tuple[str, str]) -> tuple[str, str] | None:
            raise UpstreamAuthFailed("ComputeStacks rejected the API credentials.", upstream="ComputeStacks")

    h = Harness(script(errors(401, "Not Authorized")), credentials=Stopping())
    with pytest.raises(UpstreamAuthFailed):
        h.client.get_user(UserSelector.by_id(42))
    assert len(h.requests) == 1


def test_a_create_refused_at_login_is_resent_with_the_new_pair() -> None:
    # Given a 401 (refused before anything was applied) to a create
    h = Harness(answer_for(ROTATED, lambda: ok_user(201)), credentials=FakeSource())
    # When the user is created
    user = h.client.create_user({"email": "jane@example.com"})
    # Then the create went again with the new pair and succeeded once
    assert user == USER
    assert [r.method for r in h.requests] == ["POST", "POST"]


def test_credentials_win_over_the_key_and_secret_which_may_then_be_empty() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return ok_user()

    client = ComputeStacksClient(BASE, "", "", credentials=FakeSource(pair=ROTATED),
                                 transport=httpx.MockTransport(handler))
    client.get_user(UserSelector.by_id(42))
    assert requests[0].headers["authorization"] == basic(ROTATED)


def test_static_credentials_have_nothing_else_to_offer() -> None:
    from cswhmcs.adapters.computestacks import StaticCredentials

    static = StaticCredentials(KEY, SECRET)
    assert static.current() == (KEY, SECRET)
    assert static.rejected((KEY, SECRET)) is None and static.usable((KEY, SECRET))
    assert SECRET not in repr(static)


def test_a_rotated_secret_is_scrubbed_from_messages_too() -> None:
    h = Harness(answer_for(ROTATED, lambda: errors(422, f"Secret {ROTATED[1]} is odd")), credentials=FakeSource())
    with pytest.raises(UpstreamRejected) as caught:
        h.client.get_user(UserSelector.by_id(1))
    assert ROTATED[1] not in caught.value.message and "[redacted]" in caught.value.message


# ---------------------------------------------------------------------------- deadline (issue 8)


def hanging(clock: FakeClock) -> Handler:
    """ComputeStacks that never answers: each attempt lasts its whole read timeout."""

    def handler(request: httpx.Request) -> httpx.Response:
        clock.now += request.extensions["timeout"]["read"]
        raise httpx.ReadTimeout("timed out", request=request)

    return handler


def test_a_hanging_computestacks_ends_inside_the_deadline() -> None:
    from cswhmcs import deadline

    # Given ComputeStacks hanging, a 10 s timeout, and 23 s left
    clock = FakeClock()
    requests: list[httpx.Request] = []
    handler = hanging(clock)

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    client = ComputeStacksClient(BASE, KEY, SECRET, transport=httpx.MockTransport(record), sleep=clock.sleep)
    # When a user is fetched
    with deadline.use(deadline.Deadline.after(23, clock=clock)), pytest.raises(UpstreamTimeout) as caught:
        client.get_user(UserSelector.by_id(1))
    # Then the last attempt's timeout was cut to what was left, and it all ended at the deadline
    assert [r.extensions["timeout"]["read"] for r in requests] == [10.0, 10.0, pytest.approx(2.25)]
    assert clock.now == pytest.approx(23.0)
    assert caught.value.status == 504


def test_a_create_is_not_sent_without_time_for_a_whole_attempt() -> None:
    from cswhmcs import deadline
    from cswhmcs.adapters.retry import OutOfTime

    # Given 5 s left and an attempt that may need 3 s to connect and 10 s to answer
    h = Harness(script(ok_user(201)))
    # When / Then the create is not sent (it could only end as "maybe created")
    with deadline.use(deadline.Deadline.after(5)), pytest.raises(OutOfTime) as caught:
        h.client.create_user({"email": "jane@example.com"})
    assert h.requests == [] and caught.value.maybe_applied is False
    assert h.client.attempt_seconds == 13.0


def test_a_429_that_does_not_fit_the_deadline_is_a_504_at_once() -> None:
    from cswhmcs import deadline

    h = Harness(script(throttled("120")))
    with deadline.use(deadline.Deadline.after(23)), pytest.raises(RateLimited) as caught:
        h.client.get_user(UserSelector.by_id(1))
    assert h.sleeps == [] and h.client.request_count == 1
    assert caught.value.status == 504
    assert "retry in 120 seconds" in caught.value.message
