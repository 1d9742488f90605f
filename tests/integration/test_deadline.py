"""One time budget per request (issue 8, API.md section 2): whatever the upstreams do, every route that
calls ComputeStacks or WHMCS answers in the error shape within 25 s, through `cswhmcs serve` with the real
budget and the default upstream timeouts; the billing worker ends an account before its Lambda's timeout.

The routes run concurrently, so the hanging case costs one budget (~23 s) in all.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cswhmcs.api import reset_deps
from cswhmcs.billing.handlers import worker_handler
from cswhmcs.billing.messages import Account, RunContext, WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.run import build_runtime
from cswhmcs.billing.worker import WORKER_MARGIN_SECONDS
from cswhmcs.signing import sign_headers
from tests.conftest import LiveStack
from tests.support.billing_stack import OCT_END, BillingStack
from tests.support.live import create, params, seed_order

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_SECONDS = 25.0  # API.md section 2
MAPPED, IMPORTED, NEW = 42, 77, 43


def real_timeouts(stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults an operator gets (10 s per attempt, 3 s to connect), not the suite's short ones."""
    for name in ("CS_TIMEOUT", "WHMCS_TIMEOUT", "CONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    reset_deps()


def seed(stack: LiveStack) -> dict[str, tuple[str, dict[str, Any]]]:
    """A linked service, an imported one (no mapping: found by email), an order; every upstream route."""
    create(stack, MAPPED)
    stack.cs.add_user("imported@example.org", "Imp", "Orted")
    group = stack.cs.add_user_group("pro")
    order = seed_order(stack)
    for route in stack.server.api.routes.values():  # warm, as a deployed function would be
        stack.server.api.handler_for(route)
    return {
        "create": ("/v1/accounts/create", {**params(NEW), "password": "Xy7pQ2mN4kLm"}),
        "suspend": ("/v1/accounts/suspend", params(MAPPED)),
        "unsuspend": ("/v1/accounts/unsuspend", params(MAPPED)),
        "terminate": ("/v1/accounts/terminate", params(MAPPED)),
        "change-password": ("/v1/accounts/change-password", {**params(MAPPED), "password": "N3wPassw0rd!x"}),
        "change-package": ("/v1/accounts/change-package", params(MAPPED, configoption1=str(group["id"]))),
        "sso": ("/v1/accounts/sso", params(MAPPED)),
        "overview": ("/v1/accounts/overview", params(MAPPED)),
        "lookup chain": ("/v1/accounts/overview", params(IMPORTED, username="imported@example.org")),
        "list": ("/v1/accounts/list", {}),
        "list paged": ("/v1/accounts/list", {"page": 1, "page_size": 50}),
        "user-groups": ("/v1/user-groups", {}),
        "connection test": ("/v1/connection/test", {}),
        "order-paid": ("/v1/hooks/order-paid", order["body"]),
    }


def call_all(stack: LiveStack, routes: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, tuple[float, Any]]:
    """Every route at once, each timed from when its signed request is sent (one shared client: building
    one per request would time the test's own overhead) to its answer."""

    def one(client: httpx.Client, route: str, body: dict[str, Any]) -> tuple[float, Any]:
        content = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **sign_headers(stack.signing_secret, route, content)}
        started = time.monotonic()
        try:
            resp = client.post(stack.url + route, content=content, headers=headers)
        except httpx.HTTPError as exc:  # no answer at all breaks the contract too
            return time.monotonic() - started, exc
        return time.monotonic() - started, resp

    limits = httpx.Limits(max_connections=len(routes), max_keepalive_connections=0)
    with httpx.Client(timeout=40, limits=limits) as client, ThreadPoolExecutor(max_workers=len(routes)) as pool:
        futures = {name: pool.submit(one, client, route, body) for name, (route, body) in routes.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_error_shape_in_time(answers: dict[str, tuple[float, Any]], *, status: int) -> None:
    problems = []
    for name, (elapsed, resp) in answers.items():
        if not isinstance(resp, httpx.Response):
            problems.append(f"{name}: no answer ({type(resp).__name__}) after {elapsed:.1f} s")
            continue
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and body.get("result") == "error" and isinstance(body.get("message"), str)
                and isinstance(body.get("code"), str) and body["message"]):
            problems.append(f"{name}: not the API.md error shape: {resp.status_code} {resp.text[:200]}")
        elif resp.status_code != status:
            problems.append(f"{name}: {resp.status_code} {body}")
        if elapsed >= CONTRACT_SECONDS:
            problems.append(f"{name}: answered after {elapsed:.1f} s")
    assert not problems, "\n".join(problems)


def test_hanging_upstreams_every_route_answers_504_in_time_and_nothing_is_half_written(
        live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the default timeouts, the accounts and order of every route, then both upstreams hanging 40 s
    real_timeouts(live_stack, monkeypatch)
    routes = seed(live_stack)
    live_stack.cs.reset_requests()
    live_stack.cs.hang(40)
    live_stack.whmcs.hang(40)
    # When every route is called at once
    answers = call_all(live_stack, routes)
    # Then each answered 504 in the error shape within 25 s (without the deadline: 31 s and more)
    assert_error_shape_in_time(answers, status=504)
    assert "ComputeStacks" in answers["overview"][1].json()["message"]
    tested = answers["connection test"][1].json()
    assert tested["code"] == "both_unreachable" and "ComputeStacks: too slow" in tested["message"] \
        and "WHMCS: too slow" in tested["message"]
    # And nothing is half-written: no mapping for the service being created, none for the imported one,
    # the order kept open for the daily retry (not claimed), no request reached the hanging ComputeStacks
    mapped = {int(item["service_id"]) for item in live_stack.tables.scan("accounts")}
    assert mapped == {MAPPED}
    [credit] = [i for i in live_stack.tables.scan("ledger") if str(i["pk"]).startswith("order#")]
    assert credit["status"] == "open"
    assert live_stack.cs.requests == []


def test_throttling_upstreams_every_route_answers_504_at_once(live_stack: LiveStack,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the default timeouts, then both upstreams answering 429 with Retry-After: 120 to everything
    real_timeouts(live_stack, monkeypatch)
    routes = seed(live_stack)
    live_stack.cs.throttle_all(120)
    live_stack.whmcs.throttle_all(120)
    # When every route is called
    started = time.monotonic()
    answers = call_all(live_stack, routes)
    # Then none waited for a Retry-After that cannot fit: 504s that say so, quickly
    assert_error_shape_in_time(answers, status=504)
    assert time.monotonic() - started < 10
    message = answers["suspend"][1].json()["message"]
    assert "ComputeStacks is throttling" in message and "120 seconds" in message
    assert "WHMCS is throttling" in answers["order-paid"][1].json()["message"]
    assert {int(item["service_id"]) for item in live_stack.tables.scan("accounts")} == {MAPPED}


# ---------------------------------------------------------------------- the billing worker


class Context:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def test_the_worker_ends_an_account_cleanly_before_its_timeout(tables: Any, cs_sandbox: Any,
                                                               whmcs_sandbox: Any) -> None:
    # Given two accounts with usage, the worker's real clients with the default timeouts, and a WHMCS that hangs
    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    stack.settings = stack.settings.model_copy(update={"WHMCS_TIMEOUT": 10.0, "CONNECT_TIMEOUT": 3.0})
    accts = [stack.add_account("USD"), stack.add_account("EUR", "USD")]
    for a in accts:
        stack.add_usage(a, "containerm", start=OCT_END - timedelta(days=3), end=OCT_END, total="0.25")
    runtime = build_runtime(stack.settings, options=BillingOptions(cs_limit=10**7, whmcs_rate=10_000,
                                                                    whmcs_burst=100))
    run = RunContext("bill#2026-10-31T23:00:00Z", "bill", OCT_END, "quantity")
    template = json.loads((ROOT / "events/billing_worker.json").read_text())["Records"][0]
    records = [dict(template, messageId=f"m{i}", body=WorkMessage(run, Account(
        a.service_id, a.cs_user_id, a.client_id, a.email, a.cs_currency)).to_json()) for i, a in enumerate(accts)]
    whmcs_sandbox.hang(40)
    # When a worker with 4 s left beyond its margin handles them (without a deadline: 31 s per account)
    lambda_time = WORKER_MARGIN_SECONDS + 4
    started = time.monotonic()
    try:
        answer = worker_handler({"Records": records}, Context(lambda_time), {}, deps=runtime.deps)
    except Exception as exc:  # raised when every record failed (as Powertools' batch processor did)
        answer = {"raised": type(exc).__name__}
    elapsed = time.monotonic() - started
    whmcs_sandbox.hang(0)
    # Then it returned before the Lambda would have been killed, every record failed for redelivery,
    # and nothing was left "sending" nor sent
    assert elapsed < lambda_time, f"the worker took {elapsed:.1f} s of its {lambda_time} s"
    assert answer in ({"raised": "BatchFailed"}, {"batchItemFailures": [
        {"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]})
    assert whmcs_sandbox.billable_items == []
    statuses = [ln.status for a in accts for ln in runtime.ledger.load(a.cs_user_id).lines.values()]
    assert "sending" not in statuses
    # And the redelivery, with WHMCS back, bills each account once
    assert worker_handler({"Records": records}, Context(900), {}, deps=runtime.deps) == {"batchItemFailures": []}
    assert len(whmcs_sandbox.billable_items) == 2
    runtime.close()



# ---------------------------------------------------------------------- the knobs themselves


def test_hang_holds_requests_until_cleared_and_never_blocks_stop() -> None:
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox

    for sandbox, path in ((ComputeStacksSandbox(), "/api/admin/locations"), (WhmcsSandbox(), "")):
        sandbox.start()
        base = sandbox.url if path == "" else sandbox.url + path
        # Given a hanging sandbox: a request gets no answer within its timeout
        sandbox.hang(40)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base, timeout=0.3)
        # When the knob is cleared, a waiting request is answered at once
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(httpx.post, base, timeout=5)
            time.sleep(0.2)
            sandbox.hang(0)
            assert isinstance(waiting.result(), httpx.Response)  # answered (whatever it says)
        # And stop() does not wait for requests that hang
        sandbox.hang(40)
        with ThreadPoolExecutor(max_workers=1) as pool:
            hung = pool.submit(httpx.post, base, timeout=5)
            time.sleep(0.2)
            started = time.monotonic()
            sandbox.stop()
            assert time.monotonic() - started < 3
            with pytest.raises(httpx.HTTPError):
                hung.result()


def test_throttle_all_answers_429_with_retry_after(cs_sandbox: Any, whmcs_sandbox: Any) -> None:
    cs_sandbox.throttle_all(120)
    whmcs_sandbox.throttle_all(120)
    cs = httpx.get(cs_sandbox.url + "/api/admin/locations", headers={"Accept": "application/json"})
    wh = httpx.post(whmcs_sandbox.url, data={"action": "GetHealthStatus"})
    assert (cs.status_code, cs.text, cs.headers["retry-after"], cs.headers["ratelimit-remaining"]) == \
        (429, "Throttled\n", "120", "0")
    assert (wh.status_code, wh.headers["retry-after"]) == (429, "120")
    cs_sandbox.clear_faults()
    whmcs_sandbox.throttle_all(None)
    assert httpx.get(cs_sandbox.url + "/api/admin/locations").status_code != 429
    assert httpx.post(whmcs_sandbox.url, data={"action": "GetHealthStatus"}).status_code != 429
