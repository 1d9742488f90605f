"""Schema-based fuzz runs (Schemathesis, from the committed docs/openapi.json) against `cswhmcs serve`: the
document's operations, and one bounded, derandomized run of positive and negative examples of an operation,
each sent with the route's authentication (tests/security/test_schema_fuzz.py signs them,
tests/integration/test_cs_user_hook.py adds the webhook's token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# A documented status, JSON, and the documented schema (the success model, or the API.md error shape); never a 5xx.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def operations() -> dict[str, Any]:
    """The document's operations by path."""
    ops = {}
    for result in schemathesis.openapi.from_path(str(OPENAPI)).get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # an Err would raise here: the document is ours
        ops[op.path] = op
    return ops


def fuzz_operation(op: Any, base_url: str, auth: requests.auth.AuthBase, *, examples: int, refused: str,
                   headers: dict[str, str] | None = None) -> None:
    """Up to ``examples`` examples of ``op``, positive and negative (``headers`` fixed: nothing is generated for
    them), each sent to ``base_url`` with ``auth``: none may be answered 401 (the failure says "``refused`` was
    refused"), and every answer must pass ``CHECKS``."""
    fixed = {} if headers is None else {"headers": headers}
    strategy = op.as_strategy(GenerationMode.POSITIVE, **fixed) | op.as_strategy(GenerationMode.NEGATIVE, **fixed)
    session = requests.Session()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, auth=auth, timeout=30)
        assert response.status_code != 401, f"{refused} was refused: {response.text[:300]}"
        case.validate_response(response, checks=CHECKS)

    try:
        fuzz()
    finally:
        session.close()
