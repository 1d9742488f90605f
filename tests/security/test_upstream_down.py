"""Upstream down: CS_API_URL / WHMCS_API_URL pointing at a closed loopback port.

Every route that calls the unreachable upstream answers 504 (`upstream_unreachable` or `upstream_timeout`;
`<side>_unreachable` for the connection test) in the API.md shape, fast (a refused connection is immediate:
well under the 3 s connect timeout, retries included), and leaves nothing half-written: no mapping, no
user, no credit; an OrderPaid whose WHMCS is unreachable is kept "open" for the daily retry (by design:
WHMCS never fires the hook again) and then credited once WHMCS is back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import LiveStack
from tests.security.conftest import Signer, Snapshot, create_body, error_shape_problems, link_account, post, seed_order
from tests.support.endpoints import closed_port

__all__ = ["closed_port"]  # the fixture (tests/support/endpoints.py), used by name

pytestmark = pytest.mark.integration

FAST = 2.5  # seconds: generous for a loaded machine, and still under the 3 s connect timeout of production


def point(monkeypatch: pytest.MonkeyPatch, name: str, port: int) -> None:
    from cswhmcs.accounts import caches
    from cswhmcs.api import reset_deps

    url = f"http://127.0.0.1:{port}" + ("/includes/api.php" if name == "WHMCS_API_URL" else "")
    monkeypatch.setenv(name, url)
    reset_deps()
    caches.clear()


def timed(stack: LiveStack, route: str, body: dict[str, Any], signer: Signer) -> tuple[Any, float]:
    raw = json.dumps(body).encode()
    started = time.perf_counter()
    resp = post(stack, route, raw, signer.headers(route, raw))
    return resp, time.perf_counter() - started


def unreachable_problems(resp: Any, elapsed: float, codes: tuple[str, ...]) -> list[str]:
    problems = []
    if resp.status_code != 504:
        return [f"answered {resp.status_code}: {resp.text[:200]}"]
    problems += error_shape_problems(504, resp.text)
    if not problems and resp.json()["code"] not in codes:
        problems.append(f"code {resp.json()['code']!r}")
    if elapsed > FAST:
        problems.append(f"took {elapsed:.2f} s")
    return problems


UNREACHABLE = ("upstream_unreachable", "upstream_timeout")


def cs_routes() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, route, body) of every request that needs ComputeStacks."""
    linked = {"serviceid": 42, "userid": 7}
    unlinked = {"serviceid": 43, "userid": 7, "username": "someone@example.org"}  # the lookup chain
    out = [("create", "/v1/accounts/create", create_body(44))]
    for name in ("suspend", "unsuspend", "terminate", "sso", "overview"):
        out.append((f"{name} (linked)", f"/v1/accounts/{name}", linked))
        out.append((f"{name} (lookup chain)", f"/v1/accounts/{name}", unlinked))
    out += [
        ("change-password", "/v1/accounts/change-password", {**linked, "password": "Down-Pw-99120a"}),
        ("change-package", "/v1/accounts/change-package", {**linked, "configoption1": "1"}),
        ("list (all pages)", "/v1/accounts/list", {}),
        ("list (one page)", "/v1/accounts/list", {"page": 1, "page_size": 100}),
        ("user-groups", "/v1/user-groups", {}),
    ]
    return out


def test_computestacks_down_every_route_is_a_fast_504_and_writes_nothing(
        live_stack: LiveStack, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Given a linked account, then ComputeStacks gone
    link_account(live_stack, 42)
    point(monkeypatch, "CS_API_URL", closed_port)
    signer = Signer()
    before = Snapshot.take(live_stack)
    # When every route that needs ComputeStacks is called (at once: each waits for its own retries)
    routes = cs_routes()
    with ThreadPoolExecutor(len(routes)) as pool:
        answers = list(pool.map(lambda r: timed(live_stack, r[1], r[2], signer), routes))
    # Then each is a fast 504
    failures = [f"{name}: {p}" for (name, _, _), (resp, elapsed) in zip(routes, answers, strict=True)
                for p in unreachable_problems(resp, elapsed, UNREACHABLE)]
    # And nothing changed but the accepted signatures' replay records: no mapping, no user
    failures += [d for d in before.differences(Snapshot.take(live_stack))
                 if d != "table idempotency changed" and "WHMCS request" not in d]
    # The connection test says which side failed
    resp, elapsed = timed(live_stack, "/v1/connection/test", {}, signer)
    failures += [f"connection test: {p}" for p in unreachable_problems(resp, elapsed, ("computestacks_unreachable",))]
    assert "ComputeStacks" in resp.json()["message"] and "WHMCS: OK" in resp.json()["message"]
    assert failures == []
    assert [int(m["service_id"]) for m in live_stack.tables.scan("accounts")] == [42]
    assert not [u for u in live_stack.cs.users.values() if u.get("external_id") == "44"]


def test_whmcs_down_order_paid_is_a_fast_504_kept_open_and_credited_once_when_whmcs_is_back(
        live_stack: LiveStack, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a paid order, then WHMCS gone
    body = seed_order(live_stack, amount="30.00")
    healthy = live_stack.whmcs.url
    point(monkeypatch, "WHMCS_API_URL", closed_port)
    signer = Signer()
    # When the hook is delivered
    resp, elapsed = timed(live_stack, "/v1/hooks/order-paid", body, signer)
    # Then a fast 504, no credit, and the order is kept open (status "open", with the hook's body)
    assert unreachable_problems(resp, elapsed, UNREACHABLE) == []
    assert live_stack.whmcs.credits == []
    [record] = [r for r in live_stack.tables.scan("ledger") if r["pk"] == f"order#{body['orderId']}"]
    assert record["status"] == "open" and json.loads(record["params"])["invoiceId"] == body["invoiceId"]
    # And a create that needs WHMCS (a currency id only) fails fast the same way, creating nothing
    before = Snapshot.take(live_stack)
    resp, elapsed = timed(live_stack, "/v1/accounts/create", create_body(
        45, clientsdetails={"client_id": 7, "firstname": "A", "lastname": "B", "email": "ab@example.org",
                            "currency": 2, "currency_code": ""}), signer)
    assert unreachable_problems(resp, elapsed, UNREACHABLE) == []
    assert [d for d in before.differences(Snapshot.take(live_stack)) if d != "table idempotency changed"] == []
    # And the connection test says WHMCS is the side that failed
    resp, elapsed = timed(live_stack, "/v1/connection/test", {}, signer)
    assert unreachable_problems(resp, elapsed, ("whmcs_unreachable",)) == []
    assert "ComputeStacks: OK" in resp.json()["message"]
    # When WHMCS is back, the daily retry credits the order once
    from cswhmcs.api import get_deps, reset_deps
    from cswhmcs.credit import retry_open_credits

    monkeypatch.setenv("WHMCS_API_URL", healthy)
    reset_deps()
    outcomes = retry_open_credits(get_deps())
    assert [o.get("credited") for o in outcomes] == ["30.00"], outcomes
    assert len(live_stack.whmcs.credits) == 1


def test_both_down_the_connection_test_names_both(live_stack: LiveStack, closed_port: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    point(monkeypatch, "CS_API_URL", closed_port)
    point(monkeypatch, "WHMCS_API_URL", closed_port)
    resp, elapsed = timed(live_stack, "/v1/connection/test", {}, Signer())
    assert unreachable_problems(resp, elapsed, ("both_unreachable",)) == []
    message = resp.json()["message"]
    assert "ComputeStacks" in message and "WHMCS" in message
