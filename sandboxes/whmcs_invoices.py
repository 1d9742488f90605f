"""Invoices in the WHMCS sandbox: GetInvoice/GetInvoices, the cron that invoices billable items, overdue and paid.

``reference/whmcs-contract.md`` sections 3.2 and 7:

* ``GetInvoices``: ``limitstart`` (0) / ``limitnum`` (25) paging with integer ``totalresults``, ``startnumber``,
  ``numreturned``; filters ``userid`` and ``status`` (any stored status, case-insensitive, plus ``Overdue`` =
  ``Unpaid`` with a due date before today); ``orderby`` (``id``, ``invoicenumber``, ``date``, ``duedate``,
  ``total``, ``status``; default ``id``) and ``order`` (``asc`` default, ``desc``); no items in the rows.
  WHMCS stores no "Overdue" status: an overdue invoice still reads ``status: Unpaid``.
* ``GetInvoice``: the invoice with ``items.item[]`` = {id, type, relid, description, amount, taxed},
  ``status``, ``duedate``, ``userid``, ``balance``; ``transactions: ""``; ``Invoice ID Not Found``.
* ``run_billing_cron(today=None, *, days_before=0)``: what WHMCS's daily cron does with billable items that
  were never invoiced (``invoicecount`` 0): ``nextcron`` items always, ``duedate`` items whose due date is at
  most ``days_before`` days after ``today``. One invoice per client and due date (``nextcron``: the run's date),
  one line per item: ``type`` ``Item``, ``relid`` = billable item id, the item's description and amount; then
  the item's ``invoicecount`` becomes 1 (in ``tblbillableitems`` too, in DB mode). ``nextinvoice`` items join the
  first invoice this run makes for their client. ``recur`` and ``noinvoice`` items are never invoiced here.
* ``make_invoice_overdue(invoice_id, days=1)`` (due date ``days`` before today; the status stays Unpaid),
  ``set_invoice_duedate``, ``set_invoice_status`` (no hook), and ``pay_invoice(invoice_id)``: status Paid,
  ``datepaid``, balance 0.00, then, like WHMCS's InvoicePaid hook point, our ``hooks.php`` stand-in when the
  ``invoice_paid_hook`` knob is on (``whmcs_module.ModuleActions``); returns the hook's calls.
  WHMCS's own "unsuspend on payment" automation is not reproduced (it concerns ``Hosting`` lines only).

``today()`` is ``date.today()`` unless ``fixed_today`` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sandboxes.whmcs_envelope import ApiError, to_int

if TYPE_CHECKING:
    from sandboxes.whmcsdb import WhmcsDatabase

_ORDER_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "id": lambda i: i["invoiceid"],
    "invoicenumber": lambda i: (i["invoicenum"], i["invoiceid"]),
    "date": lambda i: (i["date"], i["invoiceid"]),
    "duedate": lambda i: (i["duedate"], i["invoiceid"]),
    "total": lambda i: (Decimal(i["total"]), i["invoiceid"]),
    "status": lambda i: (i["status"], i["invoiceid"]),
}
_ROW_KEYS = ("invoicenum", "date", "duedate", "datepaid", "subtotal", "credit", "tax", "tax2", "total", "taxrate",
             "taxrate2", "status", "paymentmethod", "notes")


def _money(value: Any) -> str:
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"not an amount: {value!r}") from None
    return format(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), "f")


def _iso(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else date.fromisoformat(str(value)).isoformat()


class Invoicing:
    """The invoice half of ``WhmcsSandbox`` (state under the sandbox's ``_lock``)."""

    _lock: threading.RLock
    _clients: dict[int, dict[str, Any]]
    _currencies: dict[int, dict[str, Any]]
    _invoices: dict[int, dict[str, Any]]
    _billable_items: list[dict[str, Any]]
    _db: WhmcsDatabase | None
    _id: Callable[[str], int]
    _paging: Callable[[Mapping[str, Any]], tuple[int, int]]
    _item_from_row: Callable[[Mapping[str, Any]], dict[str, Any]]
    _run_invoice_paid_hook: Callable[[int, int], list[dict[str, Any]]]
    invoice_paid_hook: bool

    def __init__(self) -> None:
        self.fixed_today: date | None = None

    def today(self) -> date:
        return self.fixed_today or date.today()

    # ------------------------------------------------------------------ seeding and inspection

    @property
    def invoices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i, items=[dict(x) for x in i["items"]]) for i in self._invoices.values()]

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        with self._lock:
            inv = self._invoices[invoice_id]
            return dict(inv, items=[dict(x) for x in inv["items"]])

    def add_invoice(self, client_id: int, items: Iterable[Mapping[str, Any]], *, status: str = "Unpaid",
                    paymentmethod: str = "mailin", date: date | str | None = None,  # noqa: A002 - WHMCS's name
                    duedate: date | str | None = None) -> dict[str, Any]:
        """An invoice; each item: ``type`` (default "Hosting"), ``relid``, ``description``, ``amount``.
        ``date`` and ``duedate`` default to today."""
        with self._lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown client {client_id}")
            iid = self._id("invoice")
            lines = []
            total = Decimal("0")
            for item in items:
                given = item.get("amount", "0.00")
                printed = _money(given)
                total += Decimal(printed)
                lines.append({
                    "id": self._id("invoiceitem"), "type": str(item.get("type", "Hosting")),
                    "relid": int(item.get("relid", 0)), "description": str(item.get("description", "")),
                    # strings verbatim, numbers as WHMCS prints money
                    "amount": given if isinstance(given, str) else printed,
                    "taxed": int(item.get("taxed", 0)),
                })
            made = _iso(date) if date is not None else self.today().isoformat()
            invoice = {
                "invoiceid": iid, "invoicenum": "", "userid": client_id, "date": made,
                "duedate": _iso(duedate) if duedate is not None else made,
                "datepaid": f"{made} 00:00:00" if status == "Paid" else "0000-00-00 00:00:00",
                "subtotal": _money(total), "credit": "0.00", "tax": "0.00", "tax2": "0.00",
                "total": _money(total), "balance": "0.00" if status == "Paid" else _money(total),
                "taxrate": "0.00", "taxrate2": "0.00", "status": status, "paymentmethod": paymentmethod,
                "notes": "", "ccgateway": False, "items": lines,
            }
            self._invoices[iid] = invoice
            return dict(invoice, items=[dict(x) for x in lines])

    def set_invoice_status(self, invoice_id: int, status: str) -> None:
        """Sets the status as an admin's edit does: no payment, no hook (``pay_invoice`` runs the hook)."""
        with self._lock:
            inv = self._invoices[invoice_id]
            inv["status"] = status
            inv["balance"] = "0.00" if status == "Paid" else inv["total"]

    def set_invoice_duedate(self, invoice_id: int, duedate: date | str) -> None:
        with self._lock:
            self._invoices[invoice_id]["duedate"] = _iso(duedate)

    def make_invoice_overdue(self, invoice_id: int, days: int = 1) -> dict[str, Any]:
        """An Unpaid invoice whose due date was ``days`` days before today (GetInvoices ``status=Overdue``
        finds it; its status still reads ``Unpaid``, as in WHMCS). Returns the invoice."""
        if days < 1:
            raise ValueError("an overdue invoice is at least 1 day past its due date")
        with self._lock:
            inv = self._invoices[invoice_id]
            if inv["status"] != "Unpaid":
                raise ValueError(f"invoice {invoice_id} is {inv['status']}: only an Unpaid invoice is overdue")
            inv["duedate"] = (self.today() - timedelta(days=days)).isoformat()
            return self.invoice(invoice_id)

    def pay_invoice(self, invoice_id: int, *, paid_on: date | str | None = None) -> list[dict[str, Any]]:
        """Marks the invoice Paid (as a payment does), then runs the InvoicePaid hook stand-in when the
        ``invoice_paid_hook`` knob is on; returns the hook's backend calls (``[]`` when none were made).
        Paying a Paid invoice again changes nothing and runs no hook."""
        with self._lock:
            inv = self._invoices[invoice_id]
            if inv["status"] == "Paid":
                return []
            when = _iso(paid_on) if paid_on is not None else self.today().isoformat()
            inv.update(status="Paid", balance="0.00", datepaid=f"{when} 00:00:00")
            client_id = int(inv["userid"])
            run_hook = self.invoice_paid_hook
        return self._run_invoice_paid_hook(invoice_id, client_id) if run_hook else []

    # ------------------------------------------------------------------ the cron

    def _uninvoiced_items(self) -> list[dict[str, Any]]:
        if self._db is not None:
            return [self._item_from_row(r) for r in self._db.billable_items() if not int(r["invoicecount"] or 0)]
        return [i for i in self._billable_items if not i["invoicecount"]]

    def run_billing_cron(self, today: date | str | None = None, *, days_before: int = 0) -> list[int]:
        """Invoices the billable items that are due (see the module docstring); returns the new invoice ids."""
        run = date.fromisoformat(_iso(today)) if today is not None else self.today()
        horizon = run + timedelta(days=days_before)
        with self._lock:
            groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
            next_invoice: dict[int, list[dict[str, Any]]] = {}
            for item in self._uninvoiced_items():
                action = item["invoiceaction"]
                if action == "nextcron":
                    key = (item["clientid"], run.isoformat())
                elif action == "duedate" and item["duedate"] and date.fromisoformat(item["duedate"]) <= horizon:
                    key = (item["clientid"], item["duedate"])
                elif action == "nextinvoice":
                    next_invoice.setdefault(item["clientid"], []).append(item)
                    continue
                else:
                    continue
                groups.setdefault(key, []).append(item)
            created: list[int] = []
            invoiced: list[dict[str, Any]] = []
            for (client_id, duedate), items in sorted(groups.items()):
                if client_id not in self._clients:
                    continue
                items = items + next_invoice.pop(client_id, [])
                lines = [{"type": "Item", "relid": i["id"], "description": i["description"],
                          "amount": _money(i["amount"])} for i in items]
                created.append(int(self.add_invoice(client_id, lines, date=run, duedate=duedate)["invoiceid"]))
                invoiced.extend(items)
            ids = [int(i["id"]) for i in invoiced]
            if self._db is not None:
                self._db.mark_billable_items_invoiced(ids)
            else:
                for item in self._billable_items:
                    if item["id"] in ids:
                        item["invoicecount"] += 1
            return created

    # ------------------------------------------------------------------ API actions (called under the lock)

    def _get_invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        iid = to_int(params.get("invoiceid"))
        invoice = self._invoices.get(iid) if iid is not None else None
        if invoice is None:
            raise ApiError("Invoice ID Not Found")
        reply = {"result": "success", **{k: v for k, v in invoice.items() if k != "items"}}
        reply["items"] = {"item": [dict(x) for x in invoice["items"]]}
        reply["transactions"] = ""
        return reply

    def _get_invoices(self, params: dict[str, Any]) -> dict[str, Any]:
        start, num = self._paging(params)
        rows = list(self._invoices.values())
        if params.get("userid") not in (None, ""):
            uid = to_int(params["userid"])
            rows = [i for i in rows if i["userid"] == uid]
        status = str(params.get("status") or "").strip().lower()
        if status == "overdue":
            today = self.today().isoformat()
            rows = [i for i in rows if i["status"] == "Unpaid" and i["duedate"] < today]
        elif status:
            rows = [i for i in rows if i["status"].lower() == status]
        rows.sort(key=_ORDER_KEYS.get(str(params.get("orderby") or "id").lower(), _ORDER_KEYS["id"]),
                  reverse=str(params.get("order") or "asc").lower() == "desc")
        page = rows[start:start + num]
        out = []
        for inv in page:
            client = self._clients[inv["userid"]]
            cur = self._currencies[client["currency"]]
            out.append({"id": inv["invoiceid"], "userid": inv["userid"], "firstname": client["firstname"],
                        "lastname": client["lastname"], "companyname": client["companyname"],
                        **{k: inv[k] for k in _ROW_KEYS},
                        "currencycode": cur["code"], "currencyprefix": cur["prefix"],
                        "currencysuffix": cur["suffix"]})
        return {"result": "success", "totalresults": len(rows), "startnumber": start,
                "numreturned": len(page), "invoices": {"invoice": out} if out else ""}
