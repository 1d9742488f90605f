"""The committed OpenAPI document is the contract as the code declares it: a change to the API shows
up here first (regenerate with `.venv/bin/cswhmcs openapi --out docs/openapi.json` when it is meant)."""

from __future__ import annotations

import json
from pathlib import Path

from cswhmcs.contract import ROUTES, openapi
from cswhmcs.local.template import Template

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_openapi_document_matches_the_code() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi())), (
        "The API changed: if that is intended, run `.venv/bin/cswhmcs openapi --out docs/openapi.json`.")


def test_the_contract_covers_exactly_the_templates_routes() -> None:
    assert {r.path for r in Template(ROOT / "template.yaml").api_routes()} == set(ROUTES)
