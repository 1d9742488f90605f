"""An upstream that drips its answer (one byte every 0.2 s, far longer than any deadline) cannot keep a
request past its deadline (issue 8 section 1, API.md section 2): httpx's read timeout restarts at every
byte, so each attempt is bounded in total time (``cswhmcs.adapters.bounded``) and ends as an
``UpstreamTimeout``.

The upstream here is a tiny loopback server: it drips the status line and headers (never finishing
them) or a complete header block and then the body, and answers ``/fast`` paths at once.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cswhmcs import deadline
from cswhmcs.adapters.computestacks import ComputeStacksClient, UserSelector
from cswhmcs.adapters.whmcs import WhmcsClient
from cswhmcs.api import reset_deps
from cswhmcs.errors import UpstreamTimeout
from tests.conftest import LiveStack
from tests.support.endpoints import LoopbackListener, read_request
from tests.support.live import timed_call

pytestmark = pytest.mark.integration

INTERVAL = 0.2
USER = b'{"user":{"id":7,"email":"fast@example.org"}}'


class DripServer(LoopbackListener):
    """Reads one request per connection (keep-alive), then answers it by ``mode``:
    ``"headers"``: ``HTTP/1.1 200 OK`` and header bytes, one every ``interval`` s, never ending;
    ``"body"``: a whole header block, then a long body one byte every ``interval`` s;
    a path containing ``/fast``: a small JSON user at once.
    A drip stops (the connection closes) after ``lifetime`` s: a client that is not bounded fails its
    test in time instead of hanging it."""

    def __init__(self, mode: str, interval: float = INTERVAL, lifetime: float = 10.0) -> None:
        self.mode = mode
        self.interval = interval
        self.lifetime = lifetime
        self.requests: list[str] = []
        super().__init__(accept_timeout=0.2)

    def _accepted(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        pending = bytearray()
        with conn:
            while not self._stop.is_set():
                try:
                    request = read_request(conn, pending)
                    if request is None:
                        return
                    target = request[0].split(b" ")[1].decode()
                    self.requests.append(target)
                    if "/fast" in target:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(USER)).encode() + b"\r\n\r\n" + USER)
                        continue
                    if self.mode == "headers":
                        self._drip(conn, b"HTTP/1.1 200 OK\r\nX-Drip: ", b"a")
                    else:
                        self._drip(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: 100000\r\n\r\n", b" ")
                    return
                except TimeoutError:
                    continue
                except OSError:
                    return

    def _drip(self, conn: socket.socket, prefix: bytes, filler: bytes) -> None:
        """``prefix`` byte by byte, then ``filler``: until the client gives up or the drip's lifetime ends."""
        data = iter(prefix)
        ends = time.monotonic() + self.lifetime
        while not self._stop.is_set() and time.monotonic() < ends:
            byte = next(data, None)
            conn.sendall(bytes([byte]) if byte is not None else filler)
            time.sleep(self.interval)


@pytest.fixture(params=["headers", "body"])
def drip(request: pytest.FixtureRequest) -> Iterator[DripServer]:
    with DripServer(request.param) as server:
        yield server


def cs(server: DripServer, **kw: Any) -> ComputeStacksClient:
    return ComputeStacksClient(server.url, "key", "secret", **kw)


def timed(fn: Any) -> tuple[float, BaseException | None, Any]:
    started = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # the outcome is asserted by the caller
        return time.monotonic() - started, exc, None
    return time.monotonic() - started, None, result


def test_a_dripping_computestacks_get_times_out_with_its_deadline(drip: DripServer) -> None:
    # Given ComputeStacks dripping its answer, and the default timeouts (10 s per read: never reached)
    with cs(drip) as client, deadline.use(deadline.Deadline.after(2.0)):
        # When a GET runs under a 2 s deadline
        elapsed, error, _ = timed(lambda: client.get_user(UserSelector.by_id(7)))
    # Then it is an UpstreamTimeout (nothing applied: a read), within ~2.5 s, not a hang
    assert isinstance(error, UpstreamTimeout), error
    assert error.maybe_applied is False and error.upstream == "ComputeStacks"
    assert elapsed < 2.5
    assert drip.requests  # it was sent, and cut while ComputeStacks was still answering


def test_a_dripping_whmcs_read_times_out_with_its_deadline(drip: DripServer) -> None:
    # Given WHMCS dripping its answer
    with WhmcsClient(drip.url + "/includes/api.php", "ident", "secret") as client, \
            deadline.use(deadline.Deadline.after(2.0)):
        # When a read action runs under a 2 s deadline
        elapsed, error, _ = timed(lambda: client.get_client(5))
    # Then it is an UpstreamTimeout within ~2.5 s
    assert isinstance(error, UpstreamTimeout), error
    assert error.maybe_applied is False and error.upstream == "WHMCS"
    assert elapsed < 2.5


def test_a_dripped_create_is_maybe_applied_and_no_attempt_outlives_connect_plus_read() -> None:
    # Given ComputeStacks dripping its headers, a client with 1 s reads and 0.5 s to connect, no deadline
    with DripServer("headers") as server, cs(server, timeout=1.0, connect_timeout=0.5) as client:
        # When a user is created (never re-sent once it may have arrived)
        elapsed, error, _ = timed(lambda: client.create_user({"email": "new@example.org"}))
    # Then the attempt ended after connect + read (1.5 s) in all, as a read timeout would: maybe applied
    assert isinstance(error, UpstreamTimeout), error
    assert error.maybe_applied is True
    assert elapsed < 2.5
    assert server.requests == ["/api/admin/users"]


def test_one_client_many_threads_only_the_dripping_request_is_cut() -> None:
    # Given one client shared by threads (as `cswhmcs serve` does), ComputeStacks dripping only one path
    with DripServer("body") as server, cs(server) as client:
        def dripping() -> tuple[float, BaseException | None, Any]:
            with deadline.use(deadline.Deadline.after(1.5)):
                return timed(lambda: client.get_user(UserSelector.by_id(7)))

        def fast() -> list[Any]:  # no deadline of its own; pooled connections are reused
            return [client.get_user(UserSelector.by_external_id("fast")) for _ in range(20)]

        # When the dripping GET runs beside threads of quick ones, then again after it was cut
        with ThreadPoolExecutor(max_workers=4) as pool:
            cut = pool.submit(dripping)
            quick = [pool.submit(fast) for _ in range(3)]
            elapsed, error, _ = cut.result()
            answers = [user for f in quick for user in f.result()]
        after = client.get_user(UserSelector.by_external_id("fast"))
    # Then only the dripping one timed out, on its own deadline; every other answer arrived whole
    assert isinstance(error, UpstreamTimeout) and elapsed < 2.0
    assert len(answers) == 60 and all(user == {"id": 7, "email": "fast@example.org"} for user in answers)
    assert after == {"id": 7, "email": "fast@example.org"}


def test_a_route_with_a_dripping_computestacks_answers_504_in_the_error_shape(
        live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given `cswhmcs serve` with the default upstream timeouts (10 s per read), a route budget lowered
    # to 5 s (3 s for upstreams), and ComputeStacks dripping its headers
    with DripServer("headers") as server:
        for name in ("CS_TIMEOUT", "WHMCS_TIMEOUT", "CONNECT_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("CS_API_URL", server.url)
        monkeypatch.setattr(deadline, "API_BUDGET_SECONDS", 5.0)
        reset_deps()
        # When a route that asks ComputeStacks is called
        resp, elapsed = timed_call(live_stack, "/v1/user-groups", {}, timeout=20)
    # Then it answered 504 in the API.md shape, within the budget
    body = resp.json()
    assert resp.status_code == 504, body
    assert body["result"] == "error" and body["code"] == "upstream_timeout"
    assert "ComputeStacks" in body["message"]
    assert elapsed < 5.0
    assert server.requests
