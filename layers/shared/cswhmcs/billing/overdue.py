"""Unpaid usage: suspend the services of overdue usage invoices, lift the suspensions once paid (API.md §9).

WHMCS suspends a service when *that service's* invoice is overdue; the invoices it builds from our billable
items belong to no service, so with ``OVERDUE_SUSPEND_DAYS`` = N > 0 this module does it (docs/billing.md §10):

* **Which invoices** (``overdue_usage_invoices``): GetInvoices ``status=Unpaid`` ordered by due date, oldest
  first, page by page, stopping at the first invoice due N days ago or later (so the pages read are those of
  the invoices more than N days overdue, whatever the number of clients), then GetInvoice for each one's
  lines. A line is ours when it is of type ``Item`` and the ledger holds its billable item: the line's
  description names our ref (``[ref <cs user>:<period>:<product>]``, as the billable item was created) and
  that finished line's ``billable_id`` is the line's ``relid`` (``Ledger.billed_lines``, one BatchGetItem per
  invoice). A line without a ref, or whose ref names another billable item, is not ours: never suspended for.
* **Suspending** (``suspend_service``): each service such a line was billed for, when WHMCS shows it Active,
  of the invoice's client, and without an Override Auto-Suspend in force (``overideautosuspend`` with no
  ``overidesuspenduntil`` date, or one not yet past), is suspended with ``ModuleSuspend`` and the reason
  ``Overdue usage invoice #<id>`` (the module's SuspendAccount suspends it in ComputeStacks too). The record
  ``client#<c> / overdue#s<s>#i<i>`` is claimed first (``Ledger.claim_suspension``), so a repeated or
  concurrent run suspends nothing twice. A refused or unanswered ModuleSuspend marks the record ``failed``:
  the next collection tries again (a service WHMCS then shows suspended with our reason is recorded as
  suspended without a second call), and every failure is logged as an error and counted in the
  ``OverdueSuspensionsFailed`` metric (alarmed).
* **Lifting** (``lift_for_client``): the suspensions this backend recorded for a client are lifted with
  ``ModuleUnsuspend`` once the client has no usage invoice more than N days overdue, and only while WHMCS
  still shows the service suspended with exactly our reason: a suspension made for any other reason (or
  re-made by an admin) is never lifted, only forgotten. Called by the InvoicePaid hook
  (``invoice_paid``, ``/v1/hooks/invoice-paid``) and by the daily collection for every held suspension
  whose client no longer has an overdue usage invoice (the hook is not retried when it fails).

Cost: per collection, ceil(M / 100) GetInvoices + M GetInvoice for the M invoices more than N days overdue
(usage or not), plus one GetClientsProducts and one ModuleSuspend per service to suspend; services recorded
as suspended for an invoice cost nothing on the next runs. O(overdue invoices), never O(accounts). N unset
or 0: nothing is read at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from cswhmcs import deadline, observability, ports
from cswhmcs.billing.ledger import ENDED, LIFTED, SUPERSEDED, SUSPENDED, SUSPENDING, Ledger
from cswhmcs.deps import Deps, Request
from cswhmcs.errors import DomainError, InvalidInput, UpstreamApiError, UpstreamError
from cswhmcs.models import Id, parse
from cswhmcs.observability import logger

REASON_PREFIX = "Overdue usage invoice #"
SUSPENSIONS_FAILED = "OverdueSuspensionsFailed"  # metric: a ModuleSuspend or ModuleUnsuspend that failed
SERVICES_SUSPENDED = "OverdueServicesSuspended"
SERVICES_UNSUSPENDED = "OverdueServicesUnsuspended"
_REF = re.compile(r"\[ref (\d+:\d{4}-\d{2}:\d+)\]")
_OPEN_STATUSES = ("unpaid", "overdue")


def reason_for(invoice_id: int) -> str:
    return f"{REASON_PREFIX}{invoice_id}"


class InvoicePaidParams(BaseModel):
    """The body ``hooks.php`` forwards from WHMCS's InvoicePaid hook (its own lower-case variable)."""

    model_config = ConfigDict(extra="ignore")
    invoiceid: Id


@dataclass(frozen=True)
class UsageInvoice:
    invoice_id: int
    client_id: int
    duedate: str
    service_ids: tuple[int, ...]  # the services its lines of ours were billed for


@dataclass
class OverdueScan:
    """What one pass over the overdue invoices found."""

    invoices: list[UsageInvoice] = field(default_factory=list)
    unreadable_clients: set[int] = field(default_factory=set)  # an invoice of theirs could not be read
    complete: bool = True  # every invoice more than N days overdue was listed and read
    invoices_read: int = 0  # GetInvoice calls

    @property
    def overdue_clients(self) -> set[int]:
        return {i.client_id for i in self.invoices}


@dataclass
class OverdueResult:
    """One collection's overdue pass (logged; ``to_dict`` for the planner's answer and the tests)."""

    enabled: bool
    days: int = 0
    today: str = ""
    invoices: int = 0  # usage invoices more than N days overdue
    suspended: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"service", "invoice", "error"}
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"service", "invoice", "why"}
    unsuspended: list[int] = field(default_factory=list)
    lift_failed: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "days": self.days, "today": self.today, "invoices": self.invoices,
                "suspended": self.suspended, "failed": self.failed, "skipped": self.skipped,
                "unsuspended": self.unsuspended, "lift_failed": self.lift_failed, "complete": self.complete}


# ---------------------------------------------------------------------- reading WHMCS


def _items(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    items = invoice.get("items") or []
    if isinstance(items, dict):
        items = items.get("item") or []
    return [i for i in items if isinstance(i, dict)]


def usage_services(invoice: dict[str, Any], ledger: ports.OverdueLedger) -> tuple[int, ...]:
    """The services the invoice's lines of ours were billed for (see the module docstring), sorted."""
    keys: list[tuple[str, int]] = []
    for item in _items(invoice):
        if str(item.get("type", "")).strip().lower() != "item":
            continue
        try:
            relid = int(item.get("relid") or 0)
        except (TypeError, ValueError):
            continue
        match = _REF.search(str(item.get("description", "")))
        if relid > 0 and match:
            keys.append((match.group(1), relid))
    if not keys:
        return ()
    lines = ledger.billed_lines(keys)
    return tuple(sorted({line["service_id"] for line in lines.values() if line["service_id"] > 0}))


def _due(row: dict[str, Any]) -> date | None:
    try:
        return date.fromisoformat(str(row.get("duedate", ""))[:10])
    except ValueError:
        return None  # 0000-00-00: no due date, never overdue


def overdue_usage_invoices(whmcs: ports.Whmcs, ledger: ports.OverdueLedger, *, today: date, days: int,
                           client_id: int | None = None, exclude: Iterable[int] = ()) -> OverdueScan:
    """Every usage invoice (of ``client_id``, or of everyone) due more than ``days`` days before ``today``
    and still unpaid. An invoice that cannot be read leaves its client in ``unreadable_clients``; a listing
    that failed or ran out of time leaves ``complete`` False (nothing may then be lifted on its word)."""
    cutoff = today - timedelta(days=days)
    skip = set(exclude)
    scan = OverdueScan()
    limit = deadline.current()
    try:
        for row in whmcs.iter_invoices(status="Unpaid", userid=client_id, orderby="duedate", order="asc"):
            due = _due(row)
            if due is None:
                continue
            if due >= cutoff:
                break  # ordered by due date: every later invoice is due too recently
            invoice_id, owner = int(row.get("id") or 0), int(row.get("userid") or 0)
            if invoice_id <= 0 or invoice_id in skip or str(row.get("status", "")).lower() not in _OPEN_STATUSES:
                continue
            if limit.expired():
                scan.complete = False
                break
            try:
                invoice = whmcs.get_invoice(invoice_id)
                scan.invoices_read += 1
                if str(invoice.get("status", "")).lower() not in _OPEN_STATUSES:
                    continue  # paid since it was listed
                services = usage_services(invoice, ledger)
            except DomainError as exc:
                logger.warning("overdue usage: an invoice could not be read", extra={
                    "invoice": invoice_id, "client": owner, "error": exc.message})
                scan.unreadable_clients.add(owner)
                continue
            if services:
                scan.invoices.append(UsageInvoice(invoice_id, int(invoice.get("userid") or owner),
                                                  due.isoformat(), services))
    except DomainError as exc:
        logger.warning("overdue usage: GetInvoices failed; the listing is incomplete", extra={"error": exc.message})
        scan.complete = False
    return scan


def _override_in_force(service: dict[str, Any], today: date) -> bool:
    """WHMCS's Override Auto-Suspend: no automatic suspension until ``overidesuspenduntil`` (or ever, without)."""
    flag = str(service.get("overideautosuspend", "")).strip().lower()
    if flag in ("", "0", "false", "off", "no"):
        return False
    until = str(service.get("overidesuspenduntil") or "").strip()[:10]
    try:
        return date.fromisoformat(until) >= today
    except ValueError:
        return True  # 0000-00-00 or empty: no end date


def _service(whmcs: ports.Whmcs, service_id: int) -> dict[str, Any] | None:
    found = whmcs.get_clients_products(serviceid=service_id)
    return found[0] if found else None


def _status(service: dict[str, Any]) -> str:
    return str(service.get("status", "")).strip().lower()


# ---------------------------------------------------------------------- suspending


def suspend_service(whmcs: ports.Whmcs, ledger: ports.OverdueLedger, invoice: UsageInvoice, service_id: int, *,
                    today: date) -> tuple[str, str]:
    """Suspend one service for one overdue usage invoice, at most once. Returns (outcome, detail): outcome
    ``suspended``, ``failed`` or a reason it was left alone (``already``, ``override``, ``not-active`` ...)."""
    client_id, invoice_id = invoice.client_id, invoice.invoice_id
    reason = reason_for(invoice_id)
    record = ledger.suspension(client_id, service_id, invoice_id)
    if record is not None and record.get("status") not in (SUSPENDING, "failed"):
        return "already", str(record.get("status"))  # suspended for this invoice before (maybe lifted since)
    service = _service(whmcs, service_id)
    if service is None:
        return "not-found", "WHMCS has no such service"
    if int(service.get("clientid") or 0) != client_id:
        return "other-client", f"the service belongs to client #{service.get('clientid')}"
    status = _status(service)
    if status == "suspended":
        if record is not None and str(service.get("suspensionreason", "")).strip() == reason \
                and ledger.claim_suspension(client_id, service_id, invoice_id, reason):
            # Our earlier ModuleSuspend did reach WHMCS (its answer was lost): record it, call nothing.
            ledger.finish_suspension(client_id, service_id, invoice_id)
            return "suspended", "recorded (WHMCS had suspended it)"
        return "not-active", "already suspended"
    if status != "active":
        return "not-active", status
    if _override_in_force(service, today):
        return "override", "Override Auto-Suspend is set"
    if not ledger.claim_suspension(client_id, service_id, invoice_id, reason):
        return "busy", "being suspended by another run"
    try:
        whmcs.module_suspend(service_id, reason)
    except UpstreamApiError as exc:
        ledger.fail_suspension(client_id, service_id, invoice_id, exc.upstream_message or exc.message)
        return "failed", exc.upstream_message or exc.message
    except UpstreamError as exc:
        detail = f"{exc.message} (it may have been applied: the next collection checks WHMCS)"
        ledger.fail_suspension(client_id, service_id, invoice_id, detail)
        return "failed", detail
    ledger.finish_suspension(client_id, service_id, invoice_id)
    return "suspended", reason


# ---------------------------------------------------------------------- lifting


@dataclass
class LiftResult:
    unsuspended: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"service", "error"}
    still_overdue: bool = False


def _lift_one(whmcs: ports.Whmcs, ledger: ports.OverdueLedger, record: dict[str, Any], by: str,
              result: LiftResult) -> None:
    service_id = int(record["service_id"])
    if not ledger.claim_lift(record):
        return  # lifted meanwhile, or being lifted by the hook or another run
    try:
        service = _service(whmcs, service_id)
    except DomainError as exc:
        ledger.release_lift(record, exc.message)
        result.failed.append({"service": service_id, "error": exc.message})
        return
    reason = str(record.get("reason") or reason_for(int(record["invoice_id"])))
    if service is None or _status(service) != "suspended":
        ledger.finish_lift(record, ENDED, "WHMCS shows it not suspended")  # lifted by someone else
        return
    if str(service.get("suspensionreason", "")).strip() != reason:
        ledger.finish_lift(record, SUPERSEDED, f"suspended for another reason: {service.get('suspensionreason')}")
        return
    try:
        whmcs.module_unsuspend(service_id)
    except DomainError as exc:
        error = getattr(exc, "upstream_message", "") or exc.message
        ledger.release_lift(record, error)
        result.failed.append({"service": service_id, "error": error})
        observability.count(SUSPENSIONS_FAILED)
        logger.error("overdue usage: ModuleUnsuspend failed; the next hook or collection tries again",
                     extra={"service": service_id, "client": record["client_id"], "error": error})
        return
    ledger.finish_lift(record, LIFTED, by)
    observability.count(SERVICES_UNSUSPENDED)
    result.unsuspended.append(service_id)


def lift_for_client(whmcs: ports.Whmcs, ledger: ports.OverdueLedger, client_id: int, *, today: date, days: int,
                    by: str, paid_invoice: int | None = None, known_clear: bool = False,
                    records: list[dict[str, Any]] | None = None) -> LiftResult:
    """Lift every suspension this backend holds for the client, once no usage invoice of theirs is more than
    ``days`` days overdue (``known_clear``: the caller knows so already, e.g. the collection's full scan)."""
    result = LiftResult()
    held = [r for r in (records if records is not None else ledger.client_suspensions(client_id))
            if r.get("status") in (SUSPENDED, "lifting")]
    if not held:
        return result
    if not known_clear:
        scan = overdue_usage_invoices(whmcs, ledger, today=today, days=days, client_id=client_id,
                                      exclude=[paid_invoice] if paid_invoice else [])
        if scan.invoices or scan.unreadable_clients or not scan.complete:
            if not scan.invoices:  # not known: keep the suspension (the collection looks again)
                result.failed.append({"service": 0, "error": "the client's other invoices could not be read"})
            result.still_overdue = bool(scan.invoices)
            return result
    # (Two records of one service: only the one whose reason WHMCS shows is lifted; the other ends.)
    for record in sorted(held, key=lambda r: (int(r["service_id"]), int(r["invoice_id"]))):
        _lift_one(whmcs, ledger, record, by, result)
    return result


# ---------------------------------------------------------------------- the daily collection's pass


def configured_days(settings: Any) -> int:
    return int(getattr(settings, "OVERDUE_SUSPEND_DAYS", None) or 0)


def collect_overdue(whmcs: ports.Whmcs, ledger: ports.OverdueLedger, *, days: int, today: date) -> OverdueResult:
    """The daily collection's pass: suspend what is overdue, lift what no longer is. ``days`` 0: nothing,
    not even a WHMCS request."""
    result = OverdueResult(enabled=days > 0, days=days, today=today.isoformat())
    if days <= 0:
        return result
    scan = overdue_usage_invoices(whmcs, ledger, today=today, days=days)
    result.invoices, result.complete = len(scan.invoices), scan.complete
    limit = deadline.current()
    for invoice in scan.invoices:
        for service_id in invoice.service_ids:
            if limit.expired():
                result.complete = False
                break
            try:
                outcome, detail = suspend_service(whmcs, ledger, invoice, service_id, today=today)
            except DomainError as exc:  # reading the service failed: tried again tomorrow
                outcome, detail = "failed", exc.message
            entry = {"service": service_id, "invoice": invoice.invoice_id}
            if outcome == "suspended":
                result.suspended.append(service_id)
                observability.count(SERVICES_SUSPENDED)
            elif outcome == "failed":
                result.failed.append({**entry, "error": detail})
                observability.count(SUSPENSIONS_FAILED)
                logger.error("overdue usage: suspending a service failed; the next collection tries again",
                             extra={**entry, "client": invoice.client_id, "error": detail})
            else:
                result.skipped.append({**entry, "why": outcome, "detail": detail})
    # Lifts: only on the word of a complete listing (an invoice missed would lift a suspension too early).
    if scan.complete and result.complete:
        blocked = scan.overdue_clients | scan.unreadable_clients
        by_client: dict[int, list[dict[str, Any]]] = {}
        for record in ledger.held_suspensions():
            if int(record["client_id"]) not in blocked:
                by_client.setdefault(int(record["client_id"]), []).append(record)
        for client_id, records in sorted(by_client.items()):
            if limit.expired():
                result.complete = False
                break
            lifted = lift_for_client(whmcs, ledger, client_id, today=today, days=days, by="daily collection",
                                     known_clear=True, records=records)
            result.unsuspended += lifted.unsuspended
            result.lift_failed += lifted.failed
    log = logger.error if result.failed or result.lift_failed else logger.info
    log("overdue usage pass done", extra=result.to_dict())
    return result


def ledger_for(deps: Deps) -> Ledger:
    return deps.ledger


def collection_today(as_of: datetime, timezone: str = "") -> date:
    """The collection's "today": its as-of's date, in the schedule's zone when it names one."""
    from cswhmcs.billing.usage import zone_or_none

    zone = zone_or_none(timezone) if timezone else None
    return as_of.astimezone(zone or UTC).date()


def run_collection_pass(deps: Deps, *, as_of: datetime, timezone: str = "") -> OverdueResult:
    """What the billing planner calls once per daily collection."""
    days = configured_days(deps.settings)
    if days <= 0:
        return OverdueResult(enabled=False)
    return collect_overdue(deps.whmcs, ledger_for(deps), days=days, today=collection_today(as_of, timezone))


# ---------------------------------------------------------------------- /v1/hooks/invoice-paid


def invoice_paid(req: Request) -> dict[str, Any]:
    """``{"invoiceid": N}`` -> ``{"unsuspended": [service ids]}``. The invoice must be Paid (checked with
    GetInvoice; its client is WHMCS's, never the caller's word); the client's suspensions made by this
    backend are lifted when nothing else of theirs is more than N days overdue. A lift that failed answers
    502 (the hook logs it in WHMCS); its record stays held, and the next collection tries again."""
    params = parse(InvoicePaidParams, req.payload)
    whmcs = req.deps.whmcs
    try:
        invoice = whmcs.get_invoice(params.invoiceid)
    except UpstreamApiError as exc:
        if (exc.upstream_message or "").strip().lower().startswith("invoice id not found"):
            raise InvalidInput(f"The field 'invoiceid' is invalid: WHMCS has no invoice #{params.invoiceid}.",
                               field="invoiceid") from None
        raise
    if str(invoice.get("status", "")).strip().lower() != "paid":
        logger.info("invoice-paid hook: the invoice is not paid; nothing lifted",
                    extra={"invoice": params.invoiceid, "status": str(invoice.get("status", ""))[:32]})
        return {"unsuspended": []}
    client_id = int(invoice.get("userid") or 0)
    if client_id <= 0:
        return {"unsuspended": []}
    today = datetime.now(UTC).date()
    result = lift_for_client(whmcs, ledger_for(req.deps), client_id, today=today,
                             days=configured_days(req.settings), by=f"invoice #{params.invoiceid} paid",
                             paid_invoice=params.invoiceid)
    logger.info("invoice-paid hook", extra={"invoice": params.invoiceid, "client": client_id,
                                            "unsuspended": result.unsuspended, "failed": result.failed,
                                            "still_overdue": result.still_overdue})
    if result.failed:
        done = (f"Service #{', #'.join(map(str, result.unsuspended))} was unsuspended; "
                if result.unsuspended else "")
        failed = [f["service"] for f in result.failed if f["service"]]
        what = (f"service #{', #'.join(map(str, failed))} could not be unsuspended ({result.failed[0]['error']})"
                if failed else f"the client's invoices could not be checked ({result.failed[0]['error']})")
        raise UpstreamError(f"{done}{what}; the daily collection tries again.", upstream="WHMCS")
    return {"unsuspended": result.unsuspended}
