"""Endpoints that hang, for the timeout tests: ``Silent`` accepts connections and never answers;
``read_request`` reads one HTTP request off a connection, for the fakes that answer slowly or not at all;
``refused_port`` (and the ``closed_port`` fixture), a port that refuses connections."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

import pytest

from cswhmcs.config import Settings


class LoopbackListener:
    """A loopback TCP endpoint whose thread accepts connections while the ``with`` block lasts and hands
    each to ``_accepted``; ``_closing`` runs once that thread has stopped, before the socket is closed."""

    join_seconds = 5.0

    def __init__(self, accept_timeout: float) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(accept_timeout)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _closing(self) -> None:
        return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.join_seconds)
        self._closing()
        self._sock.close()


def read_request(conn: socket.socket, pending: bytearray) -> tuple[bytes, bytes] | None:
    """One HTTP/1.x request from ``conn``, after what ``pending`` already holds: its head and its body (by
    Content-Length), whatever came after them left in ``pending``; None when the peer closed first. A socket
    timeout leaves what was read in ``pending``, so that a call again goes on from there."""
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        pending += chunk
        rest += chunk
    del pending[: len(head) + 4 + length]
    return head, rest[:length]


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port bound (so nobody else takes it) but never listening: connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (``refused_port``) for the test."""
    with refused_port() as port:
        yield port


class Silent(LoopbackListener):
    """A loopback endpoint that accepts connections and never answers (a hanging AWS endpoint)."""

    join_seconds = 2.0

    def __init__(self) -> None:
        super().__init__(accept_timeout=0.1)
        self.accepted = 0
        self._held: list[socket.socket] = []

    def _accepted(self, conn: socket.socket) -> None:
        self.accepted += 1
        self._held.append(conn)

    def _closing(self) -> None:
        for conn in self._held:
            conn.close()


def settings(endpoint: str) -> Settings:
    """Settings whose DynamoDB is ``endpoint``."""
    return Settings.model_validate({"AWS_ENDPOINT_URL_DYNAMODB": endpoint, "ACCOUNTS_TABLE": "accounts"})
