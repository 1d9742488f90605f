"""Every `cswhmcs` command that lacks what it needs says in one sentence what is missing and how to provide it,
exits 2 and shows no traceback (unless --debug): no region, no credentials, DynamoDB unreachable, a table that
does not exist, a setting not set. The real entry point, in a subprocess with only the environment given."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    ["billing", "attention"],
    ["billing", "resolve", "2:2026-10:1", "--resend"],
    ["billing", "run", "--as-of", "2026-10-31T23:00:00Z"],
    ["billing", "preview", "--as-of", "2026-10-31T23:00:00Z"],
    ["credits", "open"],
    ["credits", "retry"],
]
CS = {"CS_API_URL": "http://127.0.0.1:9", "CS_API_KEY": "k", "CS_API_SECRET": "s", "WHMCS_API_URL":
      "http://127.0.0.1:9/includes/api.php", "WHMCS_API_IDENTIFIER": "i", "WHMCS_API_SECRET": "s",
      "SIGNING_SECRET": "cli-errors-signing-secret-0123456789"}
AWS = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def cswhmcs(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT / ".pytest-home-cli"),
            "PYTHONPATH": str(ROOT / "layers/shared"), "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run([sys.executable, "-m", "cswhmcs.cli", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_region(command: list[str]) -> None:
    line = one_sentence(cswhmcs(command, {**CS, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t",
                                          "ACCOUNTS_TABLE": "a", "LEDGER_TABLE": "l", "REPLAY_TABLE": "i"}))
    assert "AWS_DEFAULT_REGION" in line and ". .dev/env.sh" in line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_dynamodb_unreachable(command: list[str]) -> None:
    env = {**CS, **AWS, "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{closed_port()}", "ACCOUNTS_TABLE": "a",
           "LEDGER_TABLE": "l", "REPLAY_TABLE": "i"}
    line = one_sentence(cswhmcs(command, env))
    # (billing run/preview ask WHMCS first, which is unreachable here too: they say so)
    assert "DynamoDB could not be reached" in line and "AWS_ENDPOINT_URL_DYNAMODB" in line or (
        command[1] in ("run", "preview") and "WHMCS could not be reached" in line)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_table_that_does_not_exist(command: list[str], ddb_endpoint: str, cs_sandbox: Any,
                                     whmcs_sandbox: Any) -> None:
    upstreams = {"CS_API_URL": cs_sandbox.url, "CS_API_KEY": cs_sandbox.api_key, "CS_API_SECRET": cs_sandbox.api_secret,
                 "WHMCS_API_URL": whmcs_sandbox.url, "WHMCS_API_IDENTIFIER": whmcs_sandbox.identifier,
                 "WHMCS_API_SECRET": whmcs_sandbox.secret}
    env = {**CS, **upstreams, **AWS, "AWS_ENDPOINT_URL_DYNAMODB": ddb_endpoint, "ACCOUNTS_TABLE": "no-such-accounts",
           "LEDGER_TABLE": "no-such-ledger", "REPLAY_TABLE": "no-such-idem"}
    line = one_sentence(cswhmcs(command, env))
    assert "does not exist" in line and "LEDGER_TABLE" in line


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[1] in ("run", "preview")], ids=" ".join)
def test_a_setting_not_set(command: list[str], tables: Any) -> None:
    # Billing needs both upstreams: without ComputeStacks' settings it says which ones
    env = {**AWS, **tables.env(), "SIGNING_SECRET": CS["SIGNING_SECRET"]}
    line = one_sentence(cswhmcs(command, env))
    assert "CS_API_URL, CS_API_KEY, CS_API_SECRET are not set" in line and "environment variables" in line


def test_debug_shows_the_traceback() -> None:
    result = cswhmcs(["--debug", "billing", "attention"], {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "NoRegionError" in result.stderr
