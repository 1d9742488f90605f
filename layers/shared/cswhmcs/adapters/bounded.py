"""Each upstream attempt bounded in TOTAL time, not only per socket read.

httpx's read timeout applies to every socket read, so an upstream that drips its answer (a byte every
few seconds, headers or body) would keep one attempt alive far past the request's deadline. Here the
network layer under httpx's connection pool is wrapped: every connect, TLS handshake, read and write
is given ``min(its own timeout, what the current attempt has left)``, and once the attempt's time is
over the next one fails at once with httpcore's timeout of that phase (which httpx turns into
``httpx.ReadTimeout`` etc., and the retry engine into ``UpstreamTimeout``, maybe applied as for any
read timeout of that request).

"The current attempt" is a ``ContextVar`` set by ``cswhmcs.adapters.retry.Retrier`` around each
``send`` (``within(limit)``). httpx's sync client does all of one request's socket I/O in the calling
thread, so each thread (each `cswhmcs serve` request) sees only its own attempt, while connections
stay pooled and shared: the bound belongs to the attempt, not to the socket. No thread, no timer: a
ContextVar read per socket operation.

``client(...)`` is how every upstream client builds its ``httpx.Client``: bounded as above, and with one
TLS context per process (``ssl_context``) instead of one per client. httpx builds a new context for
every client, loading the whole CA bundle each time (~25 ms of CPU, the largest part of a client's
construction); a function with two or three clients (the connection test, the billing worker) and every
rebuild after a rotated secret paid it again.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

# The monotonic time the current attempt must be over by; None: no bound beyond the per-read timeouts.
_attempt_ends: ContextVar[float | None] = ContextVar("cswhmcs_attempt_ends", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """The socket I/O of this thread/context in the block ends within ``seconds`` (inf: unbounded)."""
    token = _attempt_ends.set(time.monotonic() + seconds if math.isfinite(seconds) else None)
    try:
        yield
    finally:
        _attempt_ends.reset(token)


def _cut(timeout: float | None, late: type[Exception]) -> float | None:
    ends = _attempt_ends.get()
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise late("The attempt's time is over.")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # One bound for the whole buffer: SyncStream applies the timeout to each send() of it.
        self._inner.write(buffer, _cut(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _cut(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class BoundedBackend(httpcore.NetworkBackend):
    """A network backend whose streams never outlive the current attempt (``within``)."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _cut(timeout, httpcore.ConnectTimeout),
                                               local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _cut(timeout, httpcore.ConnectTimeout),
                                                       socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bound(client: httpx.Client) -> httpx.Client:
    """Put ``BoundedBackend`` under every connection pool ``client`` may use (its transport and the
    proxy transports httpx mounted from the environment); returns ``client``.

    Transports that are not httpx's own (a test's ``MockTransport``, a WSGI app) are left as they are.
    Raises ``RuntimeError`` when httpx's transport no longer looks as expected, so that an upgrade that
    would silently lose the bound fails at once instead (httpx 0.27/0.28 keep the pool in ``_pool``
    and httpcore 1.x the backend in ``_network_backend``).
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        if not isinstance(transport, httpx.HTTPTransport):
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            raise RuntimeError("httpx's transport changed: upstream attempts could not be bounded in time.")
        if not isinstance(backend, BoundedBackend):
            pool._network_backend = BoundedBackend(backend)  # type: ignore[union-attr]
    return client


_ssl_lock = threading.Lock()
_ssl_contexts: dict[tuple[str, str], ssl.SSLContext] = {}


def ssl_context() -> ssl.SSLContext:
    """The TLS context httpx would build for ``verify=True`` (certifi's bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR when set: ``httpx.create_ssl_context``), built once per process and shared by every
    client. Contexts are safe to share between threads and connections; httpcore sets the same ALPN
    protocols on it for each connection (HTTP/1.1 only here)."""
    key = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    with _ssl_lock:
        context = _ssl_contexts.get(key)
        if context is None:
            context = _ssl_contexts[key] = httpx.create_ssl_context()
        return context


def client(*, transport: httpx.BaseTransport | None = None, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` bounded in time (``bound``) on the shared TLS context (``ssl_context``).
    With a ``transport`` of its own (a test's ``MockTransport``) no TLS context is needed, and none is
    built."""
    if transport is None:
        kwargs.setdefault("verify", ssl_context())
    return bound(httpx.Client(transport=transport, **kwargs))


JSON_HEADERS = {"User-Agent": "cswhmcs/0.1", "Accept": "application/json"}


def upstream_client(timeout: float, connect_timeout: float, transport: httpx.BaseTransport | None, *,
                    headers: dict[str, str] = JSON_HEADERS, **kwargs: Any) -> httpx.Client:
    """An upstream client's ``client``: ``timeout`` per read, ``connect_timeout`` to connect, redirects not
    followed (an upstream that redirects is answered as it answered), JSON asked for."""
    return client(timeout=httpx.Timeout(timeout, connect=connect_timeout), transport=transport,
                  follow_redirects=False, headers=dict(headers), **kwargs)
