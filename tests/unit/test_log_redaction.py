"""The log redaction: secret values and secret-named keys are masked wherever they sit in a log line
(message, ``extra`` values nested in dicts and lists), and every function registers its secrets,
the billing ones included. Checked on Powertools' JSON output, as Lambda writes it."""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from tests.conftest import ROOT
from tests.support.logs import LogCollector, emitted, service_log_lines

__all__ = ["emitted"]  # the fixture (tests/support/logs.py), used by name


def test_secret_values_inside_extra_dicts_and_lists_are_masked(emitted: LogCollector) -> None:
    from cswhmcs.observability import logger, register_secret_values

    # Given a registered secret value
    secret = "redaction-test-secret-9f8e7d"
    register_secret_values(secret)

    # When it reaches a log line inside nested extras, and under secret-named keys
    logger.warning("upstream said something", extra={
        "detail": {"body": f"echo of {secret}", "rows": [("a", f"x{secret}y"), {"n": [secret]}]},
        "headers": {"Authorization": "Basic abc", "X-CSW-Signature": "v1=00ff"},
        "api_token": "plain-token-value-1234",
        "count": 3,
    })

    # Then it is masked everywhere, and the rest of the line is intact
    line = emitted.lines[-1]
    record = json.loads(line)
    assert secret not in line and "plain-token-value-1234" not in line and "00ff" not in line
    assert record["detail"]["body"] == "echo of ***"
    assert record["detail"]["rows"] == [["a", "x***y"], {"n": ["***"]}]
    assert record["headers"] == {"Authorization": "***", "X-CSW-Signature": "***"}
    assert record["api_token"] == "***" and record["count"] == 3
    assert record["message"] == "upstream said something"


def test_the_billing_worker_registers_its_secrets(monkeypatch: pytest.MonkeyPatch, emitted: LogCollector) -> None:
    # Given a worker environment whose secrets nobody has registered yet
    from cswhmcs.api import reset_deps
    from cswhmcs.billing.handlers import _worker_deps, worker_handler
    from cswhmcs.billing.messages import Account, RunContext, WorkMessage
    from cswhmcs.local.template import Template, ensure_tables
    from cswhmcs.observability import logger

    cs_secret, whmcs_secret, access_key = "worker-cs-secret-77aa", "worker-whmcs-secret-88bb", "worker-access-99cc"
    env = {"CS_API_URL": "http://127.0.0.1:9", "CS_API_KEY": "k", "CS_API_SECRET": cs_secret,
           "WHMCS_API_URL": "http://127.0.0.1:9/includes/api.php", "WHMCS_API_IDENTIFIER": "id",
           "WHMCS_API_SECRET": whmcs_secret, "WHMCS_API_ACCESS_KEY": access_key, "LEDGER_TABLE": "ledger",
           "CONNECT_TIMEOUT": "0.2", "CS_TIMEOUT": "0.5"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CONFIG_SECRET_ARN", raising=False)
    reset_deps()
    _worker_deps.cache_clear()
    from datetime import UTC, datetime

    message = WorkMessage(RunContext("collect#2026-10-31T23:00:00Z", "collect", datetime(2026, 10, 31, 23, tzinfo=UTC)),
                          Account(10, 2, 3, "u@example.com", "USD"))
    record: dict[str, Any] = json.loads((ROOT / "events/billing_worker.json").read_text())["Records"][0]
    try:
        with mock_aws():
            ensure_tables(Template(ROOT / "template.yaml"), boto3.client("dynamodb", region_name="us-east-1"),
                          {"ACCOUNTS_TABLE": "accounts", "LEDGER_TABLE": "ledger", "REPLAY_TABLE": "idem"})
            # When the worker handles a record (ComputeStacks unreachable: the account is retried)
            from cswhmcs.billing.handlers import BatchFailed

            with pytest.raises(BatchFailed):  # the whole batch failed: returned to the queue
                worker_handler({"Records": [dict(record, body=message.to_json())]}, None)
            # Then its secrets are masked in any later log line
            logger.warning(f"diagnostic {cs_secret} {whmcs_secret}", extra={"note": [access_key]})
    finally:
        _worker_deps.cache_clear()
        reset_deps()
    logged = "\n".join(emitted.lines)
    assert "diagnostic *** ***" in logged
    for value in (cs_secret, whmcs_secret, access_key):
        assert value not in logged


# ---------------------------------------------------------------------- exceptions and tracebacks


def _raise_chain(secret: str) -> None:
    try:
        raise httpx.ConnectError(f"connection to https://admin:{secret}@whmcs.example/includes/api.php failed")
    except httpx.ConnectError as exc:
        raise ValueError(f"login failed for password={secret}") from exc


def test_a_logged_exception_is_redacted_in_its_text_and_stack_trace(emitted: LogCollector) -> None:
    from cswhmcs.observability import logger, register_secret_values

    # Given an exception chain whose messages carry a registered secret and an unregistered one
    registered, unregistered = "exc-registered-secret-5c4b", "exc-plain-password-3a2f"
    register_secret_values(registered)
    # When it is logged with its traceback (as api.handle does for an unexpected error)
    try:
        try:
            _raise_chain(unregistered)
        except ValueError as exc:
            raise RuntimeError(f"wrapped: {registered}") from exc
    except RuntimeError:
        logger.exception("unhandled error", extra={"route": "/v1/accounts/create"})
    # Then neither secret is in the line: not in the formatted traceback, not in the structured stack trace
    line = emitted.lines[-1]
    assert registered not in line and unregistered not in line
    record = json.loads(line)
    assert record["message"] == "unhandled error" and record["route"] == "/v1/accounts/create"
    assert record["exception_name"] == "RuntimeError"
    text = record["exception"]
    assert "Traceback (most recent call last)" in text and "_raise_chain" in text  # still useful
    assert "https://***@whmcs.example/includes/api.php" in text and "password=***" in text
    assert "RuntimeError: wrapped: ***" in text
    trace = record["stack_trace"]
    assert trace["type"] == "RuntimeError" and trace["value"] == "wrapped: ***"
    assert trace["frames"] and {"file", "line", "function", "statement"} <= set(trace["frames"][0])


def test_an_exception_passed_as_exc_info_or_message_is_redacted(emitted: LogCollector) -> None:
    from cswhmcs.observability import logger

    secret = "exc-info-secret-value-77"
    error = httpx.ReadTimeout(f"GET https://u:{secret}@cs.example/api/users?token={secret} timed out")
    logger.warning("upstream slow", exc_info=error)
    logger.error(error)
    logger.warning("retrying %s with api_key=%s", "GET", secret)
    logged = "\n".join(emitted.lines[-3:])
    assert secret not in logged
    first, second, third = (json.loads(x) for x in emitted.lines[-3:])
    assert first["exception_name"] == "ReadTimeout" and "https://***@cs.example" in first["exception"]
    assert "token=***" in second["message"] and third["message"] == "retrying GET with api_key=***"


def test_other_formatters_of_the_logger_see_the_redacted_traceback_only() -> None:
    from cswhmcs.observability import logger

    # Given a plain text handler on the service logger (e.g. a local console)
    secret = "plain-formatter-secret-42"
    with service_log_lines(logging.Formatter("%(levelname)s %(message)s")) as handler:
        try:
            raise ValueError(f"Authorization: Basic {secret}")
        except ValueError:
            logger.exception("failed")
    # Then its text carries the traceback, redacted
    assert "Traceback" in handler.lines[-1] and secret not in handler.lines[-1]
    assert "Authorization: ***" in handler.lines[-1]


def test_ordinary_messages_are_left_alone(emitted: LogCollector) -> None:
    from cswhmcs.observability import logger

    logger.info("signature refused: stale", extra={"code": "signature_stale", "error": "The signature is stale.",
                                                   "url": "https://cs.example/api/users?page=2"})
    record = json.loads(emitted.lines[-1])
    assert record["message"] == "signature refused: stale" and record["code"] == "signature_stale"
    assert record["url"] == "https://cs.example/api/users?page=2" and "exception" not in record
