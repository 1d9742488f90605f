"""The WHMCS sandbox's invoices, billing cron, ModuleSuspend/ModuleUnsuspend and InvoicePaid hook, over HTTP.

The module stand-in must call the backend as our PHP module does (signed as API.md section 1, module ``$params``
as the body): a stub backend checks every request with the backend's own verifier (``cswhmcs.signing.verify``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cswhmcs.errors import Unauthorized
from cswhmcs.signing import verify
from sandboxes.plumbing import BackgroundServer, Handler, Response
from sandboxes.whmcs import WhmcsSandbox
from sandboxes.whmcsdb import WhmcsDatabase

pytestmark = pytest.mark.integration

SIGNING_SECRET = "invoices-test-signing-secret-42"
Reply = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


class _StubHandler(Handler["StubBackend"]):
    def answer(self, body: bytes) -> None:
        stub = self.owner
        route = self.path.split("?", 1)[0]
        headers = dict(self.headers.items())
        try:
            verify(headers, route, body, [stub.secret.encode()])
        except Unauthorized as exc:
            stub.calls.append({"route": route, "json": None, "headers": headers, "signed": False})
            self.send(Response(401, json.dumps({"result": "error", "message": exc.message}).encode(),
                               "application/json"))
            return
        payload = json.loads(body)
        stub.calls.append({"route": route, "json": payload, "headers": headers, "signed": True})
        status, reply = stub.reply(route, payload)
        self.send(Response(status, json.dumps(reply).encode(), "application/json"))

    do_POST = Handler.respond


class StubBackend(BackgroundServer):
    """The backend's routes as the module sees them: signature checked, body recorded, ``reply`` decides."""

    handler = _StubHandler
    thread_name = "stub-backend"

    def __init__(self, secret: str = SIGNING_SECRET) -> None:
        super().__init__("127.0.0.1", 0)
        self.secret = secret
        self.calls: list[dict[str, Any]] = []
        self.reply: Reply = lambda route, payload: (200, {"result": "success"})

    @property
    def hostname(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def backend() -> Iterator[StubBackend]:
    with StubBackend() as stub:
        yield stub


@pytest.fixture
def sandbox(backend: StubBackend) -> Iterator[WhmcsSandbox]:
    with WhmcsSandbox() as sb:
        sb.set_server(backend.hostname, SIGNING_SECRET)
        yield sb


def api(sb: WhmcsSandbox, action: str, **params: Any) -> dict[str, Any]:
    data = {"action": action, "identifier": sb.identifier, "secret": sb.secret, "responsetype": "json",
            **{k: str(v) for k, v in params.items()}}
    response = httpx.post(sb.url, data=data, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def cloud_service(sb: WhmcsSandbox, **service: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    client = sb.add_client("Ann", "Lee", "ann@example.org", currency_code="EUR")
    product = sb.add_product("Cloud Account", module="computestacks", configoption1="3")
    return client, sb.add_service(client["id"], product["pid"], username="ann@example.org", **service)


def add_item(sb: WhmcsSandbox, client_id: int, amount: str, **params: Any) -> int:
    args = {"clientid": client_id, "description": f"Containers 2025-03 [ref x:{amount}]", "amount": amount,
            "unit": "quantity", "quantity": "720", "invoiceaction": "duedate", "duedate": "2025-04-01", **params}
    reply = api(sb, "AddBillableItem", **args)
    assert reply["result"] == "success", reply
    return int(reply["billableid"])


# ---------------------------------------------------------------------- GetInvoices


def test_get_invoices_pages_filters_and_sorts(sandbox: WhmcsSandbox) -> None:
    # Given: three Unpaid (one overdue), one Paid, one Cancelled, and another client's invoice
    client, _ = cloud_service(sandbox)
    other = sandbox.add_client("Jan", "Berg", "jan@example.de")
    today = date.today()
    ids = [sandbox.add_invoice(client["id"], [{"type": "Item", "relid": n, "amount": f"{n}.00"}],
                               duedate=today + timedelta(days=n))["invoiceid"] for n in (1, 2, 3)]
    overdue = sandbox.add_invoice(client["id"], [{"amount": "9.00"}], duedate=today - timedelta(days=10))["invoiceid"]
    paid = sandbox.add_invoice(client["id"], [{"amount": "4.00"}], status="Paid")["invoiceid"]
    sandbox.add_invoice(client["id"], [{"amount": "5.00"}], status="Cancelled")
    sandbox.add_invoice(other["id"], [{"amount": "6.00"}])
    # When
    first = api(sandbox, "GetInvoices", userid=client["id"], status="Unpaid", limitnum=2)
    second = api(sandbox, "GetInvoices", userid=client["id"], status="Unpaid", limitstart=2, limitnum=2)
    late = api(sandbox, "GetInvoices", status="Overdue")
    paid_rows = api(sandbox, "GetInvoices", status="paid")
    by_total = api(sandbox, "GetInvoices", userid=client["id"], status="Unpaid", orderby="total", order="desc")
    none = api(sandbox, "GetInvoices", status="Refunded")
    # Then
    assert (first["totalresults"], first["startnumber"], first["numreturned"]) == (4, 0, 2)
    assert (second["totalresults"], second["startnumber"], second["numreturned"]) == (4, 2, 2)
    assert [r["id"] for r in first["invoices"]["invoice"] + second["invoices"]["invoice"]] == ids + [overdue]
    assert [r["id"] for r in late["invoices"]["invoice"]] == [overdue]
    assert late["invoices"]["invoice"][0]["status"] == "Unpaid"  # WHMCS stores no "Overdue" status
    assert [r["id"] for r in paid_rows["invoices"]["invoice"]] == [paid]
    assert [r["total"] for r in by_total["invoices"]["invoice"]] == ["9.00", "3.00", "2.00", "1.00"]
    row = first["invoices"]["invoice"][0]
    assert row["currencycode"] == "EUR" and row["userid"] == client["id"] and "items" not in row
    assert none["totalresults"] == 0 and none["invoices"] == ""


def test_paging_fields_follow_the_numeric_strings_knob(sandbox: WhmcsSandbox) -> None:
    # Given
    client, _ = cloud_service(sandbox)
    sandbox.add_invoice(client["id"], [{"amount": "1.00"}])
    sandbox.numeric_strings = True
    # When
    reply = api(sandbox, "GetInvoices", status="Unpaid")
    # Then
    assert (reply["totalresults"], reply["startnumber"], reply["numreturned"]) == ("1", "0", "1")


# ---------------------------------------------------------------------- the billing cron


def test_cron_invoices_due_billable_items_once_as_item_lines(sandbox: WhmcsSandbox) -> None:
    # Given: two clients; due, not yet due, next-cron and never-invoiced items
    client, _ = cloud_service(sandbox)
    other = sandbox.add_client("Jan", "Berg", "jan@example.de", currency_code="EUR")
    a = add_item(sandbox, client["id"], "12.30")
    b = add_item(sandbox, client["id"], "4.05")
    c = add_item(sandbox, other["id"], "1.00", invoiceaction="nextcron", duedate="")
    later = add_item(sandbox, client["id"], "7.00", duedate="2025-05-01")
    add_item(sandbox, client["id"], "8.00", invoiceaction="noinvoice", duedate="")
    # When
    created = sandbox.run_billing_cron(date(2025, 4, 1))
    again = sandbox.run_billing_cron(date(2025, 4, 1))
    # Then
    assert len(created) == 2 and again == []
    mine = api(sandbox, "GetInvoice", invoiceid=created[0])
    theirs = api(sandbox, "GetInvoice", invoiceid=created[1])
    assert (mine["userid"], mine["status"], mine["duedate"], mine["date"]) == (client["id"], "Unpaid", "2025-04-01",
                                                                               "2025-04-01")
    assert [(i["type"], i["relid"], i["amount"]) for i in mine["items"]["item"]] == [("Item", a, "12.30"),
                                                                                    ("Item", b, "4.05")]
    assert mine["items"]["item"][0]["description"] == "Containers 2025-03 [ref x:12.30]"
    assert (mine["total"], mine["balance"]) == ("16.35", "16.35")
    assert [(i["type"], i["relid"]) for i in theirs["items"]["item"]] == [("Item", c)]
    counts = {i["id"]: i["invoicecount"] for i in sandbox.billable_items}
    assert counts[a] == counts[b] == counts[c] == 1 and counts[later] == 0
    # the May item is invoiced by the May run (or earlier, with days_before)
    assert len(sandbox.run_billing_cron(date(2025, 4, 20), days_before=11)) == 1


def test_cron_marks_items_invoiced_in_the_database(tmp_path: Path) -> None:
    # Given: a DB-backed sandbox, items in tblbillableitems
    with WhmcsDatabase.sqlite(tmp_path / "whmcs.db") as db, WhmcsSandbox(db=db) as sb:
        client = sb.add_client("Ann", "Lee", "ann@example.org")
        item = add_item(sb, client["id"], "3.30", invoiceaction="nextcron", duedate="")
        # When
        created = sb.run_billing_cron()
        # Then
        assert [r["invoicecount"] for r in db.billable_items()] == [1]
        line = api(sb, "GetInvoice", invoiceid=created[0])["items"]["item"][0]
        assert (line["type"], line["relid"], line["amount"]) == ("Item", item, "3.30")
        assert sb.run_billing_cron() == []


def test_overdue_and_paid_helpers(sandbox: WhmcsSandbox) -> None:
    # Given
    client, _ = cloud_service(sandbox)
    invoice = sandbox.add_invoice(client["id"], [{"type": "Item", "relid": 1, "amount": "2.00"}])["invoiceid"]
    # When
    sandbox.make_invoice_overdue(invoice, days=15)
    late = api(sandbox, "GetInvoices", status="Overdue")
    hook_calls = sandbox.pay_invoice(invoice)
    # Then
    assert late["invoices"]["invoice"][0]["duedate"] == (date.today() - timedelta(days=15)).isoformat()
    paid = api(sandbox, "GetInvoice", invoiceid=invoice)
    assert (paid["status"], paid["balance"], paid["datepaid"][:10]) == ("Paid", "0.00", date.today().isoformat())
    assert hook_calls == []  # the invoice_paid_hook knob is off
    assert api(sandbox, "GetInvoices", status="Overdue")["totalresults"] == 0
    with pytest.raises(ValueError, match="only an Unpaid invoice"):
        sandbox.make_invoice_overdue(invoice)


# ---------------------------------------------------------------------- ModuleSuspend / ModuleUnsuspend


def test_module_suspend_calls_the_signed_suspend_route_then_suspends(sandbox: WhmcsSandbox,
                                                                     backend: StubBackend) -> None:
    # Given
    client, service = cloud_service(sandbox, password="Xy7pQ2mN4k")
    # When
    reply = api(sandbox, "ModuleSuspend", serviceid=service["id"], suspendreason="Overdue usage invoice #7")
    # Then
    assert reply == {"result": "success"}
    [call] = backend.calls
    assert call["route"] == "/v1/accounts/suspend" and call["signed"]
    assert call["headers"]["Content-Type"] == "application/json; charset=utf-8"
    body = call["json"]
    assert (body["serviceid"], body["userid"], body["pid"], body["moduletype"]) == (
        service["id"], client["id"], service["pid"], "computestacks")
    assert (body["username"], body["status"], body["configoption1"]) == ("ann@example.org", "Active", "3")
    assert body["clientsdetails"]["email"] == "ann@example.org" and body["clientsdetails"]["currency_code"] == "EUR"
    assert body["serverhostname"] == backend.hostname and body["serversecure"] is False
    for never in ("password", "serverusername", "serverpassword", "serveraccesshash", "model"):
        assert never not in body
    assert SIGNING_SECRET not in json.dumps(body) and "Xy7pQ2mN4k" not in json.dumps(body)
    [row] = api(sandbox, "GetClientsProducts", serviceid=service["id"])["products"]["product"]
    assert (row["status"], row["suspensionreason"]) == ("Suspended", "Overdue usage invoice #7")


def test_module_unsuspend_calls_the_unsuspend_route_and_clears_the_reason(sandbox: WhmcsSandbox,
                                                                          backend: StubBackend) -> None:
    # Given
    _, service = cloud_service(sandbox)
    api(sandbox, "ModuleSuspend", serviceid=service["id"], suspendreason="Overdue usage invoice #7")
    # When
    reply = api(sandbox, "moduleunsuspend", serviceid=service["id"])
    # Then
    assert reply == {"result": "success"}
    assert [c["route"] for c in backend.calls] == ["/v1/accounts/suspend", "/v1/accounts/unsuspend"]
    assert backend.calls[1]["json"]["status"] == "Suspended"  # the module sees the status before the action
    assert (sandbox.service(service["id"])["status"], sandbox.service(service["id"])["suspensionreason"]) == (
        "Active", "")
    assert [r["action"] for r in sandbox.requests] == ["ModuleSuspend", "ModuleUnsuspend"]


def test_a_module_error_is_the_answer_and_nothing_changes(sandbox: WhmcsSandbox, backend: StubBackend) -> None:
    # Given: the backend refuses (e.g. ComputeStacks is down)
    _, service = cloud_service(sandbox)
    backend.reply = lambda route, payload: (502, {"result": "error", "code": "upstream_error",
                                                  "message": "ComputeStacks answered HTTP 500."})
    # When
    reply = api(sandbox, "ModuleSuspend", serviceid=service["id"], suspendreason="Overdue usage invoice #7")
    # Then
    assert reply == {"result": "error", "message": "ComputeStacks answered HTTP 500."}
    assert (sandbox.service(service["id"])["status"], sandbox.service(service["id"])["suspensionreason"]) == (
        "Active", "")
    assert sandbox.module_calls[-1]["status"] == 502


def test_a_wrong_access_hash_is_the_modules_signature_sentence(sandbox: WhmcsSandbox, backend: StubBackend) -> None:
    # Given
    _, service = cloud_service(sandbox)
    sandbox.set_server(backend.hostname, "not-the-backend-secret")
    # When
    reply = api(sandbox, "ModuleSuspend", serviceid=service["id"])
    # Then
    assert reply["result"] == "error"
    assert reply["message"].startswith("The backend refused the request signature: check the server's Access Hash")
    assert backend.calls[0]["signed"] is False and sandbox.service(service["id"])["status"] == "Active"


def test_module_action_errors_are_whmcs_own(sandbox: WhmcsSandbox, backend: StubBackend) -> None:
    # Given
    client, service = cloud_service(sandbox)
    hosting = sandbox.add_product("Shared Hosting", module="cpanel")
    plain = sandbox.add_product("Support Plan", module="")
    cpanel = sandbox.add_service(client["id"], hosting["pid"])
    manual = sandbox.add_service(client["id"], plain["pid"])
    # When / Then
    assert api(sandbox, "ModuleSuspend")["message"] == "Service ID is required"
    assert api(sandbox, "ModuleSuspend", serviceid=999)["message"] == "Service ID not found"
    assert api(sandbox, "ModuleUnsuspend", serviceid=manual["id"])["message"] == "Service not assigned to a module"
    assert api(sandbox, "ModuleSuspend", serviceid=cpanel["id"]) == {"result": "success"}  # no stand-in: no call
    assert backend.calls == [] and sandbox.service(cpanel["id"])["status"] == "Suspended"
    backend.stop()  # the backend is gone
    down = api(sandbox, "ModuleSuspend", serviceid=service["id"])
    assert down["result"] == "error" and "could not be reached" in down["message"]


def test_the_backend_may_call_whmcs_back_during_the_module_call(sandbox: WhmcsSandbox,
                                                                backend: StubBackend) -> None:
    # Given: the backend reads the service from WHMCS while it handles the suspend (no deadlock)
    _, service = cloud_service(sandbox)
    seen: list[str] = []

    def reply(route: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        row = api(sandbox, "GetClientsProducts", serviceid=payload["serviceid"])["products"]["product"][0]
        seen.append(row["status"])
        return 200, {"result": "success"}

    backend.reply = reply
    # When
    done = threading.Event()
    result: dict[str, Any] = {}

    def suspend() -> None:
        result.update(api(sandbox, "ModuleSuspend", serviceid=service["id"]))
        done.set()

    threading.Thread(target=suspend, daemon=True).start()
    # Then
    assert done.wait(5), "ModuleSuspend deadlocked with the backend's call back"
    assert result == {"result": "success"} and seen == ["Active"]


# ---------------------------------------------------------------------- the InvoicePaid hook stand-in


def test_paying_runs_the_invoice_paid_hook_for_a_suspended_service(sandbox: WhmcsSandbox,
                                                                   backend: StubBackend) -> None:
    # Given: a usage invoice, its service suspended for it, and the hook knob on
    client, service = cloud_service(sandbox)
    item = add_item(sandbox, client["id"], "12.30", invoiceaction="nextcron", duedate="")
    [invoice] = sandbox.run_billing_cron()
    api(sandbox, "ModuleSuspend", serviceid=service["id"], suspendreason=f"Overdue usage invoice #{invoice}")
    sandbox.invoice_paid_hook = True
    backend.reply = lambda route, payload: (200, {"result": "success", "unsuspended": [service["id"]]})
    # When
    calls = sandbox.pay_invoice(invoice)
    # Then
    hook = backend.calls[-1]
    assert hook["route"] == "/v1/hooks/invoice-paid" and hook["signed"]
    assert hook["json"]["invoiceid"] == invoice and set(hook["json"]) == {"invoiceid", "csw_nonce"}
    assert [(c["function"], c["outcome"], c["answer"]["unsuspended"]) for c in calls] == [
        ("InvoicePaid", "success", [service["id"]])]
    assert api(sandbox, "GetInvoice", invoiceid=invoice)["items"]["item"][0]["relid"] == item
    assert sandbox.pay_invoice(invoice) == []  # already paid: no second hook


def test_no_hook_call_when_the_client_has_no_suspended_computestacks_service(sandbox: WhmcsSandbox,
                                                                             backend: StubBackend) -> None:
    # Given
    client, _ = cloud_service(sandbox)
    invoice = sandbox.add_invoice(client["id"], [{"type": "Item", "relid": 1, "amount": "1.00"}])["invoiceid"]
    sandbox.invoice_paid_hook = True
    # When
    calls = sandbox.pay_invoice(invoice)
    # Then
    assert calls == [] and backend.calls == []


# ---------------------------------------------------------------------- the username sync and the override


def test_update_client_product_sets_the_username_and_the_override(sandbox: WhmcsSandbox) -> None:
    # Given
    _, service = cloud_service(sandbox)
    # When
    reply = api(sandbox, "UpdateClientProduct", serviceid=service["id"], serviceusername="ann.lee@example.org",
                overideautosuspend="on", overidesuspenduntil="2025-12-31")
    # Then
    assert reply == {"result": "success", "serviceid": service["id"]}
    [row] = api(sandbox, "GetClientsProducts", username2="ann.lee@example.org")["products"]["product"]
    assert (row["id"], row["username"]) == (service["id"], "ann.lee@example.org")
    assert (row["overideautosuspend"], row["overidesuspenduntil"], row["suspensionreason"]) == (1, "2025-12-31", "")
    assert api(sandbox, "UpdateClientProduct", serviceid=999, serviceusername="x")["message"] == "Service ID Not Found"
