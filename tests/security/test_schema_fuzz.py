"""A schema-based fuzz run (Schemathesis, from docs/openapi.json) against `cswhmcs serve`.

Every operation of the committed OpenAPI document gets positive and negative examples (bounded, derandomized),
each signed as API.md section 1 says by a requests auth hook (X-CSW-Timestamp, X-CSW-Signature over the exact
bytes sent, route = the path). The answers must never be a 5xx (the sandboxes are healthy) or a 401 (every
request is signed), and must conform to the document: a documented status, JSON, and the documented schema
(the success model, or the API.md error shape).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import LiveStack
from tests.security.capture import SecretsRegistry
from tests.security.conftest import ALL_ROUTES, TOKEN_ROUTES, Signer, link_account, seed_order

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.json"))
EXAMPLES = int(os.environ.get("CSW_SCHEMA_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The signature headers are the auth hook's job; fixed here so that nothing is generated for them.
PLACEHOLDER_HEADERS = {"X-CSW-Timestamp": "0", "X-CSW-Signature": "v1=" + "0" * 64}


class SignRequest(requests.auth.AuthBase):
    """The signing hook: signs the prepared request's exact body for its path."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.signed = 0

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        raw: Any = r.body or b""
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        route = urlsplit(r.url or "").path
        r.headers.update(self.signer.headers(route, body))
        self.signed += 1
        return r


def operations() -> dict[str, Any]:
    ops = {}
    for result in SCHEMA.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # an Err would raise here: the document is ours
        ops[op.path] = op
    return ops


OPERATIONS = operations()


def test_the_document_covers_every_route() -> None:
    assert sorted(OPERATIONS) == sorted(ALL_ROUTES + TOKEN_ROUTES)


@pytest.mark.parametrize("route", ALL_ROUTES, ids=[r.removeprefix("/v1/") for r in ALL_ROUTES])
def test_schema_fuzz_never_5xx_and_answers_as_documented(live_stack: LiveStack, route: str) -> None:
    # Given a linked account (service 1, what generated ids often are) and a paid order, so that some
    # generated requests get past the lookups
    link_account(live_stack, 1)
    seed_order(live_stack)
    op = OPERATIONS[route]
    sign = SignRequest(Signer())
    session = requests.Session()
    strategy = op.as_strategy(GenerationMode.POSITIVE, headers=PLACEHOLDER_HEADERS) | \
        op.as_strategy(GenerationMode.NEGATIVE, headers=PLACEHOLDER_HEADERS)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=live_stack.url, session=session, auth=sign, timeout=30)
        assert response.status_code != 401, f"a signed request was refused: {response.text[:300]}"
        case.validate_response(response, checks=CHECKS)

    try:
        fuzz()
    finally:
        session.close()
    assert sign.signed >= EXAMPLES // 2  # the hook really signed what was sent


class TokenQuery(requests.auth.AuthBase):
    """The users webhook's authentication: the ``token`` query parameter (API.md section 3)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent = 0

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.prepare_url(r.url, {"token": self.token})
        self.sent += 1
        return r


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=[r.removeprefix("/v1/") for r in TOKEN_ROUTES])
def test_schema_fuzz_of_the_token_route_never_5xx_and_answers_as_documented(
        live_stack: LiveStack, route: str, monkeypatch: pytest.MonkeyPatch, secrets_registry: SecretsRegistry) -> None:
    # Given the webhook's token set (and watched for in every log line) and a linked account (user ids the
    # generator often picks)
    from cswhmcs.api import reset_deps

    secrets_registry.register("fuzz-hook-token-5d1e", "CS_WEBHOOK_TOKEN")
    monkeypatch.setenv("CS_WEBHOOK_TOKEN", "fuzz-hook-token-5d1e")
    reset_deps()
    link_account(live_stack, 1)
    op = OPERATIONS[route]
    auth = TokenQuery("fuzz-hook-token-5d1e")
    session = requests.Session()
    strategy = op.as_strategy(GenerationMode.POSITIVE) | op.as_strategy(GenerationMode.NEGATIVE)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=live_stack.url, session=session, auth=auth, timeout=30)
        assert response.status_code != 401, f"a request with the token was refused: {response.text[:300]}"
        case.validate_response(response, checks=CHECKS)

    try:
        fuzz()
    finally:
        session.close()
    assert auth.sent >= EXAMPLES // 2
