"""No log line carries a password, token or secret, whatever happens."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import OLD_SIGNING_SECRET, SIGNING_SECRET, LiveStack
from tests.support.live import params
from tests.support.logs import LogCollector, emitted

__all__ = ["emitted"]  # the fixture (tests/support/logs.py), used by name

pytestmark = pytest.mark.integration


def test_a_whole_session_logs_no_secret(live_stack: LiveStack, capfd: pytest.CaptureFixture[str],
                                        emitted: LogCollector) -> None:
    # Given a flow that handles a password, an SSO token and every credential, including failures
    password, new_password = "Pw-Create-123456", "Pw-Change-654321"
    live_stack.call("/v1/accounts/create", {**params(), "password": password})
    live_stack.call("/v1/accounts/change-password", {**params(), "password": new_password})
    live_stack.call("/v1/accounts/change-password", {**params(), "password": "short"})  # CS 422
    url = live_stack.call("/v1/accounts/sso", params()).json()["redirect_url"]
    token = parse_qs(urlsplit(url).query)["token"][0]
    live_stack.cs.fail_next(5, status=500)
    live_stack.call("/v1/accounts/overview", params())
    live_stack.call("/v1/accounts/create", {**params(serviceid=43), "password": password}, secret="wrong")
    # When we read everything that was logged
    out, err = capfd.readouterr()
    logged = out + err + "\n".join(emitted.lines) + "\n".join(live_stack.log_lines)
    # Then
    assert '"message":"account created"' in logged  # the service's JSON logs are really captured
    assert '"status":502' in logged and '"status":401' in logged
    for secret in (password, new_password, token, SIGNING_SECRET, OLD_SIGNING_SECRET, live_stack.cs.api_secret,
                   live_stack.whmcs.secret):
        assert secret not in logged
