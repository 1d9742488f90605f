"""Each upstream attempt bounded in total time (cswhmcs.adapters.bounded): every socket operation under
httpx gets min(its own timeout, what the attempt has left), and none starts once the attempt is over.
The loopback drip-feed tests (tests/integration/test_drip_feed.py) show it end to end."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx
import pytest

from cswhmcs.adapters import bounded
from cswhmcs.adapters.computestacks import ComputeStacksClient
from cswhmcs.adapters.whmcs import WhmcsClient


class FakeStream(httpcore.NetworkStream):
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.timeouts.append(timeout)
        return b"x"

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)

    def close(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return "extra:" + info


class FakeBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.stream = FakeStream()
        self.connect_timeouts: list[float | None] = []

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        self.connect_timeouts.append(timeout)
        return self.stream


def test_each_socket_operation_gets_what_the_attempt_has_left() -> None:
    inner = FakeBackend()
    backend = bounded.BoundedBackend(inner)
    stream = backend.connect_tcp("example.net", 443, timeout=3.0)  # outside an attempt: as given
    assert inner.connect_timeouts == [3.0]
    with bounded.within(0.5):
        stream.read(10, timeout=10.0)
        stream.write(b"abc", timeout=None)
        backend.connect_tcp("example.net", 443, timeout=3.0)
    read, write = inner.stream.timeouts
    assert read is not None and 0.3 < read <= 0.5 and write is not None and 0.3 < write <= 0.5
    assert inner.connect_timeouts[1] is not None and inner.connect_timeouts[1] <= 0.5
    stream.read(10, timeout=10.0)  # the bound ended with the attempt
    assert inner.stream.timeouts[-1] == 10.0
    assert stream.get_extra_info("socket") == "extra:socket"


@pytest.mark.parametrize(("operation", "error"), [
    (lambda s, b: s.read(10, timeout=10.0), httpcore.ReadTimeout),
    (lambda s, b: s.write(b"abc", timeout=10.0), httpcore.WriteTimeout),
    (lambda s, b: b.connect_tcp("example.net", 443, timeout=3.0), httpcore.ConnectTimeout),
])
def test_nothing_starts_once_the_attempt_is_over(operation: Any, error: type[Exception]) -> None:
    inner = FakeBackend()
    backend = bounded.BoundedBackend(inner)
    stream = backend.connect_tcp("example.net", 443, timeout=3.0)
    with bounded.within(-0.1), pytest.raises(error):
        operation(stream, backend)
    assert inner.stream.timeouts == [] and len(inner.connect_timeouts) == 1


def test_both_clients_are_bounded_proxies_from_the_environment_included(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    clients = [ComputeStacksClient("https://cs.example.net", "k", "s"),
               WhmcsClient("https://billing.example.net/includes/api.php", "i", "s")]
    for client in clients:
        http = client._http
        transports = [http._transport, *http._mounts.values()]
        assert len(transports) >= 2  # the direct one and the proxy's
        for transport in transports:
            assert isinstance(transport._pool._network_backend, bounded.BoundedBackend)


def test_a_test_transport_is_left_alone_and_an_unknown_httpx_layout_fails_loudly() -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(200, json={"locations": []}))
    assert ComputeStacksClient("https://cs.example.net", "k", "s", transport=mock).list_locations() == []

    class Changed(httpx.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            del self._pool

    with pytest.raises(RuntimeError, match="could not be bounded"):
        bounded.bound(httpx.Client(transport=Changed()))
