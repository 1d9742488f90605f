"""The log redaction: secret values and secret-named keys are masked wherever they sit in a log line
(message, ``extra`` values nested in dicts and lists), and every function registers its secrets,
the billing ones included. Checked on Powertools' JSON output, as Lambda writes it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.conftest import ROOT


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def emitted() -> Iterator[_Collect]:
    from cswhmcs.observability import logger

    handler = _Collect()
    handler.setFormatter(logger.registered_formatter)
    base = logging.getLogger(logger.name)
    base.addHandler(handler)
    yield handler
    base.removeHandler(handler)


def test_secret_values_inside_extra_dicts_and_lists_are_masked(emitted: _Collect) -> None:
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


def test_the_billing_worker_registers_its_secrets(monkeypatch: pytest.MonkeyPatch, emitted: _Collect) -> None:
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
                          {"ACCOUNTS_TABLE": "accounts", "LEDGER_TABLE": "ledger", "IDEMPOTENCY_TABLE": "idem"})
            # When the worker handles a record (ComputeStacks unreachable: the account is retried)
            from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

            with pytest.raises(BatchProcessingError):  # the whole batch failed: returned to the queue
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
