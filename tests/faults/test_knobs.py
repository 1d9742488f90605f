"""The sandbox knobs the fault schedules added: a connection dropped without an answer (before or after the
request was carried out), an answer made late, and a 429 with ``Retry-After`` for the next requests only."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sandboxes.computestacks import ComputeStacksSandbox
from sandboxes.whmcs import WhmcsSandbox

pytestmark = pytest.mark.integration


@pytest.fixture
def cs(cs_sandbox: ComputeStacksSandbox) -> ComputeStacksSandbox:
    """A fresh ComputeStacks sandbox (tests/conftest.py), stopped after the test."""
    return cs_sandbox


@pytest.fixture
def whmcs(whmcs_sandbox: WhmcsSandbox) -> WhmcsSandbox:
    """A fresh WHMCS sandbox (tests/conftest.py), stopped after the test."""
    return whmcs_sandbox


def cs_client(sb: ComputeStacksSandbox) -> httpx.Client:
    return httpx.Client(base_url=sb.url, auth=(sb.api_key, sb.api_secret), timeout=2,
                        headers={"Accept": "application/json; api_version=80"})


def create(client: httpx.Client, email: str) -> httpx.Response:
    return client.post("/api/admin/users", json={"user": {"fname": "A", "lname": "B", "email": email,
                                                           "password": "Pw-12345678-Xq", "skip_email_confirm": True}})


@pytest.mark.parametrize("applied", [False, True])
def test_cs_drop_next_closes_the_connection_without_an_answer(cs: ComputeStacksSandbox, applied: bool) -> None:
    with cs_client(cs) as client:
        # Given the next request is dropped
        cs.drop_next(1, applied=applied)
        # When a user is created
        with pytest.raises(httpx.RemoteProtocolError):
            create(client, "dropped@example.org")
        # Then it exists only when the drop came after the work; the next request is answered
        assert (cs.user_by_email("dropped@example.org") is not None) is applied
        assert client.get("/api/admin/user_groups").status_code == 200


def test_cs_slow_next_answers_late_and_throttle_next_answers_429(cs: ComputeStacksSandbox) -> None:
    with cs_client(cs) as client:
        cs.slow_next(1, 0.3)
        started = time.monotonic()
        assert client.get("/api/admin/user_groups").status_code == 200
        assert time.monotonic() - started >= 0.3
        cs.throttle_next(2, retry_after=1)
        answers = [client.get("/api/admin/user_groups") for _ in range(3)]
        assert [a.status_code for a in answers] == [429, 429, 200]
        assert answers[0].headers["Retry-After"] == "1"


def whmcs_call(sb: WhmcsSandbox, client: httpx.Client, action: str, **params: Any) -> httpx.Response:
    return client.post(sb.url, data={"action": action, "identifier": sb.identifier, "secret": sb.secret,
                                     "responsetype": "json", **params})


@pytest.mark.parametrize("applied", [False, True])
def test_whmcs_drop_next_closes_the_connection(whmcs: WhmcsSandbox, applied: bool) -> None:
    client_id = whmcs.add_client("Ann", "Lee", "ann@example.org")["id"]
    with httpx.Client(timeout=2) as http:
        whmcs.drop_next(1, actions=["AddCredit"], applied=applied)
        assert whmcs_call(whmcs, http, "GetClientsDetails", clientid=client_id).status_code == 200  # not matched
        with pytest.raises(httpx.RemoteProtocolError):
            whmcs_call(whmcs, http, "AddCredit", clientid=client_id, amount="5.00", description="x")
        assert len(whmcs.credits) == (1 if applied else 0)
        assert whmcs_call(whmcs, http, "GetCredits", clientid=client_id).json()["result"] == "success"


def test_whmcs_throttle_next_answers_429_with_retry_after(whmcs: WhmcsSandbox) -> None:
    client_id = whmcs.add_client("Ann", "Lee", "ann@example.org")["id"]
    with httpx.Client(timeout=2) as http:
        whmcs.throttle_next(1, retry_after=2, actions=["AddCredit"])
        answer = whmcs_call(whmcs, http, "AddCredit", clientid=client_id, amount="5.00", description="x")
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
        assert whmcs.credits == []
        assert whmcs_call(whmcs, http, "AddCredit", clientid=client_id, amount="5.00",
                          description="x").json()["result"] == "success"
