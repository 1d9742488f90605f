"""The client-area overview and the admin service tab: one ComputeStacks call.

Beside ComputeStacks' figures, what the billing ledger holds for the account (API.md section 3 additions,
docs/billing.md "The overview's billing figures"), read with one DynamoDB Query over its partition, on a
thread of its own while ComputeStacks answers:
this period's unbilled usage per product, the billed lines and their sums per period, and the lines
that need an operator."""

from __future__ import annotations

import contextvars
import math
import threading
from collections import defaultdict
from decimal import Decimal
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from cswhmcs import deadline
from cswhmcs.accounts.lookup import gone, resolve
from cswhmcs.adapters.computestacks import UserSelector
from cswhmcs.billing.grouping import ATTENTION, DONE
from cswhmcs.billing.ledger import AccountLedger, LineSummary
from cswhmcs.billing.usage import iso
from cswhmcs.deps import Request
from cswhmcs.models import ServiceParams, parse
from cswhmcs.money import ZERO, cents, fmt2, to_decimal
from cswhmcs.observability import logger

BILLED_LINES = 12  # API.md section 3: `billed` holds at most 12 lines
BILLED_PERIODS = 12  # `billed_periods`: the last 12 periods billed (the client area's chart)


def display(symbol: str, amount: Decimal) -> str:
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{fmt2(abs(amount))}"


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def account_overview(req: Request) -> dict[str, Any]:
    params = parse(ServiceParams, req.payload)
    mapping, _ = resolve(req, params)
    # The ledger is read while ComputeStacks answers: both need only the mapping's user id.
    ledger_read = _LedgerRead(req, mapping.cs_user_id)
    try:
        user = req.deps.cs.get_user(UserSelector.by_id(mapping.cs_user_id), include_balance=True)  # the one request
    finally:
        ledger = ledger_read.result()
    if user is None:
        raise gone(mapping)
    services = user.get("services") or {}
    run_rate = cents(to_decimal(user.get("run_rate")))
    usage = cents(to_decimal(user.get("unprocessed_usage")))
    currency = str(user.get("currency") or mapping.currency or "")
    symbol = str(user.get("currency_symbol") or "")
    answer = {
        "username": str(user.get("email") or mapping.email),
        "cs_user_id": int(user.get("id") or mapping.cs_user_id),
        "active": bool(user.get("active", True)),
        "projects": _count(services.get("deployments")),
        "services": _count(services.get("container_services")),
        "run_rate": fmt2(run_rate),
        "current_usage": fmt2(usage),
        "currency": currency,
        "currency_symbol": symbol,
        "run_rate_display": display(symbol, run_rate),
        "current_usage_display": display(symbol, usage),
    }
    if ledger is not None:
        answer.update(billing_figures(ledger, symbol))
    return answer


class _LedgerRead:
    """The account's ledger partition, read on a thread of its own while the request's thread waits for
    ComputeStacks. ``result()`` is None (the billing fields are left out, the module then leaves their sections
    out) when DynamoDB cannot be read or has not answered within the request's deadline: the four figures
    still show. The DynamoDB resource (and the ledger's Table on it) is this request thread's, used by no one
    else meanwhile (the mapping was read before, nothing else is read after)."""

    def __init__(self, req: Request, cs_user_id: int) -> None:
        self.cs_user_id = cs_user_id
        self._ledger = req.deps.ledger
        self._answer: AccountLedger | None = None
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._read,),
                                        name="overview-ledger", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self._answer = self._ledger.account_ledger(self.cs_user_id)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            logger.warning("overview: the billing ledger could not be read; billing figures left out",
                           extra={"cs_user_id": self.cs_user_id, "error": type(exc).__name__})

    def result(self) -> AccountLedger | None:
        left = deadline.current().remaining()  # infinite outside a request (tests, tools)
        self._thread.join(None if math.isinf(left) else max(0.0, left))
        if self._thread.is_alive():
            logger.warning("overview: the billing ledger did not answer in time; billing figures left out",
                           extra={"cs_user_id": self.cs_user_id})
            return None
        return self._answer


def _quantity(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: ``240.000000`` -> ``240``, ``1.50`` -> ``1.5``."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def what_to_do(line: LineSummary) -> str:
    """One sentence for the operator (docs/billing.md section 5, "Operator")."""
    if line.reason.startswith("WHMCS refused it"):
        return (f"WHMCS refused this item, so it was not created: fix the cause that `cswhmcs billing attention` "
                f"shows, then run `cswhmcs billing resolve {line.ref} --resend`.")
    return (f"Search WHMCS (Billing > Billable Items) for [ref {line.ref}]: if the item is there, run "
            f"`cswhmcs billing resolve {line.ref} --billed <its id>`, otherwise "
            f"`cswhmcs billing resolve {line.ref} --resend`.")


def billing_figures(ledger: AccountLedger, symbol: str) -> dict[str, Any]:
    """usage_by_product, usage_as_of, billed, billed_periods and attention from one account's ledger."""
    usage: list[dict[str, Any]] = []
    state = ledger.state
    if state is not None:
        totals: dict[int, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
        for (product_id, _), bucket in state.buckets.items():
            if bucket.rows:
                totals[product_id][0] += bucket.total  # exact: rounded once below
                totals[product_id][1] += bucket.qty
        for product_id, (total, qty) in totals.items():
            name, label = state.products.get(product_id, ("usage", "Usage"))
            amount = cents(total)
            usage.append({"product": label or name, "quantity": _quantity(qty), "amount": fmt2(amount),
                          "amount_display": display(symbol, amount), "_sort": amount})
        usage.sort(key=lambda u: (-u["_sort"], u["product"]))
        for u in usage:
            del u["_sort"]
    # Newest period first; within a period, the largest amount first (two stable sorts).
    done = sorted((ln for ln in ledger.lines if ln.status == DONE), key=lambda ln: (-ln.amount, ln.product))
    done.sort(key=lambda ln: ln.period, reverse=True)
    billed = [{"period": ln.period, "product": ln.product, "amount": fmt2(ln.amount), "currency": ln.currency,
               "billableid": int(ln.billable_id or 0)} for ln in done[:BILLED_LINES]]
    sums: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for ln in done:
        sums[(ln.period, ln.currency)] += ln.amount
    newest = sorted({period for period, _ in sums}, reverse=True)[:BILLED_PERIODS]
    billed_periods = [{"period": period, "amount": fmt2(sums[(period, cur)]), "currency": cur}
                      for period in newest for cur in sorted(c for p, c in sums if p == period)]
    attention = sorted((ln for ln in ledger.lines if ln.status == ATTENTION), key=lambda ln: ln.product_id)
    attention.sort(key=lambda ln: ln.period, reverse=True)  # newest period first
    return {
        "usage_by_product": usage,
        "usage_as_of": iso(state.absorbed_upto) if state is not None and state.absorbed_upto else None,
        "billed": billed,
        "billed_periods": billed_periods,
        "attention": [{"ref": ln.ref, "period": ln.period, "product": ln.product, "amount": fmt2(ln.amount),
                       "currency": ln.currency, "what_to_do": what_to_do(ln)} for ln in attention],
    }
