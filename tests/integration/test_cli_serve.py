"""`.venv/bin/cswhmcs serve` as a real process: creates the template's tables and answers signed requests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxes.dynamodb_local import free_port
from tests.conftest import SIGNING_SECRET, Tables, stack_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_cswhmcs_serve_creates_tables_and_answers_a_signed_connection_test(
        ddb_endpoint: str, cs_sandbox: Any, whmcs_sandbox: Any) -> None:
    # Given a DynamoDB endpoint without this run's tables, and the sandboxes
    import uuid

    import boto3

    suffix = uuid.uuid4().hex[:6]
    tables = Tables(ddb_endpoint, f"cli-acc-{suffix}", f"cli-led-{suffix}", f"cli-idem-{suffix}")
    port = free_port()
    env = {**os.environ, **stack_env(tables, cs_sandbox, whmcs_sandbox)}
    cli = Path(sys.executable).parent / "cswhmcs"
    proc = subprocess.Popen([str(cli), "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # When it is up, a signed request arrives (the CLI's own `call` signs it)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.post(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        call = subprocess.run([str(cli), "call", "/v1/connection/test", "{}", "--url", f"http://127.0.0.1:{port}",
                               "--secret", SIGNING_SECRET], capture_output=True, text=True, timeout=30)
        unsigned = httpx.post(f"http://127.0.0.1:{port}/v1/connection/test", content=b"{}")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    # Then it answered, refused the unsigned one, logged one line per request, and made the tables
    assert call.returncode == 0, call.stderr + call.stdout
    assert '"result": "success"' in call.stdout
    assert unsigned.status_code == 401
    assert "POST /v1/connection/test -> 200" in err and "POST /v1/connection/test -> 401" in err
    # One line per request, whatever the outcome
    assert len([line for line in (out + err).splitlines() if "connection/test" in line]) == 2
    # (every page: the suite's DynamoDB Local holds more than ListTables' 100 names per answer)
    pages = boto3.client("dynamodb", endpoint_url=ddb_endpoint).get_paginator("list_tables").paginate()
    names = [name for page in pages for name in page["TableNames"]]
    assert {tables.accounts, tables.ledger, tables.idempotency} <= set(names)
    assert SIGNING_SECRET not in err
