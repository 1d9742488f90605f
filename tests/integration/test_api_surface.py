"""The HTTP surface through `cswhmcs serve`: signing, replay, bad bodies, the first vertical slice."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from cswhmcs.signing import sign_headers
from tests.conftest import OLD_SIGNING_SECRET, LiveStack
from tests.support.live import create_body

pytestmark = pytest.mark.integration



def test_connection_test_answers_a_signed_request(live_stack: LiveStack) -> None:
    # When
    resp = live_stack.call("/v1/connection/test", {})
    # Then
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"] == "success"
    assert any("/v1/connection/test -> 200" in line for line in live_stack.log_lines)


def test_create_end_to_end_stores_the_mapping_and_a_repeat_creates_no_second_user(live_stack: LiveStack) -> None:
    # Given a new service
    # When it is created twice (each request signed anew)
    first = live_stack.call("/v1/accounts/create", create_body())
    second = live_stack.call("/v1/accounts/create", create_body())
    # Then one ComputeStacks user exists, both answers agree, and the mapping is in DynamoDB Local
    assert first.status_code == 200, first.text
    assert second.json() == first.json()
    users = [u for u in live_stack.cs.users.values() if not u.get("is_admin")]
    assert len(users) == 1
    body = first.json()
    assert body["username"] == users[0]["email"] and body["cs_user_id"] == users[0]["id"]
    mappings = live_stack.tables.scan("accounts")
    assert [(int(m["service_id"]), int(m["cs_user_id"])) for m in mappings] == [(42, users[0]["id"])]


def _cs_writes(stack: LiveStack) -> list[Any]:
    return [r for r in stack.cs.requests if r["method"] != "GET"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CSW-Timestamp": str(int(time.time()))},
        {"X-CSW-Timestamp": str(int(time.time())), "X-CSW-Signature": "v1=" + "0" * 64},
    ],
    ids=["unsigned", "no signature", "wrong signature"],
)
def test_unsigned_or_wrongly_signed_requests_get_401_and_change_nothing(live_stack: LiveStack,
                                                                       headers: dict[str, str]) -> None:
    resp = live_stack.call("/v1/accounts/create", create_body(), sign=False, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["result"] == "error" and resp.json()["message"]
    assert _cs_writes(live_stack) == [] and live_stack.tables.scan("accounts") == []


def test_stale_and_tampered_requests_get_401(live_stack: LiveStack) -> None:
    body = json.dumps(create_body()).encode()
    stale = sign_headers(live_stack.signing_secret, "/v1/accounts/create", body, now=time.time() - 301)
    assert live_stack.call("/v1/accounts/create", None, raw=body, sign=False, headers=stale).status_code == 401
    fresh = sign_headers(live_stack.signing_secret, "/v1/accounts/create", body)
    tampered = body.replace(b"Ann", b"Eve")
    assert live_stack.call("/v1/accounts/create", None, raw=tampered, sign=False, headers=fresh).status_code == 401
    # A signature for one route is refused on every other.
    other = sign_headers(live_stack.signing_secret, "/v1/accounts/suspend", body)
    assert live_stack.call("/v1/accounts/create", None, raw=body, sign=False, headers=other).status_code == 401
    assert _cs_writes(live_stack) == []


def test_a_replayed_request_is_refused_and_changes_nothing(live_stack: LiveStack) -> None:
    # Given a request accepted once
    body = json.dumps({"serviceid": 99}).encode()
    headers = sign_headers(live_stack.signing_secret, "/v1/accounts/suspend", body)
    first = live_stack.call("/v1/accounts/suspend", None, raw=body, sign=False, headers=headers)
    assert first.status_code == 404  # no such account, but the signature was accepted
    before = len(live_stack.cs.requests)
    # When the exact same signed request arrives again
    again = live_stack.call("/v1/accounts/suspend", None, raw=body, sign=False, headers=headers)
    # Then
    assert again.status_code == 401 and again.json()["code"] == "signature_replayed"
    assert len(live_stack.cs.requests) == before


def test_the_previous_secret_still_works_during_rotation(live_stack: LiveStack) -> None:
    resp = live_stack.call("/v1/connection/test", {}, secret=OLD_SIGNING_SECRET)
    assert resp.status_code == 200


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'"text"', b"", b"\xff\xfe"],
                         ids=["text", "array", "string", "empty", "binary"])
def test_a_body_that_is_not_a_json_object_is_400(live_stack: LiveStack, raw: bytes) -> None:
    resp = live_stack.call("/v1/accounts/create", None, raw=raw)
    assert resp.status_code == 400 and resp.json()["code"] == "bad_request"


def test_a_body_over_64_kib_is_400(live_stack: LiveStack) -> None:
    raw = json.dumps({"serviceid": 1, "pad": "x" * 70_000}).encode()
    resp = live_stack.call("/v1/accounts/suspend", None, raw=raw)
    assert resp.status_code == 400 and "64 KiB" in resp.json()["message"]


@pytest.mark.parametrize(("drop", "field"), [("clientsdetails", "clientsdetails"), ("serviceid", "serviceid")])
def test_create_without_a_required_field_is_422_naming_it_and_calls_nothing(live_stack: LiveStack, drop: str,
                                                                          field: str) -> None:
    body = create_body()
    del body[drop]
    resp = live_stack.call("/v1/accounts/create", body)
    assert resp.status_code == 422
    assert field in resp.json()["message"]
    assert live_stack.cs.requests == [] and live_stack.tables.scan("accounts") == []


def test_unknown_routes_get_api_gateways_answer(live_stack: LiveStack) -> None:
    resp = live_stack.call("/v1/nope", {})
    assert resp.status_code == 403


def test_a_stage_prefix_in_the_hostname_is_accepted(live_stack: LiveStack) -> None:
    import httpx

    body = b"{}"
    h = {"Content-Type": "application/json", **sign_headers(live_stack.signing_secret, "/v1/connection/test", body)}
    resp = httpx.post(live_stack.url + "/Prod/v1/connection/test", content=body, headers=h)
    assert resp.status_code == 200, resp.text
