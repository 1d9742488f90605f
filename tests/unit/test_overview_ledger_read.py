"""The overview reads the billing ledger while ComputeStacks answers (one round trip less than one after the
other), and a ledger that fails or does not answer in time leaves only the billing figures out."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from cswhmcs import deadline
from cswhmcs.accounts import overview
from cswhmcs.adapters.dynamo import AccountMapping
from cswhmcs.api import Request
from cswhmcs.billing.ledger import AccountLedger

USER = {"id": 12, "email": "ann@example.org", "active": True, "services": {"deployments": 1, "container_services": 2},
        "run_rate": "1.5", "unprocessed_usage": "0.25", "currency": "EUR", "currency_symbol": "€"}


class Mappings:
    def get(self, service_id: int) -> AccountMapping:
        return AccountMapping(service_id=service_id, cs_user_id=12, email="ann@example.org")


class ComputeStacksWaitingForTheLedger:
    """Answers GET user only once the ledger has been asked (or after 5 s, noting that it had not)."""

    def __init__(self, asked: threading.Event) -> None:
        self.asked = asked
        self.ledger_asked_before_answer: bool | None = None

    def get_user(self, sel: Any, include_balance: bool = False) -> dict[str, Any]:
        self.ledger_asked_before_answer = self.asked.wait(5.0)
        return USER


def request(cs: Any, ledger: Any) -> Request:
    deps: Any = SimpleNamespace(cs=cs, accounts=Mappings(), ledger=ledger)
    settings: Any = SimpleNamespace(LEDGER_TABLE="ledger")
    return Request(route="/v1/accounts/overview", payload={"serviceid": 5, "username": "ann@example.org"},
                   settings=settings, deps=deps)


def waiting_request(ledger_reads: dict[str, Any]) -> Request:
    return request(ComputeStacksWaitingForTheLedger(ledger_reads["asked"]), ledger_reads["ledger"])


@pytest.fixture
def ledger_reads() -> dict[str, Any]:
    """The request's ledger (``deps.ledger``), whose account_ledger sets ``asked``, then does what ``behaviour``
    says."""
    state: dict[str, Any] = {"asked": threading.Event(), "behaviour": "answer", "release": threading.Event()}

    def account_ledger(cs_user_id: int) -> AccountLedger:
        state["asked"].set()
        if state["behaviour"] == "fail":
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://dynamodb")
        if state["behaviour"] == "hang":
            state["release"].wait(10.0)
        return AccountLedger(state=None, lines=[])

    state["ledger"] = SimpleNamespace(account_ledger=account_ledger)
    return state


def test_the_ledger_is_asked_before_computestacks_answers(ledger_reads: dict[str, Any]) -> None:
    # Given ComputeStacks that answers only once the ledger has been asked
    cs = ComputeStacksWaitingForTheLedger(ledger_reads["asked"])
    # When the overview is made
    answer = overview.account_overview(request(cs, ledger_reads["ledger"]))
    # Then the ledger read did not wait for ComputeStacks' answer, and the answer has both parts
    assert cs.ledger_asked_before_answer is True
    assert answer["current_usage_display"] == "€0.25"
    assert answer["billed"] == [] and answer["usage_by_product"] == []


def test_a_ledger_that_cannot_be_read_leaves_the_billing_figures_out(ledger_reads: dict[str, Any]) -> None:
    ledger_reads["behaviour"] = "fail"
    answer = overview.account_overview(waiting_request(ledger_reads))
    assert answer["run_rate"] == "1.50"
    assert "billed" not in answer and "usage_by_product" not in answer


def test_a_ledger_that_does_not_answer_within_the_deadline_is_left_out(ledger_reads: dict[str, Any]) -> None:
    # Given a ledger read that hangs, and 0.2 s left of the request's deadline
    ledger_reads["behaviour"] = "hang"
    try:
        with deadline.use(deadline.Deadline.after(0.2)):
            answer = overview.account_overview(waiting_request(ledger_reads))
    finally:
        ledger_reads["release"].set()
    # Then the answer comes within the deadline with ComputeStacks' figures only
    assert answer["services"] == 2
    assert "billed" not in answer
