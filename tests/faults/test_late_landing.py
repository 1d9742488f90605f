"""Seed 49's interleaving (a `make test` run on a loaded machine), made exact: an attempt of a terminate that
ComputeStacks reads only after the client gave up on it is carried out after the later unsuspend, so the user
ends suspended although every request after the terminate succeeded.

The backend sends nothing once a request has answered: the write is one ComputeStacks carried out late (HTTP
offers no way to call a sent request back, and ComputeStacks' PATCH has no precondition). The check names it
instead of blaming the backend, and still blames a write sent after its request had answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.faults.injection import Faults
from tests.faults.schedule import TIMEOUT, Schedule, Svc
from tests.faults.world import SENT_HEADER, FaultDeps, World

pytestmark = pytest.mark.integration


@pytest.fixture
def schedule(fault_world: World) -> Iterator[Schedule]:
    s = Schedule(fault_world, 49)
    fault_world.next_schedule()
    s.faults = Faults(fault_world.cs, fault_world.whmcs, s.rng, timeout=TIMEOUT)
    tables = fault_world.new_tables()
    s.settings = fault_world.settings(*tables)
    s.deps = FaultDeps(s.settings, s.counter, resource=fault_world.resource, clients=fault_world.clients(3)[2])
    fault_world.deps = s.deps
    try:
        yield s
    finally:
        fault_world.deps = None
        fault_world.drop_tables(tables)


def hold_first(cs: Any, marker: bytes, seconds: float) -> dict[str, Any]:
    """The first request whose body holds ``marker`` is read by the sandbox ``seconds`` late (its client gives
    up meanwhile); every other request, on any connection, is served at once."""
    state: dict[str, Any] = {"held": False, "landed": None}
    serve = cs._serve

    def late_serve(req: Any) -> Any:
        if not state["held"] and req.method == "PATCH" and marker in req.body:
            state["held"] = True
            time.sleep(seconds)
            out = serve(req)
            state["landed"] = out[2]
            return out
        return serve(req)

    cs._serve = late_serve
    return state


def created(s: Schedule) -> Svc:
    w = s.w
    client = w.whmcs.add_client("Ann", "Lee", f"late.{time.time_ns()}@example.org", currency_code="USD")
    cid = int(client["id"])
    s.clients[cid] = "USD"
    sid = int(w.whmcs.add_service(cid, w.product_id)["id"])
    svc = Svc(sid, cid, "USD", "", "Pw-12345678-Xq49", None)
    status, answer = s.send("/v1/accounts/create", s.params(svc, status="Pending", password=svc.password))
    assert status == 200, answer
    svc.created, svc.cs_user_id = True, int(answer["cs_user_id"])
    s.services.append(svc)
    return svc


def suspend_stamped(cs: Any, svc: Svc, sent: float) -> None:
    """A suspension of the service's user, stamped as sent at ``sent`` (like the backend's attempts)."""
    httpx.patch(f"{cs.url}/api/admin/users/{svc.cs_user_id}", json={"user": {"active": False}},
                auth=(cs.api_key, cs.api_secret),
                headers={"Accept": "application/json; api_version=80", SENT_HEADER: repr(sent)}).raise_for_status()


def test_a_terminate_attempt_carried_out_after_the_unsuspend_is_named_not_blamed(schedule: Schedule) -> None:
    s, cs = schedule, schedule.w.cs
    svc = created(s)
    # Given a terminate whose first PATCH ComputeStacks reads only after the client's read timeout (the
    # retry, on another connection, answers: 200)
    state = hold_first(cs, b'"active":false', TIMEOUT * 2.5)
    try:
        status, _ = s.send("/v1/accounts/terminate", s.params(svc))
        assert status == 200
        # When the unsuspend succeeds before ComputeStacks carries the held attempt out
        status, _ = s.send("/v1/accounts/unsuspend", s.params(svc))
        assert status == 200 and state["landed"] is None
        svc.active = True
        deadline = time.monotonic() + 5
        while state["landed"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        del cs._serve
    assert cs.users[svc.cs_user_id]["active"] is False  # the customer is suspended: the late attempt won
    # Then the check names the late landing instead of blaming the backend (before the fix: "VIOLATION
    # service N: user #M active=False, expected True after the last request")
    s.check_mappings()
    assert s.out.violations == [], s.out.violations
    assert any("was carried out at" in t for t in s.out.trace), s.out.trace


@pytest.mark.parametrize("stamp", ["after_the_answer", "while_running_not_waited_for"])
def test_a_write_the_backend_did_not_wait_out_is_still_a_violation(schedule: Schedule, stamp: str) -> None:
    s, cs = schedule, schedule.w.cs
    svc = created(s)
    status, _ = s.send("/v1/accounts/unsuspend", s.params(svc))
    assert status == 200
    # Given a suspension stamped like the backend's attempts: sent after every request had answered, or sent
    # while the unsuspend ran and carried out sooner than a read timeout after that (a request that answered
    # without waiting for its own write)
    _, answered = s.windows[svc.sid][-1]
    suspend_stamped(cs, svc, time.time() if stamp == "after_the_answer" else answered - 0.01)
    s.check_mappings()
    assert any("expected True after the last request" in v for v in s.out.violations), s.out.violations
