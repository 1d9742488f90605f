"""A schema-based fuzz run (Schemathesis, from docs/openapi.json) against `cswhmcs serve`.

Every operation of the committed OpenAPI document gets positive and negative examples (bounded, derandomized),
each signed as API.md section 1 says by a requests auth hook (X-CSW-Timestamp, X-CSW-Signature over the exact
bytes sent, route = the path). The answers must never be a 5xx (the sandboxes are healthy) or a 401 (every
request is signed), and must conform to the document: a documented status, JSON, and the documented schema
(the success model, or the API.md error shape).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import LiveStack
from tests.security.conftest import ALL_ROUTES, TOKEN_ROUTES, Signer, link_account, seed_order
from tests.support.fuzz import fuzz_operation, operations

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("CSW_SCHEMA_EXAMPLES", "25"))
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


OPERATIONS = operations()


def test_the_document_covers_every_route() -> None:
    # (the token-authenticated route's own fuzz run: tests/integration/test_cs_user_hook.py)
    assert sorted(OPERATIONS) == sorted(ALL_ROUTES + TOKEN_ROUTES)


@pytest.mark.parametrize("route", ALL_ROUTES, ids=[r.removeprefix("/v1/") for r in ALL_ROUTES])
def test_schema_fuzz_never_5xx_and_answers_as_documented(live_stack: LiveStack, route: str) -> None:
    # Given a linked account (service 1, what generated ids often are) and a paid order, so that some
    # generated requests get past the lookups
    link_account(live_stack, 1)
    seed_order(live_stack)
    sign = SignRequest(Signer())
    # When its examples are sent, each signed; Then none is refused and every answer is as documented
    fuzz_operation(OPERATIONS[route], live_stack.url, sign, examples=EXAMPLES, refused="a signed request",
                   headers=PLACEHOLDER_HEADERS)
    assert sign.signed >= EXAMPLES // 2  # the hook really signed what was sent

