"""The ComputeStacks client on a scripted transport (``Harness``) and a ``CredentialSource`` whose secret was
rotated (``FakeSource``, checked against the port by mypy below): the client's unit tests and the review
tests of issue 8 use them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from cswhmcs.adapters.computestacks import ComputeStacksClient

if TYPE_CHECKING:
    from cswhmcs import ports
    from cswhmcs.adapters.computestacks import CredentialSource

KEY = "ak-unit-test-key"
SECRET = "unit-test-secret-value-1234567890"
BASE = "https://cs.example.net"
USER = {"id": 42, "email": "jane@example.com", "run_rate": 0, "currency": "EUR"}

Handler = Callable[[httpx.Request], httpx.Response]


class Harness:
    """A client wired to a scripted transport; records requests and sleeps."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

        def record(request: httpx.Request) -> httpx.Response:
            request.read()
            self.requests.append(request)
            return handler(request)

        self.client = ComputeStacksClient(BASE, KEY, SECRET, transport=httpx.MockTransport(record),
                                          sleep=self.sleeps.append, **kwargs)


def script(*steps: httpx.Response | Exception) -> Handler:
    """Answer with each step in turn (an exception is raised), repeating the last one."""
    queue = list(steps)

    def handler(request: httpx.Request) -> httpx.Response:
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(step, Exception):
            raise step
        return step

    return handler


def ok_user(status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"user": USER})


def errors(status: int, *messages: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": list(messages)})


ROTATED = ("ak-unit-test-key", "rotated-secret-value-0987654321")


def basic(pair: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()


class FakeSource:
    """A CredentialSource whose secret was rotated: ``offer`` is what a forced re-read finds."""

    def __init__(self, pair: tuple[str, str] = (KEY, SECRET), offer: tuple[str, str] | None = ROTATED,
                 refused: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.pair = pair
        self.offer = offer
        self.refused = set(refused)
        self.rejections: list[tuple[str, str]] = []

    def current(self) -> tuple[str, str]:
        return self.pair

    def rejected(self, used: tuple[str, str]) -> tuple[str, str] | None:
        self.rejections.append(used)
        self.refused.add(used)
        if self.offer is not None and self.offer != used:
            self.pair = self.offer
            return self.offer
        return None

    def usable(self, pair: tuple[str, str]) -> bool:
        return pair not in self.refused


if TYPE_CHECKING:  # the real client implements the port the account logic uses; the fake source its port
    _client: ports.ComputeStacks = ComputeStacksClient(BASE, KEY, SECRET)
    _source: CredentialSource = FakeSource()
