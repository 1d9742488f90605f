"""The signing matrix (API.md section 1) through `cswhmcs serve`, on routes that would write if accepted.

Each refused request answers 401 in the API.md error shape and changes nothing anywhere: no DynamoDB item
(accounts, ledger, idempotency: not even a replay record), no ComputeStacks or WHMCS request, no user
created or changed, no credit. Each accepted variant really carries out the action (so the refusals are
not refused for some other reason). tests/unit/test_signing.py covers `verify()` itself;
tests/integration/test_api_surface.py a first few of these over HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cswhmcs.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, compute_signature, sign_headers
from tests.conftest import OLD_SIGNING_SECRET, SIGNING_SECRET, LiveStack
from tests.security.conftest import (
    ALL_ROUTES,
    Snapshot,
    create_body,
    error_shape_problems,
    link_account,
    post,
    seed_order,
)

pytestmark = pytest.mark.integration

WRONG_SECRET = "wrong-signing-secret-7Hq2"
RETIRED_SECRET = "test-signing-secret-retired"


# ---------------------------------------------------------------------- what each route would change


@dataclass
class Target:
    route: str
    prepare: Callable[[LiveStack, int], dict[str, Any]]  # a fresh body whose action would write
    applied: Callable[[LiveStack, dict[str, Any]], bool]  # did the action happen?


def _created(stack: LiveStack, body: dict[str, Any]) -> bool:
    return any(u.get("external_id") == str(body["serviceid"]) for u in stack.cs.users.values())


def _suspend_target(stack: LiveStack, n: int) -> dict[str, Any]:
    link_account(stack, 2000 + n)
    return {"serviceid": 2000 + n, "userid": 7}


def _suspended(stack: LiveStack, body: dict[str, Any]) -> bool:
    return any(u.get("external_id") == str(body["serviceid"]) and not u["active"] for u in stack.cs.users.values())


def _credited(stack: LiveStack, body: dict[str, Any]) -> bool:
    return any(int(c.get("clientid", c.get("client_id", 0))) == body["userId"] for c in stack.whmcs.credits)


TARGETS = {
    "create": Target("/v1/accounts/create", lambda s, n: create_body(1000 + n), _created),
    "suspend": Target("/v1/accounts/suspend", _suspend_target, _suspended),
    "order-paid": Target("/v1/hooks/order-paid", lambda s, n: seed_order(s), _credited),
}


# ---------------------------------------------------------------------- the matrix

# (route, body) -> (headers, body actually sent, route actually posted to)
Mutation = Callable[[str, bytes], tuple[dict[str, str], bytes]]


def now() -> int:
    # Rounded, so that "299 s" stays 299 +- 0.5 s by the time the server looks (int() could make it 299.99).
    return round(time.time())


def signed(route: str, body: bytes, *, secret: str = SIGNING_SECRET, at: int | None = None) -> dict[str, str]:
    return sign_headers(secret, route, body, now=now() if at is None else at)


def _with(route: str, body: bytes, **headers: str) -> dict[str, str]:
    h = signed(route, body)
    for name, value in headers.items():
        h[{"ts": TIMESTAMP_HEADER, "sig": SIGNATURE_HEADER}[name]] = value
    return h


def _hex(route: str, body: bytes, ts: int | str | None = None) -> str:
    return compute_signature(SIGNING_SECRET.encode(), now() if ts is None else ts, route, body)[3:]


def _tamper(body: bytes) -> bytes:
    """The body with its first digit changed (an id, an amount): still valid JSON, another request."""
    at = next(i for i, c in enumerate(body) if chr(c).isdigit())
    return body[:at] + str((int(chr(body[at])) + 1) % 10).encode() + body[at + 1:]


def _other_route(route: str) -> str:
    return "/v1/accounts/unsuspend" if route != "/v1/accounts/unsuspend" else "/v1/accounts/suspend"


REFUSED: dict[str, tuple[str, Mutation]] = {
    # name: (expected code, mutation)
    "unsigned": ("signature_missing", lambda r, b: ({}, b)),
    "timestamp only": ("signature_missing", lambda r, b: ({TIMESTAMP_HEADER: str(now())}, b)),
    "signature only": ("signature_missing", lambda r, b: ({SIGNATURE_HEADER: signed(r, b)[SIGNATURE_HEADER]}, b)),
    "empty headers": ("signature_missing", lambda r, b: ({TIMESTAMP_HEADER: "", SIGNATURE_HEADER: ""}, b)),
    "timestamp not a number": ("signature_malformed", lambda r, b: (_with(r, b, ts="soon"), b)),
    "negative timestamp": ("signature_malformed", lambda r, b: (
        {TIMESTAMP_HEADER: "-5", SIGNATURE_HEADER: "v1=" + _hex(r, b, "-5")}, b)),
    "fractional timestamp": ("signature_malformed", lambda r, b: (
        {TIMESTAMP_HEADER: f"{now()}.5", SIGNATURE_HEADER: "v1=" + _hex(r, b, f"{now()}.5")}, b)),
    "timestamp in milliseconds": ("signature_", lambda r, b: (
        {TIMESTAMP_HEADER: str(now() * 1000), SIGNATURE_HEADER: "v1=" + _hex(r, b, now() * 1000)}, b)),
    "no v1= prefix": ("signature_malformed", lambda r, b: (_with(r, b, sig=_hex(r, b)), b)),
    "v2= scheme": ("signature_malformed", lambda r, b: (_with(r, b, sig="v2=" + _hex(r, b)), b)),
    "63 hex digits": ("signature_malformed", lambda r, b: (_with(r, b, sig="v1=" + _hex(r, b)[:-1]), b)),
    "65 hex digits": ("signature_malformed", lambda r, b: (_with(r, b, sig="v1=" + _hex(r, b) + "0"), b)),
    "not hex": ("signature_malformed", lambda r, b: (_with(r, b, sig="v1=" + _hex(r, b)[:-1] + "g"), b)),
    "uppercase hex": ("signature_malformed", lambda r, b: (_with(r, b, sig="v1=" + _hex(r, b).upper()), b)),
    "two signatures in one header": ("signature_malformed", lambda r, b: (
        _with(r, b, sig=f"v1={_hex(r, b)},v1={_hex(r, b)}"), b)),
    "zero signature": ("signature_invalid", lambda r, b: (_with(r, b, sig="v1=" + "0" * 64), b)),
    "wrong secret": ("signature_invalid", lambda r, b: (signed(r, b, secret=WRONG_SECRET), b)),
    "retired secret": ("signature_invalid", lambda r, b: (signed(r, b, secret=RETIRED_SECRET), b)),
    "both secrets as one key": ("signature_invalid", lambda r, b: (
        signed(r, b, secret=f"{SIGNING_SECRET},{OLD_SIGNING_SECRET}"), b)),
    "tampered body: a value changed": ("signature_invalid", lambda r, b: (signed(r, b), _tamper(b))),
    "tampered body: whitespace added": ("signature_invalid", lambda r, b: (signed(r, b), b + b" ")),
    "tampered body: same JSON, other bytes": ("signature_invalid", lambda r, b: (
        signed(r, b), json.dumps(json.loads(b), separators=(",", ":")).encode())),
    "another route's signature": ("signature_invalid", lambda r, b: (signed(_other_route(r), b), b)),
    "signed with the stage prefix": ("signature_invalid", lambda r, b: (signed("/Prod" + r, b), b)),
    "signed with a trailing slash": ("signature_invalid", lambda r, b: (signed(r + "/", b), b)),
    "timestamp changed after signing": ("signature_invalid", lambda r, b: (
        _with(r, b, ts=str(now() - 1)), b)),
    "stale by 301 s": ("signature_stale", lambda r, b: (signed(r, b, at=now() - 301), b)),
    "future by 301 s": ("signature_stale", lambda r, b: (signed(r, b, at=now() + 301), b)),
    "stale by a day": ("signature_stale", lambda r, b: (signed(r, b, at=now() - 86_400), b)),
}

ACCEPTED: dict[str, Callable[[str, bytes], dict[str, str]]] = {
    "current secret": lambda r, b: signed(r, b),
    "previous secret (rotation)": lambda r, b: signed(r, b, secret=OLD_SIGNING_SECRET),
    "299 s old": lambda r, b: signed(r, b, at=now() - 299),
    "299 s ahead": lambda r, b: signed(r, b, at=now() + 299),
    "lower-case header names": lambda r, b: {k.lower(): v for k, v in signed(r, b).items()},
}


def upstream_calls(stack: LiveStack) -> tuple[int, int]:
    return len(stack.cs.requests), len(stack.whmcs.requests)


def refusal_problems(resp: Any, code: str, headers: dict[str, str]) -> list[str]:
    problems = []
    if resp.status_code != 401:
        return [f"answered {resp.status_code}, not 401: {resp.text[:200]}"]
    problems += error_shape_problems(resp.status_code, resp.text)
    if not problems and not resp.json()["code"].startswith(code):
        problems.append(f"code {resp.json()['code']!r}, expected {code!r}")
    sig = headers.get(SIGNATURE_HEADER, "")
    for secret in (SIGNING_SECRET, OLD_SIGNING_SECRET, WRONG_SECRET, sig[3:] if len(sig) > 10 else "\0"):
        if secret in resp.text:
            problems.append("the answer echoes a secret or signature")
    return problems


@pytest.mark.parametrize("target", list(TARGETS), ids=list(TARGETS))
def test_every_refused_variant_is_401_and_changes_nothing(live_stack: LiveStack, target: str) -> None:
    t = TARGETS[target]
    body = t.prepare(live_stack, 0)
    raw = json.dumps(body).encode()
    failures: list[str] = []
    start = Snapshot.take(live_stack)
    for name, (code, mutate) in REFUSED.items():
        # Given a refused request
        headers, sent = mutate(t.route, raw)
        upstream = upstream_calls(live_stack)
        # When it arrives
        resp = post(live_stack, t.route, sent, headers)
        # Then 401 in the error shape, and no upstream was even asked
        failures += [f"{name}: {p}" for p in refusal_problems(resp, code, headers)]
        if upstream_calls(live_stack) != upstream:
            failures.append(f"{name}: an upstream was called")
    # And nothing at all changed anywhere (DynamoDB, users, credits)
    failures += start.differences(Snapshot.take(live_stack))
    assert failures == []
    assert not t.applied(live_stack, body)
    # And the very same body, signed properly, is carried out (so each refusal was the signature's doing)
    resp = post(live_stack, t.route, raw, signed(t.route, raw))
    assert resp.status_code == 200, resp.text
    assert t.applied(live_stack, body)


@pytest.mark.parametrize("target", list(TARGETS), ids=list(TARGETS))
def test_every_accepted_variant_is_carried_out(live_stack: LiveStack, target: str) -> None:
    t = TARGETS[target]
    failures = []
    for n, (name, sign) in enumerate(ACCEPTED.items(), start=1):
        body = t.prepare(live_stack, n)
        raw = json.dumps(body).encode()
        resp = post(live_stack, t.route, raw, sign(t.route, raw))
        if resp.status_code != 200 or resp.json().get("result") != "success":
            failures.append(f"{name}: {resp.status_code} {resp.text[:200]}")
        elif not t.applied(live_stack, body):
            failures.append(f"{name}: answered success but nothing was done")
    assert failures == []


@pytest.mark.parametrize("target", list(TARGETS), ids=list(TARGETS))
def test_a_replay_within_the_window_is_401_and_changes_nothing(live_stack: LiveStack, target: str) -> None:
    # Given a request accepted and carried out
    t = TARGETS[target]
    body = t.prepare(live_stack, 0)
    raw = json.dumps(body).encode()
    headers = signed(t.route, raw)
    first = post(live_stack, t.route, raw, headers)
    assert first.status_code == 200, first.text
    assert t.applied(live_stack, body)
    before = Snapshot.take(live_stack)
    # When exactly the same request arrives again, twice
    replays = [post(live_stack, t.route, raw, headers), post(live_stack, t.route, raw, headers)]
    # Then both are refused as replays and nothing changed (not even a second replay record)
    for resp in replays:
        assert refusal_problems(resp, "signature_replayed", headers) == []
    assert before.differences(Snapshot.take(live_stack)) == []
    # And the same signature on another route is simply invalid there
    other = post(live_stack, _other_route(t.route), raw, headers)
    assert refusal_problems(other, "signature_invalid", headers) == []
    # While a retry signed anew (a new timestamp) is accepted and answers the same success
    again = post(live_stack, t.route, raw, signed(t.route, raw, at=int(headers[TIMESTAMP_HEADER]) + 1))
    assert again.status_code == 200 and again.json() == first.json()


def test_every_route_refuses_unsigned_stale_and_wrongly_signed_requests(live_stack: LiveStack) -> None:
    link_account(live_stack, 42)
    raw = json.dumps({"serviceid": 42, "userid": 7}).encode()
    failures = []
    start = Snapshot.take(live_stack)
    for route in ALL_ROUTES:
        for name, (code, mutate) in [("unsigned", REFUSED["unsigned"]), ("wrong secret", REFUSED["wrong secret"]),
                                     ("stale by 301 s", REFUSED["stale by 301 s"]),
                                     ("another route's signature", REFUSED["another route's signature"])]:
            headers, sent = mutate(route, raw)
            upstream = upstream_calls(live_stack)
            resp = post(live_stack, route, sent, headers)
            failures += [f"{route} {name}: {p}" for p in refusal_problems(resp, code, headers)]
            if upstream_calls(live_stack) != upstream:
                failures.append(f"{route} {name}: an upstream was called")
    failures += start.differences(Snapshot.take(live_stack))
    assert failures == []


def test_without_a_configured_secret_every_request_is_refused(live_stack: LiveStack,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from cswhmcs.api import reset_deps

    # Given a backend whose SIGNING_SECRET is empty
    monkeypatch.setenv("SIGNING_SECRET", " , ")
    reset_deps()
    link_account(live_stack, 42)
    raw = json.dumps({"serviceid": 42}).encode()
    before = Snapshot.take(live_stack)
    # When requests arrive signed with the old secret, or with an empty key
    answers = [post(live_stack, "/v1/accounts/suspend", raw, signed("/v1/accounts/suspend", raw)),
               post(live_stack, "/v1/accounts/suspend", raw,
                    {TIMESTAMP_HEADER: str(now()),
                     SIGNATURE_HEADER: compute_signature(b"", now(), "/v1/accounts/suspend", raw)})]
    # Then all are 401 and nothing happened
    for resp in answers:
        assert resp.status_code == 401 and error_shape_problems(401, resp.text) == [], resp.text
    assert before.differences(Snapshot.take(live_stack)) == []
