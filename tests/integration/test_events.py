"""events/*.json are genuine API Gateway events: each one, re-signed, is answered by its own handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cswhmcs.api import reset_deps
from cswhmcs.local.template import Template
from cswhmcs.signing import TIMESTAMP_HEADER, sign_headers, verify
from tests.conftest import LiveStack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
TOKEN_ROUTES = {"/v1/hooks/cs-user"}  # authenticated by a token in the URL (API.md section 3), not signed


def test_there_is_an_event_per_function() -> None:
    tpl = Template(ROOT / "template.yaml")
    for name, res in tpl.resources.items():
        if res["Type"] == "AWS::Serverless::Function":
            assert (ROOT / "events" / f"{Path(res['Properties']['CodeUri']).name}.json").is_file(), name


@pytest.mark.parametrize("route", Template(ROOT / "template.yaml").api_routes(), ids=lambda r: r.function)
def test_each_api_event_has_a_correct_signature_shape_and_reaches_its_handler(  # type: ignore[no-untyped-def]
        live_stack: LiveStack, route, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the committed event (signed with the documented development secret, or, for the ComputeStacks
    # users webhook, which ComputeStacks cannot sign, carrying the documented development token)
    event = json.loads((ROOT / "events" / f"{route.code_uri.name}.json").read_text())
    assert event["resource"] == route.path and event["httpMethod"] == "POST"
    body = event["body"].encode()
    if route.path in TOKEN_ROUTES:
        assert TIMESTAMP_HEADER not in event["headers"]
        monkeypatch.setenv("CS_WEBHOOK_TOKEN", event["queryStringParameters"]["token"])
        reset_deps()
    else:
        ts = int(event["headers"][TIMESTAMP_HEADER])
        verify(event["headers"], route.path, body, [b"dev-signing-secret"], now=ts)
        # When it is re-signed with this stack's secret and fed to the handler
        event["headers"].update(sign_headers(live_stack.signing_secret, route.path, body))
    result = route.load_handler()(event, None)
    # Then the handler answers with the API's envelope (never a crash or a 401/400)
    assert result["statusCode"] not in (400, 401, 500), result
    payload = json.loads(result["body"])
    assert payload["result"] in ("success", "error")
