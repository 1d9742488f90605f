"""Metrics (CloudWatch EMF), the Lambda entry wrapper and the tracing switch of cswhmcs.observability, seen where
CloudWatch sees them: the EMF lines on stdout and the JSON log lines."""

from __future__ import annotations

import io
import json
import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs import observability
from cswhmcs.adapters.retry import Failure, Retrier, Throttled
from cswhmcs.billing.worker import AccountResult, LineOutcome, observe_results
from cswhmcs.errors import UpstreamError


class LambdaContext:
    function_name = "cswhmcs-SuspendAccountFunction-abc"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:cswhmcs-SuspendAccountFunction-abc"
    aws_request_id = "6f1d0c9e-1111-2222-3333-444455556666"

    def get_remaining_time_in_millis(self) -> int:
        return 20_000


@pytest.fixture
def emf(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Metrics on (as in AWS); returns a function giving the EMF lines printed since the last call."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    observability.flush_metrics()
    capsys.readouterr()

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]

    return lines


@pytest.fixture
def log_lines() -> Any:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observability.logger.registered_formatter)
    observability.logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    observability.logger.removeHandler(handler)


def by_dimensions(lines: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    out = {}
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "ComputeStacksWHMCS"
        out[tuple(sorted(directive["Dimensions"][0]))] = line
    return out


def test_an_invocation_writes_its_metrics_once_at_its_end_one_line_per_dimension_set(emf: Any) -> None:
    # Given a handler that records several counts, amounts in two currencies and a duration
    def handler(event: Any, context: Any) -> str:
        for _ in range(3):
            observability.count(observability.LINES_BILLED)
        observability.add_amount(observability.AMOUNT_BILLED, 10.5, currency="USD")
        observability.add_amount(observability.AMOUNT_BILLED, 2.25, currency="USD")
        observability.add_amount(observability.AMOUNT_BILLED, 7, currency="EUR")
        observability.measure(observability.RUN_DURATION_SECONDS, 12.5)
        assert emf() == []  # nothing written while the invocation runs
        return "ok"

    # When it runs through the entry wrapper
    assert observability.lambda_entry(handler)({}, LambdaContext()) == "ok"
    # Then: one line for service alone, one per currency, each value summed
    lines = emf()
    assert len(lines) == 3
    plain = by_dimensions(lines)[("service",)]
    assert plain["service"] == "cswhmcs" and plain["LinesBilled"] == [3.0] and plain["RunDurationSeconds"] == [12.5]
    units = {m["Name"]: m["Unit"] for m in plain["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"LinesBilled": "Count", "RunDurationSeconds": "Seconds"}
    assert {line["currency"]: line["AmountBilled"] for line in lines if "currency" in line} == {
        "USD": [12.75], "EUR": [7.0]}


def test_nothing_recorded_writes_nothing_and_never_fails(emf: Any, recwarn: pytest.WarningsRecorder) -> None:
    assert observability.lambda_entry(lambda e, c: 1)({}, LambdaContext()) == 1
    assert observability.lambda_entry(lambda e, c: 2)({}, None) == 2
    assert emf() == []
    assert not [w for w in recwarn if "metrics" in str(w.message).lower()]


def test_metrics_are_written_when_the_handler_raises(emf: Any) -> None:
    def handler(event: Any, context: Any) -> None:
        observability.count(observability.ACCOUNTS_FAILED, 2)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        observability.lambda_entry(handler)({}, LambdaContext())
    assert [line["AccountsFailed"] for line in emf()] == [[2.0]]


def test_disabled_metrics_are_dropped_not_kept(monkeypatch: pytest.MonkeyPatch, emf: Any) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    observability.count(observability.LINES_BILLED, 5)
    observability.flush_metrics()
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    observability.count(observability.LINES_BILLED, 1)
    observability.flush_metrics()
    assert [line["LinesBilled"] for line in emf()] == [[1.0]]


def test_log_lines_carry_the_request_id_correlation_id_and_cold_start(log_lines: Any) -> None:
    # Given an API route wrapped as the functions' app.py wrap theirs
    def route(event: Any, context: Any) -> dict[str, Any]:
        observability.logger.info("request", extra={"route": "/v1/accounts/suspend"})
        return {"statusCode": 200}

    handler = observability.api_entry(route)
    event = {"requestContext": {"requestId": "c0ffee-42"}, "body": "{}"}
    # When it is invoked twice with Lambda's context, then with a test's (no attributes) and with None
    handler(event, LambdaContext())
    handler(event, LambdaContext())
    handler(event, object())
    handler(event, None)
    lines = [line for line in log_lines() if line["message"] == "request"]
    # Then Lambda's invocations carry the ids (the cold start once), the others are logged as before
    first, second, *others = lines
    assert first["function_request_id"] == LambdaContext.aws_request_id
    assert first["correlation_id"] == second["correlation_id"] == "c0ffee-42"
    assert first["function_name"] == LambdaContext.function_name
    assert second["cold_start"] is False
    assert len(others) == 2 and all("function_request_id" not in line for line in others)
    assert observability.request_id(event) == "c0ffee-42" and observability.request_id({}) is None


def _retrier(upstream: str) -> Retrier:
    return Retrier(upstream, timeout=2, connect_timeout=1, sleep=lambda s: None)


def test_upstream_errors_and_429s_are_counted_where_every_request_passes(emf: Any) -> None:
    # Given ComputeStacks failing once with a 5xx, then throttling once, then answering
    answers = iter(["5xx", "429", "ok"])

    def interpret(response: httpx.Response) -> str:
        what = next(answers)
        if what == "5xx":
            raise Failure(UpstreamError("ComputeStacks answered with HTTP 502.", upstream="ComputeStacks"))
        if what == "429":
            raise Throttled(0.0)
        return what

    send = lambda timeout: httpx.Response(200)  # noqa: E731
    assert _retrier("ComputeStacks").run(send, interpret, resend=True, mutating=False) == "ok"
    # And WHMCS failing for good
    with pytest.raises(UpstreamError):
        _retrier("WHMCS").run(send, lambda r: (_ for _ in ()).throw(
            Failure(UpstreamError("WHMCS failed.", upstream="WHMCS"), retryable=False)), resend=False, mutating=True)
    observability.flush_metrics()
    lines = emf()
    errors = {line["upstream"]: line["UpstreamErrors"] for line in lines if "UpstreamErrors" in line}
    assert errors == {"computestacks": [1.0], "whmcs": [1.0]}
    assert [line["Throttled"] for line in lines if "Throttled" in line] == [[1.0]]


def _outcome(status: str, amount: str, currency: str) -> LineOutcome:
    return LineOutcome(ref=f"1:2026-10:{amount}", status=status, service_id=1, client_id=1, email="a@example.com",
                       product="containerm", period="2026-10", amount=Decimal(amount), currency=currency,
                       source_total=Decimal(amount), source_currency=currency)


def test_the_worker_counts_lines_billed_amounts_attention_and_failed_accounts(emf: Any) -> None:
    results = [
        AccountResult(1, 11, lines=[_outcome("created", "10.00", "USD"), _outcome("created", "2.50", "USD"),
                                    _outcome("attention", "3.00", "EUR")]),
        AccountResult(2, 12, lines=[_outcome("created", "4.00", "EUR"), _outcome("in_flight", "9.00", "EUR")]),
        AccountResult(3, 13, error="ComputeStacks did not answer in time."),
    ]
    assert observe_results(results) is results
    observability.flush_metrics()
    lines = emf()
    plain = by_dimensions(lines)[("service",)]
    assert (plain["LinesBilled"], plain["LinesNeedingAttention"], plain["AccountsFailed"]) == ([3.0], [1.0], [1.0])
    assert {line["currency"]: line["AmountBilled"] for line in lines if "currency" in line} == {
        "USD": [12.5], "EUR": [4.0]}


def test_tracing_is_off_outside_lambda_and_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    assert observability.tracing_enabled() is False
    assert isinstance(observability.upstream_subsegment("ComputeStacks"), contextlib.nullcontext)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    assert observability.tracing_enabled() is False
    monkeypatch.delenv("AWS_SAM_LOCAL")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    assert observability.tracing_enabled() is False
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED")
    assert observability.tracing_enabled() is True  # (in Lambda: see the subprocess test below)


def test_in_lambda_with_tracing_each_upstream_request_is_an_xray_subsegment(tmp_path: Any) -> None:
    """A fresh interpreter with Lambda's tracing environment and a fake X-Ray daemon (UDP): the request's
    subsegment reaches it, named after the upstream. (In-process the SDK would patch botocore for every test.)"""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)  # read after the process ended: its datagrams are all there
    script = (
        "import httpx\n"
        "from cswhmcs.adapters.retry import Retrier\n"
        "r = Retrier('ComputeStacks', timeout=2, connect_timeout=1)\n"
        "assert r.run(lambda t: httpx.Response(200), lambda resp: 'ok', resend=True, mutating=False) == 'ok'\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root / "layers/shared"),
           "LAMBDA_TASK_ROOT": str(tmp_path), "AWS_LAMBDA_FUNCTION_NAME": "cswhmcs-fn", "AWS_REGION": "us-east-1",
           "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
           "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}", "POWERTOOLS_SERVICE_NAME": "cswhmcs"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    documents = []
    try:
        while True:
            header, _, body = daemon.recv(65536).decode().partition("\n")
            documents.append(json.loads(body))
    except TimeoutError:
        pass
    finally:
        daemon.close()
    (segment,) = [d for d in documents if d.get("name") == "ComputeStacks"]
    assert segment["namespace"] == "remote" and segment["annotations"] == {"upstream": "computestacks"}
    assert segment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"


def test_the_api_wrappers_request_line_names_the_request_id_also_when_refused(log_lines: Any) -> None:
    # Given a route's handler as its app.py builds it, and an unsigned request (refused before any upstream)
    from cswhmcs.api import make_handler

    handler = observability.api_entry(make_handler("/v1/accounts/suspend", lambda deps, req: {}))
    event = {"requestContext": {"requestId": "req-7e57"}, "headers": {}, "body": "{}"}
    # When it is invoked without Lambda's context (as `cswhmcs serve` does)
    response = handler(event, None)
    # Then it is refused and its one request line carries API Gateway's request id
    assert response["statusCode"] == 401
    (line,) = [line for line in log_lines() if line["message"] == "request"]
    assert line["request_id"] == "req-7e57" and line["status"] == 401
