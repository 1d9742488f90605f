"""The lookup chain of an unmapped (imported) account inside the request's deadline (issue 8): when the
budget is gone no further lookup is started, and the answer is a 504, never a wrong "not found"."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cswhmcs import deadline
from cswhmcs.accounts.lookup import resolve
from cswhmcs.api import Request
from cswhmcs.errors import NotFound, UpstreamTimeout
from cswhmcs.models import ServiceParams, parse
from tests.support.clocks import FakeClock


class SlowComputeStacks:
    """Each lookup misses after ``seconds``."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.lookups: list[str] = []

    def get_user(self, sel: Any) -> None:
        self.lookups.append(sel.kind)
        self.clock.now += self.seconds
        return None


class NoMappings:
    def get(self, service_id: int) -> None:
        return None


def request(cs: SlowComputeStacks) -> tuple[Request, ServiceParams]:
    payload = {"serviceid": 77, "username": "imported@example.org"}
    deps: Any = SimpleNamespace(cs=cs, accounts=NoMappings())
    return Request(route="/v1/accounts/overview", payload=payload, settings=None, deps=deps), \
        parse(ServiceParams, payload)


def test_the_chain_stops_when_the_budget_is_gone() -> None:
    # Given ComputeStacks taking 9 s per lookup and 15 s left
    clock = FakeClock()
    cs = SlowComputeStacks(clock, 9)
    req, params = request(cs)
    # When the account is resolved
    with deadline.use(deadline.Deadline.after(15, clock=clock)), pytest.raises(UpstreamTimeout) as caught:
        resolve(req, params)
    # Then the label lookup was never started, and the answer is a 504, not "not found"
    assert cs.lookups == ["email", "external_id"]
    assert caught.value.status == 504 and not isinstance(caught.value, NotFound)


def test_with_time_the_whole_chain_runs_and_a_miss_is_not_found() -> None:
    clock = FakeClock()
    cs = SlowComputeStacks(clock, 1)
    req, params = request(cs)
    with deadline.use(deadline.Deadline.after(15, clock=clock)), pytest.raises(NotFound):
        resolve(req, params)
    assert cs.lookups == ["email", "external_id", "label:whmcs_service_id"]
