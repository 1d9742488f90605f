"""Review of issue 8 section 2: the billing run's ComputeStacks credential gate (billing/credentials.py)
with the real client against httpx.MockTransport and the in-memory run store."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cswhmcs import factory
from cswhmcs.billing.credentials import CredentialsStopped, MemoryCredentialStore, guarded_client
from cswhmcs.config import Settings

BASE = "https://cs.example.net"
KEY = "ak-review-key"
GOOD = "review-good-secret-1234567890"


class CountingStore(MemoryCredentialStore):
    """The in-memory store, counting probe claims; gives up loudly instead of spinning for ever."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    def claim_cs_probe(self, run_id: str, fp: str, owner: str, *, lease: timedelta, max_failures: int) -> bool:
        self.claims += 1
        if self.claims > 50:
            raise AssertionError("the credential check keeps claiming probes without ever deciding")
        return super().claim_cs_probe(run_id, fp, owner, lease=lease, max_failures=max_failures)


def _gate(secret: str, store: Any, memory: factory.RejectedPairs, requests: list[httpx.Request]) -> Any:
    settings = Settings(CS_API_URL=BASE, CS_API_KEY=SecretStr(KEY), CS_API_SECRET=SecretStr(secret))

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        ok = request.headers.get("authorization") == httpx.BasicAuth(KEY, GOOD)._auth_header
        return httpx.Response(200, json={"locations": []}) if ok else \
            httpx.Response(401, json={"errors": ["Not Authorized"]})

    base = factory.SettingsCredentials(settings, memory=memory)
    _cs, gate = guarded_client(settings, store, base=base, sleep=lambda s: None)
    gate.cs._http._transport = httpx.MockTransport(answer)
    return gate


def test_a_pair_this_process_already_refused_stops_the_next_run_instead_of_spinning() -> None:
    # Given a warm worker whose process memory holds its pair as refused (an earlier run got a 401)
    memory = factory.RejectedPairs()
    requests: list[httpx.Request] = []
    gate = _gate("wrong-secret-0987654321", CountingStore(), memory, requests)
    with pytest.raises(CredentialsStopped):
        gate.check("bill#run-1")
    assert len(requests) == 1

    # When the next run (a fresh run item: no verdicts yet) reaches the same warm worker
    store = CountingStore()
    gate2 = _gate("wrong-secret-0987654321", store, memory, requests)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            gate2.check("collect#run-2")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)

    # Then the check decides at once (the run does not use the refused pair), nothing more is sent
    assert outcome and isinstance(outcome[0], CredentialsStopped), outcome
    assert len(requests) == 1


def test_a_pair_refused_by_another_request_meanwhile_is_not_sent_again_after_a_wait() -> None:
    from cswhmcs.adapters.computestacks import UserSelector
    from cswhmcs.errors import UpstreamAuthFailed
    from tests.support.cs_http import KEY as CS_KEY
    from tests.support.cs_http import SECRET, FakeSource, Harness, errors, script

    # Given a request told to wait by a 429, and another thread that learns during that wait that the
    # pair is refused (ComputeStacks' secret was changed: each try counts towards the lockout)
    source = FakeSource(offer=None)
    h = Harness(script(httpx.Response(429, headers={"Retry-After": "1"}), errors(401, "Not Authorized")),
                credentials=source)
    h.client._retrier._sleep = lambda seconds: source.refused.add((CS_KEY, SECRET))
    # When the wait is over / Then the refused pair is not sent again
    with pytest.raises(UpstreamAuthFailed):
        h.client.get_user(UserSelector.by_id(42))
    assert len(h.requests) == 1
