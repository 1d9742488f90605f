"""FaultProxy against a tiny loopback upstream: what the upstream saw and what the client got, per knob."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sandboxes.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

PATH = "/modules/servers/computestacks/billing.php"
SIGNED = {"X-CSW-Timestamp": "1700000000", "X-CSW-Signature": "v1=aa,v1=bb", "Content-Type": "application/json"}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """Records every request, then answers JSON (or ``status`` / a slow answer when told)."""

    seen: list[Seen] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def _upstream_handler(up: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with up.lock:
                up.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
                n = len(up.seen)
            if up.delay:
                time.sleep(up.delay)
            out = json.dumps({"result": "success", "n": n}).encode()
            self.send_response(up.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Upstream", "yes")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    return Handler


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    up.server = _UpstreamServer(("127.0.0.1", 0), _upstream_handler(up))
    thread = threading.Thread(target=up.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield up
    up.server.shutdown()
    up.server.server_close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url) as p:
        yield p


def post(proxy: FaultProxy, body: bytes = b'{"items":[]}') -> httpx.Response:
    return httpx.post(proxy.url, content=body, headers=SIGNED, timeout=5)


# ---------------------------------------------------------------------- transparent


def test_without_faults_method_path_headers_and_body_pass_both_ways(proxy: FaultProxy, upstream: Upstream) -> None:
    # When
    resp = post(proxy, b'{"items":[{"ref":"a"}]}')
    # Then
    assert proxy.url.endswith(f":{proxy.port}{PATH}") and proxy.port != upstream.server.server_address[1]  # type: ignore[union-attr]
    assert resp.status_code == 200 and resp.json() == {"result": "success", "n": 1}
    assert resp.headers["content-type"] == "application/json" and resp.headers["x-upstream"] == "yes"
    (seen,) = upstream.seen
    assert (seen.method, seen.path, seen.body) == ("POST", PATH, b'{"items":[{"ref":"a"}]}')
    assert seen.headers["X-CSW-Timestamp"] == "1700000000" and seen.headers["X-CSW-Signature"] == "v1=aa,v1=bb"
    assert seen.headers["Content-Type"] == "application/json"
    assert (proxy.request_count, proxy.forwarded_count) == (1, 1)


def test_the_upstreams_error_status_and_a_query_string_pass_through(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    upstream.status = 401
    # When
    resp = httpx.get(proxy.url + "?x=1", timeout=5)
    # Then
    assert resp.status_code == 401 and resp.json()["result"] == "success"
    assert upstream.seen[0].method == "GET" and upstream.seen[0].path == PATH + "?x=1"


def test_keep_alive_connections_carry_several_requests(proxy: FaultProxy, upstream: Upstream) -> None:
    # When
    with httpx.Client(timeout=5) as client:
        answers = [client.post(proxy.url, content=b"{}").json()["n"] for _ in range(3)]
    # Then
    assert answers == [1, 2, 3] and proxy.forwarded_count == 3


def test_an_unreachable_upstream_is_a_502_page() -> None:
    # Given: a port nothing listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{dead}{PATH}") as proxy:
        # When
        resp = post(proxy)
    # Then
    assert resp.status_code == 502 and "text/html" in resp.headers["content-type"]
    assert b"502 Bad Gateway" in resp.content and proxy.forwarded_count == 0


# ---------------------------------------------------------------------- faults


def test_drop_answer_forwards_waits_for_the_answer_then_hangs_up(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.drop_answer_next()
    # When / Then
    with pytest.raises(httpx.RemoteProtocolError):
        post(proxy, b'{"items":[{"ref":"x"}]}')
    assert [s.body for s in upstream.seen] == [b'{"items":[{"ref":"x"}]}']  # the upstream committed
    assert (proxy.request_count, proxy.forwarded_count) == (1, 1)
    assert post(proxy).json()["n"] == 2  # only the next one


def test_drop_answer_waits_for_a_slow_upstream_before_hanging_up(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    upstream.delay = 0.3
    proxy.drop_answer_next()
    start = time.monotonic()
    # When / Then
    with pytest.raises(httpx.RemoteProtocolError):
        post(proxy)
    assert time.monotonic() - start >= 0.3 and upstream.count() == 1


def test_drop_before_closes_without_forwarding(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.drop_before_next(2)
    # When / Then
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            post(proxy)
    assert upstream.seen == [] and (proxy.request_count, proxy.forwarded_count) == (2, 0)
    assert post(proxy).status_code == 200 and upstream.count() == 1


def test_status_without_forward_is_a_proxy_page_the_upstream_never_saw(proxy: FaultProxy,
                                                                      upstream: Upstream) -> None:
    # Given
    proxy.status_next(1, status=502)
    # When
    resp = post(proxy)
    # Then
    assert resp.status_code == 502 and resp.headers["content-type"].startswith("text/html")
    assert b"<h1>502 Bad Gateway</h1>" in resp.content and "x-upstream" not in resp.headers
    assert upstream.seen == [] and proxy.forwarded_count == 0


def test_status_with_forward_is_a_timeout_after_commit(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.status_next(1, status=504, forward=True)
    # When
    resp = post(proxy, b'{"items":[{"ref":"y"}]}')
    # Then
    assert resp.status_code == 504 and b"504 Gateway Time-out" in resp.content
    assert [s.body for s in upstream.seen] == [b'{"items":[{"ref":"y"}]}'] and proxy.forwarded_count == 1


def test_status_refuses_a_success_status(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="error status"):
        proxy.status_next(1, status=200)


def test_non_json_forwards_then_answers_a_200_html_page(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.non_json_next()
    # When
    resp = post(proxy)
    # Then
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert resp.content.startswith(b"<!DOCTYPE html>") and upstream.count() == 1


def test_non_json_without_forward_never_reaches_the_upstream(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.non_json_next(forward=False)
    # When
    resp = post(proxy)
    # Then
    assert resp.status_code == 200 and b"<html>" in resp.content and upstream.seen == []


def test_faults_apply_in_the_order_they_were_queued(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.drop_before_next()
    proxy.status_next(2, status=502)
    proxy.drop_answer_next()
    assert proxy.pending_faults == 4
    # When
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(post(proxy).status_code)
        except httpx.RemoteProtocolError:
            outcomes.append(0)
    # Then
    assert outcomes == [0, 502, 502, 0, 200]
    assert (proxy.request_count, proxy.forwarded_count, upstream.count(), proxy.pending_faults) == (5, 2, 2, 0)


def test_clear_faults_makes_the_proxy_transparent(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.drop_before_next(3)
    proxy.latency = 5.0
    # When
    proxy.clear_faults()
    # Then
    assert post(proxy).status_code == 200 and proxy.pending_faults == 0 and proxy.latency == 0


def test_latency_delays_every_request(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.latency = 0.25
    start = time.monotonic()
    # When
    resp = post(proxy)
    # Then
    assert resp.status_code == 200 and time.monotonic() - start >= 0.25


def test_concurrent_requests_take_exactly_the_queued_faults(proxy: FaultProxy, upstream: Upstream) -> None:
    # Given
    proxy.drop_answer_next(5)
    client = httpx.Client(timeout=5, limits=httpx.Limits(max_connections=10))

    def one(_: int) -> str:
        try:
            return "ok" if client.post(proxy.url, content=b"{}").status_code == 200 else "bad"
        except httpx.RemoteProtocolError:
            return "dropped"

    # When
    with ThreadPoolExecutor(10) as pool, client:
        outcomes = list(pool.map(one, range(20)))
    # Then
    assert sorted(outcomes).count("dropped") == 5 and outcomes.count("ok") == 15
    assert upstream.count() == 20 and proxy.forwarded_count == 20 and proxy.request_count == 20


def test_stop_closes_idle_keep_alive_connections_and_the_port(upstream: Upstream) -> None:
    # Given: a keep-alive connection that has had one answer
    proxy = FaultProxy(upstream.url).start()
    port = proxy.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    # When
    proxy.stop()
    # Then
    assert sock.recv(65536) == b""  # closed by the proxy, not left to hang
    sock.close()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}{PATH}", content=b"{}", timeout=1)


def test_a_bad_upstream_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http:// upstream URL"):
        FaultProxy("https://example.org/x")
