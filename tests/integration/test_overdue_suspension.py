"""Unpaid usage suspends, payment lifts (API.md section 9, issue 12 section 3; docs/billing.md section 10).

End to end: a month billed through the real in-process run against the sandboxes and DynamoDB Local, the WHMCS
sandbox's billing cron invoicing the billable items (lines of type Item, relid = billable id), the daily
collection reaching the billing planner's Lambda handler, and the sandbox's ModuleSuspend/ModuleUnsuspend running
the module's action, i.e. calling our signed suspend/unsuspend routes through `cswhmcs serve`, which suspend the
ComputeStacks user. Paying an invoice runs the InvoicePaid hook stand-in, which POSTs the signed
`/v1/hooks/invoice-paid` as hooks.php does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cswhmcs.contract import Unsuspended
from tests.conftest import SIGNING_SECRET, LiveStack
from tests.support.billing_stack import OCT_END, Acct, BillingStack

pytestmark = pytest.mark.integration

DAYS = 7
NOV_END = datetime(2026, 11, 30, 23, tzinfo=UTC)


class NoSqs:
    """The planner's work queue (the collection's per-account messages are not under test here)."""

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}


class World:
    def __init__(self, live: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.live, self.monkeypatch = live, monkeypatch
        self.whmcs, self.cs = live.whmcs, live.cs
        self.billing = BillingStack(live.tables, live.cs, live.whmcs)
        self.whmcs.set_server(live.api_host, SIGNING_SECRET, secure=False)
        self.product = self.whmcs.add_product("Cloud Account", module="computestacks")
        self.collections = 0
        self.configure(DAYS)

    def configure(self, days: int | None) -> None:
        from cswhmcs.api import reset_deps

        self.monkeypatch.setenv("WORK_QUEUE_URL", "https://sqs.example/work")
        if days is None:
            self.monkeypatch.delenv("OVERDUE_SUSPEND_DAYS", raising=False)
        else:
            self.monkeypatch.setenv("OVERDUE_SUSPEND_DAYS", str(days))
        reset_deps()

    def account(self, client: dict[str, Any] | None = None, **service: Any) -> Acct:
        """A WHMCS client and service of the module, its ComputeStacks user and the mapping between them."""
        n = len(self.billing.accounts) + 1
        client = client or self.whmcs.add_client("Ann", f"Lee{n}", f"ann{n}@example.org")
        email = f"user{n}@example.com"
        svc = self.whmcs.add_service(client["id"], self.product["id"], username=email, **service)
        user = self.cs.add_user(email, "Ann", f"Lee{n}", external_id=str(svc["id"]))
        acct = Acct(int(svc["id"]), int(user["id"]), int(client["id"]), email, "USD", "USD")
        self.live.tables.resource().Table(self.live.tables.accounts).put_item(Item={
            "service_id": acct.service_id, "cs_user_id": acct.cs_user_id, "email": email,
            "client_id": acct.client_id, "currency": "USD"})
        self.billing.accounts.append(acct)
        return acct

    def bill(self, as_of: datetime, *accts: Acct) -> list[int]:
        """Usage for the month up to ``as_of``, billed; then WHMCS's cron invoices the items (one invoice per
        client and due date)."""
        start = as_of.replace(day=1, hour=0)
        for acct in accts:
            self.billing.add_usage(acct, "containerm", start=start, end=as_of, total="0.25",
                                   every=timedelta(hours=24))
        assert self.billing.run(as_of).exit_code == 0
        due = (as_of + timedelta(days=2)).date().replace(day=1)  # BILLING_DUE_DAY 1 of the next month
        return self.whmcs.run_billing_cron(today=due)

    def collect(self) -> dict[str, Any]:
        """The Scheduler's daily input reaching the billing planner (a new run each time)."""
        from cswhmcs.billing.handlers import planner_handler

        self.collections += 1
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=self.collections)
        event = {"mode": "collect", "scheduled_time": at.isoformat().replace("+00:00", "Z"), "execution_id": "x",
                 "timezone": "UTC"}
        answer: dict[str, Any] = planner_handler(event, None, {}, sqs=NoSqs())
        return answer

    def calls(self, function: str) -> list[dict[str, Any]]:
        return [c for c in self.whmcs.module_calls if c["function"] == function]

    def service(self, acct: Acct) -> tuple[str, str]:
        s = self.whmcs.service(acct.service_id)
        return s["status"], s["suspensionreason"]

    def cs_active(self, acct: Acct) -> bool:
        return bool(self.cs.user(acct.cs_user_id)["active"])

    def hook(self, invoice_id: int) -> dict[str, Any]:
        resp = self.live.call("/v1/hooks/invoice-paid", {"invoiceid": invoice_id})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        Unsuspended.model_validate(body)
        return body


@pytest.fixture
def world(live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(live_stack, monkeypatch)


def test_suspended_after_n_days_lifted_once_paid_and_nothing_twice(world: World) -> None:
    # Given October billed and invoiced by WHMCS's cron: one invoice whose Item line is our billable item
    acct = world.account()
    [invoice] = world.bill(OCT_END, acct)
    [line] = world.whmcs.invoice(invoice)["items"]
    assert line["type"] == "Item" and line["relid"] == int(world.whmcs.billable_items[0]["id"])

    # When it is overdue by fewer than N days, the collection suspends nothing
    world.whmcs.make_invoice_overdue(invoice, days=DAYS - 1)
    world.collect()
    assert world.calls("SuspendAccount") == [] and world.service(acct) == ("Active", "")

    # When it is overdue by more than N days
    world.whmcs.make_invoice_overdue(invoice, days=DAYS + 1)
    answer = world.collect()
    # Then ModuleSuspend ran the module's action: our suspend route suspended the ComputeStacks user, and WHMCS
    # shows the service Suspended with the reason
    assert answer["overdue"]["suspended"] == [acct.service_id], answer
    [suspend] = world.calls("SuspendAccount")
    assert suspend["outcome"] == "success" and suspend["sent"]["serviceid"] == acct.service_id
    assert world.service(acct) == ("Suspended", f"Overdue usage invoice #{invoice}")
    assert not world.cs_active(acct)

    # And a repeated collection does nothing twice (the one GetInvoice per overdue invoice, no module call)
    world.whmcs.reset_requests()
    assert world.collect()["overdue"]["suspended"] == []
    assert len(world.calls("SuspendAccount")) == 1
    assert "ModuleSuspend" not in world.whmcs.actions_called()

    # When the client pays: the InvoicePaid hook (as hooks.php) reaches /v1/hooks/invoice-paid
    world.whmcs.invoice_paid_hook = True
    [hook] = world.whmcs.pay_invoice(invoice)
    # Then the suspension this backend made is lifted, in WHMCS and in ComputeStacks
    assert hook["status"] == 200 and hook["answer"] == {"result": "success", "unsuspended": [acct.service_id]}
    assert world.service(acct) == ("Active", "") and world.cs_active(acct)
    # And a repeated hook, or the next collection, lifts nothing twice and suspends nothing again
    assert world.hook(invoice)["unsuspended"] == []
    world.collect()
    assert len(world.calls("UnsuspendAccount")) == 1 and len(world.calls("SuspendAccount")) == 1


def test_lifted_only_when_no_other_usage_invoice_is_overdue_and_by_the_collection_too(world: World) -> None:
    # Given two months billed, both invoices overdue past N days: the service is suspended for the older one
    acct = world.account()
    [october] = world.bill(OCT_END, acct)
    [november] = world.bill(NOV_END, acct)
    world.whmcs.make_invoice_overdue(october, days=40)
    world.whmcs.make_invoice_overdue(november, days=DAYS + 2)
    world.collect()
    assert world.service(acct) == ("Suspended", f"Overdue usage invoice #{october}")
    assert len(world.calls("SuspendAccount")) == 1  # one suspension, whichever invoices are overdue

    # When October is paid while November is still overdue past N days: nothing is lifted
    world.whmcs.invoice_paid_hook = True
    [hook] = world.whmcs.pay_invoice(october)
    assert hook["answer"]["unsuspended"] == [] and world.service(acct)[0] == "Suspended"

    # When November is paid, but its hook never reaches the backend (hooks.php does not retry)
    world.whmcs.invoice_paid_hook = False
    world.whmcs.pay_invoice(november)
    assert world.service(acct)[0] == "Suspended"
    # Then the daily collection lifts it (and only once)
    assert world.collect()["overdue"]["unsuspended"] == [acct.service_id]
    assert world.service(acct) == ("Active", "") and world.cs_active(acct)
    world.collect()
    assert world.hook(november)["unsuspended"] == []
    assert len(world.calls("UnsuspendAccount")) == 1


def test_a_newer_invoice_overdue_fewer_than_n_days_does_not_keep_the_suspension(world: World) -> None:
    acct = world.account()
    [october] = world.bill(OCT_END, acct)
    [november] = world.bill(NOV_END, acct)
    world.whmcs.make_invoice_overdue(october, days=DAYS + 5)
    world.whmcs.make_invoice_overdue(november, days=DAYS - 2)  # overdue, but not past N days
    world.collect()
    assert world.service(acct)[0] == "Suspended"
    assert world.hook(world.whmcs.add_invoice(acct.client_id, [{"amount": "1.00"}], status="Paid")["invoiceid"]) \
        == {"result": "success", "unsuspended": []}  # any paid invoice triggers the check; October is unpaid
    world.whmcs.set_invoice_status(october, "Paid")
    assert world.hook(october)["unsuspended"] == [acct.service_id]


def test_override_auto_suspend_and_other_suspensions_are_left_alone(world: World) -> None:
    # Given one client with three services billed on one invoice: one with Override Auto-Suspend, one an admin
    # suspended for another reason, one Active
    plain = world.account()
    client = world.whmcs.client(plain.client_id)
    override = world.account(client, overideautosuspend=True)
    manual = world.account(client)
    expired = world.account(client, overideautosuspend=True, overidesuspenduntil="2020-01-31")
    world.whmcs.set_service(manual.service_id, status="Suspended", suspensionreason="Abuse report #77")
    [invoice] = world.bill(OCT_END, plain, override, manual, expired)
    assert len(world.whmcs.invoice(invoice)["items"]) == 4
    world.whmcs.make_invoice_overdue(invoice, days=DAYS + 1)

    # When the collection runs
    answer = world.collect()["overdue"]
    # Then only the Active services without an override in force are suspended (an override that ended counts
    # no more); the admin's suspension keeps its reason
    assert sorted(answer["suspended"]) == sorted([plain.service_id, expired.service_id])
    skipped = {s["service"]: s["why"] for s in answer["skipped"]}
    assert skipped == {override.service_id: "override", manual.service_id: "not-active"}
    assert world.service(override) == ("Active", "") and world.cs_active(override)
    assert world.service(manual) == ("Suspended", "Abuse report #77")

    # When an admin re-suspends one of ours for another reason, then the invoice is paid
    world.whmcs.set_service(expired.service_id, suspensionreason="Chargeback")
    world.whmcs.invoice_paid_hook = True
    [hook] = world.whmcs.pay_invoice(invoice)
    # Then only the suspension this backend made, still with its reason, is lifted
    assert hook["answer"]["unsuspended"] == [plain.service_id]
    assert world.service(manual) == ("Suspended", "Abuse report #77")
    assert world.service(expired) == ("Suspended", "Chargeback")
    assert [c["sent"]["serviceid"] for c in world.calls("UnsuspendAccount")] == [plain.service_id]
    world.collect()  # nor by a later collection
    assert world.service(expired) == ("Suspended", "Chargeback") and len(world.calls("UnsuspendAccount")) == 1


def test_a_failed_module_suspend_is_reported_and_retried_by_the_next_collection(world: World) -> None:
    acct = world.account()
    [invoice] = world.bill(OCT_END, acct)
    world.whmcs.make_invoice_overdue(invoice, days=DAYS + 3)
    # Given the module's call to our suspend route failing once (ComputeStacks answering 500 to every attempt)
    world.cs.fail_next(3, status=500)
    first = world.collect()["overdue"]
    # Then WHMCS refused the ModuleSuspend with the module's message; the failure is reported
    assert first["suspended"] == [] and [f["service"] for f in first["failed"]] == [acct.service_id]
    assert "ComputeStacks" in first["failed"][0]["error"]
    assert world.service(acct) == ("Active", "") and world.cs_active(acct)
    # When the next collection runs
    second = world.collect()["overdue"]
    # Then it suspends the service, once
    assert second["suspended"] == [acct.service_id] and second["failed"] == []
    assert world.service(acct) == ("Suspended", f"Overdue usage invoice #{invoice}") and not world.cs_active(acct)
    assert [c["outcome"] == "success" for c in world.calls("SuspendAccount")] == [False, True]


def test_without_overdue_suspend_days_the_collection_asks_whmcs_for_no_invoice(world: World) -> None:
    acct = world.account()
    [invoice] = world.bill(OCT_END, acct)
    world.whmcs.make_invoice_overdue(invoice, days=90)
    for days in (None, 0):
        world.configure(days)
        world.whmcs.reset_requests()
        assert "overdue" not in world.collect()
        assert not {"GetInvoices", "GetInvoice", "ModuleSuspend"} & set(world.whmcs.actions_called())
    assert world.service(acct) == ("Active", "")


def test_the_hook_checks_the_invoice_with_whmcs(world: World) -> None:
    acct = world.account()
    [invoice] = world.bill(OCT_END, acct)
    world.whmcs.make_invoice_overdue(invoice, days=DAYS + 1)
    world.collect()
    # An unpaid invoice lifts nothing, whatever the caller says
    assert world.hook(invoice)["unsuspended"] == [] and world.service(acct)[0] == "Suspended"
    # An invoice WHMCS does not have is the caller's error, naming the field
    resp = world.live.call("/v1/hooks/invoice-paid", {"invoiceid": 999999})
    assert resp.status_code == 422 and resp.json()["code"] == "invalid_field" and "invoiceid" in resp.json()["message"]
    # Unsigned: refused
    assert world.live.call("/v1/hooks/invoice-paid", {"invoiceid": invoice}, sign=False).status_code == 401
    assert world.service(acct)[0] == "Suspended" and world.calls("UnsuspendAccount") == []
