"""Waits outside the upstream clients stay inside the request's deadline (issue 8, API.md section 2):
the wait for a concurrent OrderPaid delivery, and the billing worker's wait for another worker's
credential probe. On a fake clock: nothing here really waits."""

from __future__ import annotations

import types
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs import credit, deadline
from cswhmcs.adapters.dynamo import OrderCredit
from cswhmcs.api import Request
from cswhmcs.config import Settings
from cswhmcs.errors import Conflict
from tests.support.clocks import FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(5000.0)
    monkeypatch.setattr(credit, "time", types.SimpleNamespace(monotonic=fake, sleep=fake.sleep, time=lambda: 0.0))
    return fake


# ---------------------------------------------------------------------- OrderPaid: another delivery holds it


class Records:
    """Order credit records where another delivery holds the claim of order 5 (``pending``, leased)."""

    def __init__(self) -> None:
        self.record = OrderCredit(order_id=5, status="pending", amount=Decimal("25.00"), currency="USD",
                                  client_id=7, invoice_id=9, lease_until=2**40)
        self.reads = 0
        self.writes: list[str] = []

    def get(self, order_id: int) -> OrderCredit:
        self.reads += 1
        return self.record

    def claim(self, intent: OrderCredit, body: dict[str, Any], **_: Any) -> bool:
        return False  # the other delivery's lease

    def __getattr__(self, name: str) -> Any:  # remember_open, settle, mark: recorded, never expected
        return lambda *a, **kw: self.writes.append(name)


class Whmcs:
    def get_invoice(self, invoice_id: int) -> dict[str, Any]:
        return {"userid": 7, "status": "Paid",
                "items": {"item": [{"type": "Hosting", "relid": 11, "amount": "25.00"}]}}

    def get_client(self, client_id: int) -> dict[str, Any]:
        return {"currency_code": "USD"}

    def get_clients_products(self, serviceid: int) -> list[dict[str, Any]]:
        return [{"clientid": 7, "orderid": 5, "pid": 1}]


def deliver(records: Records) -> dict[str, Any]:
    deps = types.SimpleNamespace(order_credits=records, whmcs=Whmcs())
    body = {"orderId": 5, "invoiceId": 9, "userId": 7, "lines": [{"serviceid": 11, "apply_credit": True}]}
    req = Request(route="/v1/hooks/order-paid", payload=body, settings=Settings(), deps=deps)
    return credit.order_paid(req)


def test_the_wait_for_another_delivery_ends_with_the_request_deadline(clock: FakeClock) -> None:
    # Given another delivery applying the credit, and a request with 1.5 s of its budget left
    records = Records()
    with deadline.use(deadline.Deadline.after(1.5, clock=clock)), pytest.raises(Conflict) as caught:
        # When the duplicate arrives
        deliver(records)
    # Then it answers 409 "another delivery is applying it" within its budget, not after 8 s
    assert caught.value.status == 409 and caught.value.code == "order_credit_in_progress"
    assert "another delivery" in caught.value.message
    assert sum(clock.sleeps) <= 1.5 + 1e-6 and records.writes == []


def test_a_request_out_of_time_does_not_wait_at_all(clock: FakeClock) -> None:
    records = Records()
    with deadline.use(deadline.Deadline.after(-1, clock=clock)), pytest.raises(Conflict):
        deliver(records)
    assert clock.sleeps == [] and records.reads == 2  # the first look, and one more instead of a wait


def test_the_other_deliverys_outcome_is_still_answered_when_it_comes_in_time(clock: FakeClock) -> None:
    # Given the other delivery finishing 0.5 s later, with 3 s left
    records = Records()
    done = OrderCredit(order_id=5, status="done", amount=Decimal("25.00"), currency="USD", client_id=7, invoice_id=9)
    clock.on_sleep.append(lambda: setattr(records, "record", done) if sum(clock.sleeps) >= 0.5 else None)
    with deadline.use(deadline.Deadline.after(3, clock=clock)):
        answer = deliver(records)
    # Then the duplicate answers the same credit
    assert answer == {"credited": "25.00", "currency": "USD"}
    assert 0.5 <= sum(clock.sleeps) < 1.0


def test_without_a_deadline_the_wait_is_still_at_most_8_seconds(clock: FakeClock) -> None:
    with pytest.raises(Conflict):
        deliver(Records())
    assert sum(clock.sleeps) == pytest.approx(credit.WAIT_FOR_OTHER_DELIVERY_S)


# ---------------------------------------------------------------------- billing: another worker's probe


class Base:
    """A ComputeStacks credential source with one pair."""

    url = "https://cs.example"

    def current(self) -> tuple[str, str]:
        return ("key", "pair-secret-1")

    def rejected(self, used: tuple[str, str]) -> None:
        return None

    def usable(self, pair: tuple[str, str]) -> bool:
        return True

    def mark_rejected(self, pair: tuple[str, str]) -> None:
        pass


def test_waiting_for_another_workers_probe_never_passes_the_accounts_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given another worker holding the run's credential probe, and an account with 0.2 s left
    from cswhmcs.billing import credentials
    from cswhmcs.billing.credentials import CredentialCheckPending, MemoryCredentialStore, RunCredentialGate

    fake = FakeClock(5000.0)
    monkeypatch.setattr(credentials, "time", types.SimpleNamespace(monotonic=fake))
    store = MemoryCredentialStore(clock=fake)
    from cswhmcs.factory import fingerprint

    assert store.claim_cs_probe("bill#r", fingerprint(Base.url, Base().current()), "other-worker",
                                lease=timedelta(minutes=1), max_failures=2)
    gate = RunCredentialGate(Base(), store, wait=20.0, sleep=fake.sleep)
    # When the account checks the credentials
    with deadline.use(deadline.Deadline.after(0.2, clock=fake)), pytest.raises(CredentialCheckPending):
        gate.check("bill#r")
    # Then it gave the account back within its wait budget (half of what is left), no later
    assert 0 < sum(fake.sleeps) <= 0.1 + 1e-9
