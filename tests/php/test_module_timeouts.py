"""The PHP module never waits on the backend past its own time limit, and says which side was slow.

The module runs inside the admin's or the customer's web request, so every backend call has a total and a
connect limit (production: 30 s and 5 s, just above API Gateway's 29 s) covering its one retry too. Here the
driver lowers them (CSW_TIMEOUT / CSW_CONNECT_TIMEOUT) and php-cli calls loopback servers that accept and
never answer, answer headers and then stall, drop every SYN, or refuse: each call must come back within its
limit plus a margin (PHP start-up, a loaded machine) with a sentence naming the backend, distinct from the
backend's own 504 answer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.endpoints import read_request
from tests.support.php_module import (
    PHP,
    SECRET,
    FakeBackend,
    assert_log_clean,
    backend,  # noqa: F401 - the fixture, used by name
    calls,
    free_port,
    run_driver,
    steps,
)

pytestmark = [
    pytest.mark.php,
    pytest.mark.skipif(PHP is None, reason="php-cli is not installed (apt-get install php-cli php-curl)"),
]

LIMIT = 2.0  # the module's total time limit in these tests (production: 30 s)
CONNECT_LIMIT = 1.5  # its connect limit (production: 5 s)
MARGIN = 1.5  # slack for a loaded 2-core machine; the production limits are 15 x larger
LIMITS = {"CSW_TIMEOUT": str(LIMIT), "CSW_CONNECT_TIMEOUT": str(CONNECT_LIMIT)}
NOT_THEM = (
    "The delay is between WHMCS and the backend (API Gateway, Lambda or the network to it); "
    "ComputeStacks and the WHMCS API were not necessarily involved."
)
MAYBE = "The action may still be carried out: check before repeating it."


@dataclass
class Stalling:
    """A loopback HTTP server that reads each request, optionally sends `head`, then never answers."""

    head: bytes = b""
    requests: list[bytes] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)
    held: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)
            conn.settimeout(5)
            try:
                request = read_request(conn, bytearray())
                if request is None:
                    continue  # the client closed before its request was whole
                head, body = request
                self.requests.append(head + b"\r\n\r\n" + body)
                if self.head:
                    conn.sendall(self.head)
            except OSError:
                pass  # the client gave up: what the test expects


@pytest.fixture
def stalling() -> Iterator[Any]:
    servers: list[Stalling] = []

    def start(head: bytes = b"") -> Stalling:
        server = Stalling(head=head)
        server.sock.bind(("127.0.0.1", 0))
        server.sock.listen(8)
        threading.Thread(target=server.serve, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop.set()
        for conn in server.held:
            conn.close()
        server.sock.close()


def _header(request: bytes, name: str) -> str:
    for line in request.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    raise AssertionError(f"no {name} header")


def _no_secret_in(report: dict[str, Any], *secrets: str) -> None:
    text = repr([(st["result"], st["module_log"], st["activity"]) for st in report["steps"]])
    for secret in secrets:
        assert secret not in text


def test_a_backend_that_never_answers_is_given_up_within_the_limit(
    stalling: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backend that takes the request and never answers
    server = stalling()
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    # When an admin suspends a service
    report = run_driver(server.host, SECRET, {"steps": [{"name": "s", "fn": "SuspendAccount"}]})
    # Then the module waited its limit, not longer, and says the backend was the slow side
    step = steps(report)["s"]
    assert step["result"] == (
        f"The ComputeStacks backend at http://{server.host} did not answer within 2 s "
        f"(curl timeout in the WHMCS module). {NOT_THEM} {MAYBE}"
    )
    assert LIMIT - 0.1 <= step["seconds"] < LIMIT + MARGIN
    # and a request that was sent is never sent again
    assert len(server.requests) == 1 and report["retry_sleeps"] == []
    assert "curl error 28" in step["module_log"][0]["response"]
    # and neither the secret nor the signature is in the message or the module log
    _no_secret_in(report, SECRET, _header(server.requests[0], "X-CSW-Signature"))
    assert_log_clean(report)


def test_a_backend_that_stalls_after_its_headers_is_given_up_within_the_limit(
    stalling: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backend that sends a status line and headers, a byte of its body, then stalls
    server = stalling(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
    )
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    # When an admin presses Test Connection
    report = run_driver(server.host, SECRET, {"steps": [{"name": "t", "fn": "TestConnection"}]})
    # Then
    step = steps(report)["t"]
    assert step["result"] == {
        "success": False,
        "error": f"The ComputeStacks backend at http://{server.host} did not finish its answer "
        f"(HTTP 200 started) within 2 s (curl timeout in the WHMCS module). {NOT_THEM} {MAYBE}",
    }
    assert step["seconds"] < LIMIT + MARGIN
    assert len(server.requests) == 1 and report["retry_sleeps"] == []
    assert_log_clean(report)


def test_the_order_paid_hook_holds_the_checkout_at_most_one_limit(
    stalling: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a paid order whose two ComputeStacks lines are on two backends, both hanging
    first, second = stalling(), stalling()
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    server_of = {"61": first.host, "62": second.host}
    rows = [{"id": int(sid), "pid": 3, "orderid": 800, "serverid": int(sid)} for sid in server_of]
    step = {
        "name": "hook",
        "fn": "OrderPaid",
        "via_hook": True,
        "vars": {"orderId": 800, "invoiceId": 903, "userId": 7},
        "localapi": {
            "GetClientsProducts": {
                "result": "success", "totalresults": 2, "numreturned": 2, "products": {"product": rows},
            }
        },
        "capsule": {"tblproducts": [{"id": 3, "servertype": "computestacks", "configoption2": "on"}]},
        "module_servers": {
            sid: {"serverhostname": host, "serversecure": False, "serveraccesshash": SECRET}
            for sid, host in server_of.items()
        },
    }
    # When WHMCS fires OrderPaid during the customer's checkout
    report = run_driver(first.host, SECRET, {"steps": [step]})
    # Then the whole hook waited one limit, not one per backend, and the Activity Log says what happened
    hook = steps(report)["hook"]
    assert hook["result"]["hooks_called"] == 1
    assert hook["seconds"] < LIMIT + MARGIN
    messages = [a["message"] for a in hook["activity"]]
    assert messages == [
        f"ComputeStacks: order #800 deposit credit failed: The ComputeStacks backend at http://{first.host} "
        f"did not answer within 2 s (curl timeout in the WHMCS module). {NOT_THEM} {MAYBE}",
        f"ComputeStacks: order #800 deposit credit failed: The request to the ComputeStacks backend at "
        f"http://{second.host} was not sent: earlier backend calls of this page used up its 2 s time limit.",
    ]
    assert len(first.requests) == 1 and second.requests == []
    assert_log_clean(report)


def test_a_backend_that_takes_no_connection_is_named_after_the_connect_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a listening socket whose accept queue is full, so the kernel drops every new SYN
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", port))
            except OSError:
                filler.close()
                break
            fillers.append(filler)
        else:
            pytest.fail("the accept queue never filled")
        for key, value in LIMITS.items():
            monkeypatch.setenv(key, value)
        # When
        report = run_driver(f"127.0.0.1:{port}", SECRET, {"steps": [{"name": "s", "fn": "SuspendAccount"}]})
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    # Then the connect limit ended it; a retry would not fit the 2 s budget, so none was made
    step = steps(report)["s"]
    assert step["result"] == (
        f"The ComputeStacks backend could not be reached at http://127.0.0.1:{port}: no connection within "
        "1.5 s (curl connect timeout). Nothing was sent; check the server's Hostname and Secure settings, "
        "DNS and firewall."
    )
    assert step["seconds"] < LIMIT + MARGIN
    assert report["retry_sleeps"] == []
    assert_log_clean(report)


def test_a_refused_connection_is_named_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    port = free_port()  # nothing listens there
    report = run_driver(f"127.0.0.1:{port}", SECRET, {"steps": [{"name": "s", "fn": "CreateAccount"}]})
    step = steps(report)["s"]
    assert step["result"].startswith(
        f"The ComputeStacks backend could not be reached at http://127.0.0.1:{port}: connection refused"
    )
    assert step["seconds"] < 1.0
    assert report["retry_sleeps"] == [250000]  # nothing was sent, and a retry fits the budget
    assert_log_clean(report)


def test_the_backends_own_504_is_passed_on_as_the_backends(backend: FakeBackend) -> None:  # noqa: F811
    # Given the backend's own 504 (API.md section 2 shape), and API Gateway's when the function overran
    backend.answer(
        "/v1/accounts/suspend",
        504,
        {"result": "error", "code": "upstream_timeout", "message": "ComputeStacks did not answer in time."},
    )
    backend.answer("/v1/accounts/unsuspend", 504, {"message": "Endpoint request timed out"})
    backend.answer("/v1/accounts/terminate", 502, {"message": "Internal server error"})
    report = run_driver(backend.host, SECRET,
                        calls(own="SuspendAccount", gateway="UnsuspendAccount", crash="TerminateAccount"))
    s = steps(report)
    # Then the admin reads the backend's sentence, marked as the backend's answer
    assert s["own"]["result"] == (
        f"The ComputeStacks backend at http://{backend.host} answered HTTP 504: "
        "ComputeStacks did not answer in time."
    )
    # and an answer not in the API's shape is marked as a gateway's
    assert s["gateway"]["result"] == (
        f"A gateway in front of the ComputeStacks backend at http://{backend.host} answered HTTP 504 "
        "(not the backend's own answer): Endpoint request timed out. The backend did not finish in time."
    )
    assert s["crash"]["result"] == (
        f"A gateway in front of the ComputeStacks backend at http://{backend.host} answered HTTP 502 "
        "(not the backend's own answer): Internal server error."
    )
    assert len(backend.requests) == 3 and report["retry_sleeps"] == []  # an answer is never retried
    assert_log_clean(report)
