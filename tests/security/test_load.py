"""A bounded loopback load run against a real `cswhmcs serve` process (issue 8 §4; tests/security/load.py):
5,000 signed requests (500 of them warm-up) at concurrency 32 over the routes of 40 linked accounts
(overview, sso, suspend, unsuspend, user-groups, list paged and whole): no error, and the serve process's
RSS grows by at most 10 % from after the warm-up to the end. `make bench` (bench/bench_api.py) runs the
same thing and reports requests/s, p99 and p99 / median."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.security.capture import SecretsRegistry
from tests.security.load import SIGNING_SECRET, LoadStack

pytestmark = pytest.mark.integration

TOTAL, WARMUP, CONCURRENCY = 5000, 500, 32


def test_five_thousand_signed_requests_at_concurrency_32_no_errors_bounded_memory(
        ddb_endpoint: str, secrets_registry: SecretsRegistry) -> None:
    secrets_registry.register(SIGNING_SECRET, "signing secret")

    def remember_token(route: str, answer: dict[str, Any]) -> None:
        if route == "/v1/accounts/sso":  # the SSO tokens the sandbox issued must never reach a log
            for token in parse_qs(urlsplit(answer["redirect_url"]).query).get("token", []):
                secrets_registry.register(token, "SSO token issued by ComputeStacks")

    stack = LoadStack(ddb_endpoint, accounts=40).start()
    try:
        result = stack.run(TOTAL, concurrency=CONCURRENCY, warmup=WARMUP, on_answer=remember_token)
    finally:
        output = stack.stop()
        secrets_registry.capture(output, "output of the cswhmcs serve process (load run)")
    print(result.summary())
    assert result.errors == 0, result.error_samples
    assert result.requests + result.warmup >= 5000 and result.concurrency >= 32
    assert set(result.by_route) == {"/v1/accounts/overview", "/v1/accounts/sso", "/v1/accounts/suspend",
                                    "/v1/accounts/unsuspend", "/v1/user-groups", "/v1/accounts/list"}
    assert result.rss_growth <= 0.10, result.summary()
    # The serve process logged one line per request (and the capture above scans them for secrets)
    assert output.count(" -> 200 ") >= TOTAL
