"""A fault-injecting HTTP reverse proxy on loopback, in front of any upstream URL (the billing receiver).

Why: the faults that matter for exactly-once sit *between* the backend and WHMCS, not inside either:
a load balancer that times out after PHP committed, a connection that breaks before or after the
request reached PHP, a 502/504 page from nginx or Cloudflare, a captive HTML page. The receiver is
the real ``billing.php`` under ``php -S``, so these faults cannot be knobs of the upstream; this proxy
produces them on the wire, and counts what the upstream really saw (``forwarded_count``).

Standard library only: a ``ThreadingHTTPServer`` in a daemon thread (``sandboxes/plumbing.py``), one
``http.client`` connection to the upstream per forwarded request. Faults are queued first-in first-out:
each ``*_next(n)`` call adds one entry that applies to the next ``n`` requests once the entries before it
are used up.

Usage::

    with FaultProxy(receiver.url) as proxy:
        proxy.drop_answer_next()          # the upstream commits, the client gets no answer
        ReceiverClient(proxy.url, ...).send(items)
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sandboxes.plumbing import BackgroundServer, Handler, Response

# Headers that belong to one hop (RFC 9110 section 7.6.1) and are not passed through; the proxy frames
# its own messages with Content-Length.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                         "upgrade", "proxy-authorization", "proxy-authenticate", "content-length", "host"})

_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}


def error_page(status: int) -> bytes:
    """The HTML error page nginx answers for ``status`` (what a backend sees from a real proxy)."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            f"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode()


NON_JSON_PAGE = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
                 b"<body><p>Checking your browser before accessing the site.</p></body></html>")


@dataclass
class _Fault:
    kind: str  # "drop_answer" | "drop_before" | "status" | "non_json"
    remaining: int
    status: int = 502
    forward: bool = False


@dataclass
class _Upstream:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Handler(Handler["FaultProxy"]):
    def answer(self, body: bytes) -> None:
        proxy = self.owner
        fault = proxy._arrive()
        if proxy.latency > 0 and proxy.stopping.wait(proxy.latency):
            self.hang_up()
            return
        if fault is not None and fault.kind == "drop_before":
            self.hang_up()  # the upstream never sees it
            return
        forward = fault is None or fault.kind == "drop_answer" or fault.forward
        answer: _Upstream | None = None
        if forward:
            answer = proxy._forward(self.command, self.path, self.headers.items(), body)
            if answer is None:  # the upstream is unreachable: what a real proxy answers
                self.send(_error_response(502))
                return
        if fault is None:
            assert answer is not None
            self.send(Response(answer.status, answer.body, None, answer.headers, answer.reason))
        elif fault.kind == "drop_answer":
            self.hang_up()  # the upstream answered (committed); the client gets nothing
        elif fault.kind == "status":
            self.send(_error_response(fault.status))
        else:  # non_json
            self.send(Response(200, NON_JSON_PAGE, "text/html; charset=utf-8", reason="OK"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = Handler.respond


def _error_response(status: int) -> Response:
    return Response(status, error_page(status), "text/html", reason=_REASONS.get(status, "Error"))


class FaultProxy(BackgroundServer):
    """Reverse proxy on ``host:port`` forwarding every request to ``upstream_url``'s host, path unchanged.

    ``url`` is the upstream URL with the proxy's host and port. All knobs and counters are guarded by one
    lock; safe to poke from tests while requests run. ``stop()`` closes every client connection (idle
    keep-alives and waiting requests).
    """

    handler = _Handler
    thread_name = "fault-proxy"
    request_queue_size = 128  # the default 5 drops SYNs under concurrent workers: 1 s connect stalls
    close_connections_on_stop = True

    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0, *,
                 upstream_timeout: float = 60.0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"FaultProxy needs an http:// upstream URL with a host, got {upstream_url!r}")
        super().__init__(host, port)
        self.upstream_url = upstream_url
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self.url_path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.upstream_timeout = upstream_timeout
        self.latency = 0.0  # seconds each request waits before it is forwarded (or faulted)
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._requests = 0
        self._forwarded = 0

    # ------------------------------------------------------------------ knobs

    def drop_answer_next(self, n: int = 1) -> None:
        """Forward the next ``n`` requests, wait for the upstream's whole answer (it committed), then close
        the client connection without sending anything: the lost answer after a commit."""
        self._add(_Fault("drop_answer", n))

    def drop_before_next(self, n: int = 1) -> None:
        """Close the next ``n`` client connections without forwarding: the upstream never sees them."""
        self._add(_Fault("drop_before", n))

    def status_next(self, n: int = 1, status: int = 502, forward: bool = False) -> None:
        """Answer the next ``n`` requests with a proxy's HTML error page. ``forward``: the upstream handles the
        request first and its answer is thrown away (a gateway timeout after the commit)."""
        if not 400 <= status <= 599:
            raise ValueError(f"status_next needs an error status (4xx/5xx), got {status}")
        self._add(_Fault("status", n, status=status, forward=forward))

    def non_json_next(self, n: int = 1, forward: bool = True) -> None:
        """Answer the next ``n`` requests with 200 and an HTML page; ``forward``: after the upstream handled it."""
        self._add(_Fault("non_json", n, forward=forward))

    def clear_faults(self) -> None:
        """Forget every queued fault and the latency: from now on the proxy is transparent."""
        with self._lock:
            self._faults.clear()
        self.latency = 0.0

    # ------------------------------------------------------------------ inspection

    @property
    def request_count(self) -> int:
        """Requests the proxy received from clients."""
        with self._lock:
            return self._requests

    @property
    def forwarded_count(self) -> int:
        """Requests the proxy sent to the upstream (what the upstream saw)."""
        with self._lock:
            return self._forwarded

    @property
    def pending_faults(self) -> int:
        """Requests still to be faulted by the queued faults."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    # ------------------------------------------------------------------ internals

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError(f"n must be at least 1, got {fault.remaining}")
        with self._lock:
            self._faults.append(fault)

    def _arrive(self) -> _Fault | None:
        """Count one request and take the fault it gets, if any."""
        with self._lock:
            self._requests += 1
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return fault

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> _Upstream | None:
        """Send the request upstream and read its whole answer; None when the upstream cannot be reached."""
        conn = http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=self.upstream_timeout)
        try:
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", f"{self._upstream_host}:{self._upstream_port}")
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            except OSError:
                return None
            with self._lock:
                self._forwarded += 1
            try:
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:  # what nginx answers when proxy_read_timeout expires
                return _Upstream(504, "Gateway Time-out", [("Content-Type", "text/html")], error_page(504))
            except (OSError, http.client.HTTPException):
                return _Upstream(502, "Bad Gateway", [("Content-Type", "text/html")], error_page(502))
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return _Upstream(resp.status, resp.reason, kept, data)
        finally:
            conn.close()
