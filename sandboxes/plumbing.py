"""The HTTP plumbing the loopback fakes share: the ComputeStacks and WHMCS sandboxes and the fault proxy.

Standard library only. What is here knows nothing of either upstream:

* ``Response``: an answer (status, body, content type, extra headers, optional reason phrase);
* ``Handler``: a keep-alive HTTP/1.1 request handler (Nagle off, headers and body in one write, quiet unless
  its owner is ``verbose``): ``respond`` reads the body (Content-Length or chunked; a malformed one is a 400)
  and calls the fake's ``answer(body)``, which uses ``send`` and ``hang_up`` (close without an answer); a
  fake's handler names the methods it answers (``do_POST = Handler.respond`` ...);
* ``LoopbackHTTPServer``: a ``ThreadingHTTPServer`` of daemon threads that knows its owner and the connections
  it holds (so ``stop()`` can close idle keep-alives), and asks the owner which errors are worth a traceback;
* ``BackgroundServer``: the owner's lifecycle: ``start()`` binds ``host:port`` (0: any free port) and serves from
  a daemon thread, ``stop()`` sets ``stopping`` (waking delayed answers) and shuts down; usable with ``with``;
* ``SandboxServer``: a ``BackgroundServer`` with the ``hang`` knob both sandboxes have (``hang_gate``).

What each fake answers, and its knobs, stay in the fake (``sandboxes/computestacks/``, ``sandboxes/whmcs.py``,
``sandboxes/faultproxy.py``).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

from sandboxes.hang import Hang

MAX_BODY = 10 * 1024 * 1024
OwnerT = TypeVar("OwnerT", bound="BackgroundServer")
_BODYLESS = frozenset({204, 304})


class CaseInsensitiveHeaders(dict[str, str]):
    """Request headers: keys lower-cased, looked up case-insensitively."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class Response:
    """One answer. ``content_type`` None: no Content-Type header (or it is among ``headers``); ``reason`` None:
    the standard phrase for ``status``."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None


class Handler(BaseHTTPRequestHandler, Generic[OwnerT]):
    """The request handler of a fake (``OwnerT``): subclasses implement ``answer`` and point ``do_<METHOD>`` at
    ``respond`` for the methods they answer (any other gets http.server's 501)."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write, without Nagle: no 40 ms delayed-ACK stalls on keep-alive.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: LoopbackHTTPServer

    @property
    def owner(self) -> OwnerT:
        return cast(OwnerT, self.server.owner)

    def respond(self) -> None:
        try:
            body = self.read_body()
        except ValueError:
            self.reject()
            return
        self.answer(body)

    def answer(self, body: bytes) -> None:
        """Answer the request whose body is ``body`` (``send``, or ``hang_up``)."""
        raise NotImplementedError

    def log_message(self, format: str, *args: Any) -> None:
        owner = self.server.owner
        if owner.verbose:  # else quiet: tests read the fakes' request logs instead
            sys.stderr.write(f"[{owner.thread_name}] {self.address_string()} {format % args}\n")

    def read_body(self, limit: int = MAX_BODY) -> bytes:
        """The request body, framed by ``Transfer-Encoding: chunked`` or ``Content-Length`` (none: empty).
        ValueError when the framing is malformed or the body is larger than ``limit``."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > limit:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(length))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > limit:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def send(self, response: Response) -> None:
        """Write ``response`` (no body for HEAD, 204 and 304). A client that gave up (e.g. its read timeout)
        only closes the connection: nothing else to do."""
        try:
            self.send_response(response.status, response.reason)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.status not in _BODYLESS:
                self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD" and response.body and response.status not in _BODYLESS:
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def reject(self) -> None:
        """A request whose body cannot be read: 400, then the connection closes (its framing is lost)."""
        self.send(Response(400, b"Bad Request", "text/plain"))
        self.close_connection = True

    def hang_up(self) -> None:
        """Close the client's connection without a single byte of answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server for ``owner``: daemon threads, the connections it holds, the owner's error policy."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: BackgroundServer, handler: type[Handler[Any]]) -> None:
        self.owner = owner
        self.request_queue_size = owner.request_queue_size  # read by server_activate, in super().__init__
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every connection still open (idle keep-alives would otherwise keep their threads waiting)."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.owner.reports_error(sys.exc_info()[1]):
            super().handle_error(request, client_address)


class BackgroundServer:
    """An HTTP server on ``host:port`` served by a daemon thread. Subclasses set ``handler`` and may tune the
    class attributes; ``url`` is ``http://host:port`` followed by ``url_path``."""

    handler: ClassVar[type[Handler[Any]]]
    thread_name: ClassVar[str] = "loopback-server"
    poll_interval: ClassVar[float] = 0.02  # stop() waits for the next poll
    join_timeout: ClassVar[float] = 5.0
    request_queue_size: ClassVar[int] = 5  # the listen backlog (socketserver's default)
    keep_port: ClassVar[bool] = False  # True: the port the first start() bound is kept for restarts
    close_connections_on_stop: ClassVar[bool] = False
    url_path: str = ""
    verbose: bool = False

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self.stopping = threading.Event()  # set by stop(): whatever waits on it gives up
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self._server is not None:
            return self
        self.stopping.clear()
        self._opening()
        server = self._server = LoopbackHTTPServer((self.host, self._port), self, self.handler)
        if self.keep_port:
            self._port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes any delayed answer
        self._closing()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self.close_connections_on_stop:
                server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _opening(self) -> None:
        """Called by start() before the server binds."""

    def _closing(self) -> None:
        """Called by stop() before the server shuts down."""

    def reports_error(self, exc: BaseException | None) -> bool:
        """Whether an exception that escaped a handler is worth a traceback on stderr; a client that hung up
        (or a socket closed by stop()) is part of the game."""
        return not isinstance(exc, OSError)

    # ------------------------------------------------------------------ address

    @property
    def port(self) -> int:
        server = self._server
        return self._port if server is None else int(server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.url_path}"


class SandboxServer(BackgroundServer):
    """A ``BackgroundServer`` with the ``hang`` knob: handlers wait at ``hang_gate`` before they look at a request."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.hang_gate = Hang()

    def _opening(self) -> None:
        self.hang_gate.reopen()

    def _closing(self) -> None:
        self.hang_gate.close()  # releases every hanging request (they are dropped)

    def hang(self, seconds: float) -> None:
        """Every request (arriving or waiting) waits ``seconds`` from now before the sandbox even looks at it, or
        until ``hang(0)``/``clear_faults()``/``stop()``; then it is answered normally (the client may be gone)."""
        self.hang_gate.set(seconds)
