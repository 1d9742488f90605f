"""Driving the PHP module (whmcs/modules/servers/computestacks) through tests/php/driver.php with php-cli, and
``FakeBackend``, a tiny recording backend that answers every route with its success body (API.md), for the
module's contract and timeout tests (tests/php/test_module_e2e.py, test_module_timeouts.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parents[1] / "php"  # tests/php
DRIVER = HERE / "driver.php"
PHP = shutil.which("php")
SECRET = "contract-signing-secret-3f9a"


def run_driver(api_host: str, secret: str, scenario: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Runs the PHP driver; returns its JSON report. PHP warnings and notices fail the test."""
    assert PHP is not None
    env = {
        **os.environ,
        "CSW_API_HOST": api_host,
        "CSW_SIGNING_SECRET": secret,
        "CSW_SCENARIO": json.dumps(scenario),
    }
    proc = subprocess.run(
        [PHP, "-d", "display_errors=stderr", "-d", "error_reporting=-1", str(DRIVER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout[-2000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["php_errors"] == [], report["php_errors"]
    assert proc.stderr.strip() == "", proc.stderr
    return report


def calls(**functions: str) -> dict[str, Any]:
    """A driver scenario of plain calls, in order: step name = the module function it calls."""
    return {"steps": [{"name": name, "fn": fn} for name, fn in functions.items()]}


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


def assert_log_clean(report: dict[str, Any]) -> None:
    audit = report["log_audit"]
    assert audit["leaks"] == [], audit
    assert audit["unlisted"] == [], audit
    assert audit["entries"] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


OVERVIEW = {
    "result": "success", "username": "ann@example.org", "cs_user_id": 17, "active": True, "projects": 2, "services": 5,
    # the month's money, in the account's currency, as the backend formats it
    "run_rate": "12.30", "current_usage": "4.05", "currency": "EUR", "currency_symbol": "€",
    "run_rate_display": "€12.30", "current_usage_display": "€4.05",
}
SUCCESS: dict[str, dict[str, Any]] = {
    "/v1/accounts/create": {"result": "success", "username": "ann@example.org", "cs_user_id": 17},
    "/v1/accounts/sso": {
        "result": "success",
        "redirect_url": "https://cs.example.net/?username=ann%40example.org&token=tok%2Fen123",
    },
    "/v1/accounts/overview": OVERVIEW,
    "/v1/accounts/list": {
        "result": "success",
        "accounts": [
            {
                "email": "ann@example.org",
                "username": "ann@example.org",
                "domain": "",
                "uniqueIdentifier": "ann@example.org",
                "product": "1",
                "primaryip": "",
                "created": "2024-03-01 10:00:00",
                "status": "Active",
            },
            {
                "email": "bob@example.org",
                "username": "bob@example.org",
                "domain": "",
                "uniqueIdentifier": "bob@example.org",
                "product": "2",
                "primaryip": "",
                "created": "2024-03-02 11:00:00",
                "status": "Suspended",
            },
        ],
    },
    "/v1/user-groups": {"result": "success", "groups": {"1": "Default", "7": "Premium <EU>"}},
    "/v1/hooks/order-paid": {"result": "success", "credited": "25.00", "currency": "EUR"},
}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class FakeBackend:
    """Answers every route with its success body unless told otherwise; records every request."""

    base_path: str = ""
    requests: list[Recorded] = field(default_factory=list)
    overrides: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}{self.base_path}"

    def answer(self, route: str, status: int, body: Any, ctype: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.overrides[route] = (status, raw, ctype)

    def route_of(self, path: str) -> str:
        assert path.startswith(self.base_path), path
        return path[len(self.base_path) :]

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        self.requests.append(Recorded(path, headers, body))
        route = self.route_of(path)
        if route in self.overrides:
            return self.overrides[route]
        return 200, json.dumps(SUCCESS.get(route, {"result": "success"})).encode(), "application/json"


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    fake = FakeBackend()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, raw, ctype = fake.handle(self.path, {k: v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    fake.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
