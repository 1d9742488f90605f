"""The daily collection keeps the WHMCS service username on the ComputeStacks email when the users webhook
cannot (ComputeStacks 9.3.1 posts it without a body, or a delivery was lost): through the billing worker's
handler, the sandboxes and DynamoDB Local (issue 12 section 2, docs/users-webhook.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cswhmcs.api import reset_deps
from tests.conftest import ROOT, LiveStack
from tests.support.live import client_details, params
from tests.support.logs import LogCollector, emitted

__all__ = ["emitted"]  # the fixture (tests/support/logs.py), used by name

pytestmark = pytest.mark.integration

TOKEN = "reconcile-hook-token-41c9"  # noqa: S105 - a test-only token


class Account:
    def __init__(self, stack: LiveStack) -> None:
        self.stack = stack
        client = stack.whmcs.add_client("Ann", "Lee", "ann.billing@example.org")
        product = stack.whmcs.add_product("Cloud Account")
        service = stack.whmcs.add_service(client["id"], product["id"], username="ann.lee@example.org")
        resp = stack.call("/v1/accounts/create", {
            **params(service["id"], userid=client["id"], username="ann.lee@example.org",
                     clientsdetails=client_details(client_id=client["id"], userid=client["id"])),
            "password": "Xy7pQ2mN4kLm"})
        assert resp.status_code == 200, resp.text
        self.service_id, self.cs_user_id = int(service["id"]), int(resp.json()["cs_user_id"])
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for hours in (9, 6, 3):
            stack.cs.add_usage(self.cs_user_id, product_name="containerm", subscription_product_id=5,
                               total="0.10", qty="1", period_start=now - timedelta(hours=hours + 3),
                               period_end=now - timedelta(hours=hours))

    def mapping(self) -> dict[str, Any]:
        item: dict[str, Any] = self.stack.tables.resource().Table(self.stack.tables.accounts).get_item(
            Key={"service_id": self.service_id})["Item"]
        return item

    def username(self) -> str:
        return str(self.stack.whmcs.service(self.service_id)["username"])

    def work(self, kind: str = "collect") -> dict[str, Any]:
        """One SQS record for this account, built from its mapping as the planner builds it, through the
        worker's Lambda handler."""
        from cswhmcs.billing.handlers import worker_handler
        from cswhmcs.billing.messages import Account as MessageAccount
        from cswhmcs.billing.messages import RunContext, WorkMessage

        # A run per call, as each day's collection is (two calls within one second would be one run)
        as_of = datetime.now(UTC).replace(microsecond=0)
        as_of = self.last_as_of = max(as_of, getattr(self, "last_as_of", as_of - timedelta(seconds=1))
                                      + timedelta(seconds=1))
        run = RunContext(f"{kind}#{as_of.isoformat()}", kind, as_of, currencies=[{"id": 1, "code": "USD",
                                                                                 "rate": "1.00000"}])
        body = WorkMessage(run, MessageAccount.from_mapping(self.mapping())).to_json()
        record = json.loads((ROOT / "events/billing_worker.json").read_text())["Records"][0]
        answer: dict[str, Any] = worker_handler({"Records": [dict(record, messageId="m1", body=body)]}, None)
        return answer


@pytest.fixture
def stack(live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    from cswhmcs.billing.handlers import _worker_deps

    monkeypatch.setenv("CS_WEBHOOK_TOKEN", TOKEN)
    reset_deps()
    _worker_deps.cache_clear()
    yield live_stack
    _worker_deps.cache_clear()


def whmcs_actions(stack: LiveStack) -> list[str]:
    return [a for a in stack.whmcs.actions_called() if a in ("GetClientsProducts", "UpdateClientProduct")]


def test_an_email_change_the_webhook_could_not_carry_reaches_whmcs_with_the_next_collection(stack: LiveStack
                                                                                             ) -> None:
    # Given a linked account with usage, read once by a daily collection (nothing to change then)
    acct = Account(stack)
    stack.whmcs.reset_requests()
    assert acct.work() == {"batchItemFailures": []}
    assert whmcs_actions(stack) == []
    # And ComputeStacks 9.3.1's webhook, which posts no body
    stack.cs.webhook_users_url = f"{stack.url}/v1/hooks/cs-user?token={TOKEN}"
    stack.cs.webhook_users_retry_delays = ()
    stack.cs.webhook_users_body = "empty"
    # When the customer changes their email in ComputeStacks
    stack.cs.update_user_in_ui(acct.cs_user_id, email="ann.moved@example.org")
    assert stack.cs.wait_for_webhooks(5)
    assert [d["status"] for d in stack.cs.webhook_deliveries] == [400]
    assert acct.username() == "ann.lee@example.org"
    # And the next daily collection reads the account's usage
    stack.cs.reset_requests()
    assert acct.work() == {"batchItemFailures": []}
    # Then the WHMCS username and the mapping follow ComputeStacks
    assert acct.username() == "ann.moved@example.org"
    assert acct.mapping()["email"] == "ann.moved@example.org"
    assert whmcs_actions(stack) == ["GetClientsProducts", "UpdateClientProduct"]
    # at no extra ComputeStacks request: the email came with the usage listing (the user was not read)
    paths = [r["path"].split("?")[0] for r in stack.cs.requests if r["path"].startswith("/api/admin/users")]
    assert paths == [f"/api/admin/users/{acct.cs_user_id}/billing_usages"]
    # And the collection after that changes nothing and asks WHMCS nothing
    stack.whmcs.reset_requests()
    assert acct.work() == {"batchItemFailures": []}
    assert whmcs_actions(stack) == []


def test_month_end_runs_never_spend_requests_on_it_and_a_whmcs_failure_never_fails_billing(
        stack: LiveStack, emitted: LogCollector) -> None:
    # Given a linked account whose email changed in ComputeStacks without any delivery
    acct = Account(stack)
    acct.work()
    stack.cs.set_user_fields(acct.cs_user_id, email="ann.quiet@example.org")
    stack.whmcs.reset_requests()
    # When the close run (the reads before the month-end cut-off) reads the account
    assert acct.work("close") == {"batchItemFailures": []}
    # Then the username is left for a daily collection: month-end reads cost WHMCS nothing for it
    assert whmcs_actions(stack) == [] and acct.username() == "ann.lee@example.org"
    # When a daily collection finds WHMCS failing the update
    stack.whmcs.fail_next(1, status=500, actions=["UpdateClientProduct"])
    answer = acct.work()
    # Then the account's work still succeeds, the failure is logged, and the mapping keeps the old email
    assert answer == {"batchItemFailures": []}
    assert acct.username() == "ann.lee@example.org" and acct.mapping()["email"] == "ann.lee@example.org"
    assert any("reconciling the service username failed" in line for line in emitted.lines)
    # And the next collection applies it
    assert acct.work() == {"batchItemFailures": []}
    assert acct.username() == "ann.quiet@example.org" and acct.mapping()["email"] == "ann.quiet@example.org"


def test_a_user_not_shown_as_this_services_own_is_never_applied(stack: LiveStack) -> None:
    # Given a linked account whose ComputeStacks user now carries another service's link
    acct = Account(stack)
    acct.work()
    stack.cs.set_user_fields(acct.cs_user_id, email="ann.elsewhere@example.org", external_id="999",
                             labels={"whmcs": {"service_id": 999}})
    stack.whmcs.reset_requests()
    # When a daily collection reads it
    assert acct.work() == {"batchItemFailures": []}
    # Then nothing is changed in WHMCS or the mapping
    assert whmcs_actions(stack) == []
    assert acct.username() == "ann.lee@example.org" and acct.mapping()["email"] == "ann.lee@example.org"
