"""OrderPaid: the deposit paid with a first order becomes WHMCS account credit, exactly once.

Steps: keep the order open (first delivery: whatever happens next, the daily sweep delivers it again) ->
verify the invoice with WHMCS (Paid, this client's, Hosting lines of these services and their amounts) ->
claim the order with a conditional DynamoDB write -> AddCredit once -> mark it done.
AddCredit has no de-duplication, so after any doubt (a timeout, a crash after the claim) WHMCS
GetCredits is consulted before a credit is ever sent again.

Which failures keep an order open for the daily sweep: only WHMCS being unreachable, failing or slow.
WHMCS's definite answers about the request's own data (no such invoice, no such client) are the
caller's error (422 naming the field) and open nothing. An order still open after ``STALE_AFTER_S``
is no longer retried: the sweep logs it as an error and emits the ``OrderCreditsStale`` metric, which
the ``OrderCreditsStaleAlarm`` of template.yaml sends to the operator.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cswhmcs import deadline, observability
from cswhmcs.adapters.dynamo import OpenOrder, OrderCredit
from cswhmcs.api import Deps, Request
from cswhmcs.errors import Conflict, DomainError, InvalidInput, UpstreamApiError, UpstreamError, UpstreamTimeout
from cswhmcs.models import OrderPaidParams, parse
from cswhmcs.money import cents, fmt2, to_decimal
from cswhmcs.observability import SERVICE, logger

MODULE = "computestacks"
WAIT_FOR_OTHER_DELIVERY_S = 8.0  # at most; never past the request's deadline
POLL_INTERVAL_S = 0.2
STALE_AFTER_S = 7 * 24 * 3600  # an order open this long is reported and alarmed, no longer retried
METRIC_NAMESPACE = observability.NAMESPACE
STALE_METRIC = observability.ORDER_CREDITS_STALE
# WHMCS's own answers that the request names something it does not have (reference/whmcs-contract.md:
# GetInvoice, GetClientsDetails, GetCredits/AddCredit): the caller's error, never worth a retry.
_UNKNOWN_TO_WHMCS = {
    "invoice id not found": "invoiceId",
    "client not found": "userId",
    "client id not found": "userId",
}


def description(order_id: int) -> str:
    return f"Credit for Cloud Services Order #{order_id}"


def _items(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    items = invoice.get("items") or {}
    rows = items.get("item") if isinstance(items, dict) else items
    return [r for r in (rows or []) if isinstance(r, dict)]


def _order_service(req: Request, service_id: int, params: OrderPaidParams,
                   product_modules: dict[int, str], *, check_module: bool) -> bool:
    """True when the service belongs to this client and was bought with this order (and, when asked,
    is a product of this module). WHMCS says so in GetClientsProducts; nothing is taken on trust, so
    another order id naming the same invoice credits nothing."""
    products = req.deps.whmcs.get_clients_products(serviceid=service_id)
    if not products:
        return False
    service = products[0]
    if int(service.get("clientid") or 0) != params.userId or int(service.get("orderid") or 0) != params.orderId:
        return False
    if not check_module:
        return True
    pid = int(service.get("pid") or 0)
    if pid not in product_modules:
        found = req.deps.whmcs.get_products(pid=pid)
        product_modules[pid] = str(found[0].get("module", "")) if found else ""
    return product_modules[pid].lower() == MODULE


def creditable_amount(req: Request, params: OrderPaidParams, invoice: dict[str, Any]) -> Decimal:
    """The sum of the invoice's Hosting lines that are this order's ComputeStacks services with Apply
    Credit on (the module's `lines` say which; without them every service of a `computestacks` product)."""
    hosting: dict[int, Decimal] = {}
    for item in _items(invoice):
        if str(item.get("type", "")).lower() != "hosting":
            continue  # only service lines: relid of another type is not a service id
        relid = int(item.get("relid") or 0)
        hosting[relid] = hosting.get(relid, Decimal(0)) + to_decimal(item.get("amount"))
    candidates = set(hosting)
    if params.lines is not None:
        candidates &= {line.serviceid for line in params.lines if line.apply_credit}
    modules: dict[int, str] = {}
    wanted = {sid for sid in sorted(candidates)
              if _order_service(req, sid, params, modules, check_module=params.lines is None)}
    total = sum((amount for sid, amount in hosting.items() if sid in wanted), Decimal(0))
    return cents(total) if total > 0 else Decimal("0.00")


def _already_credited(req: Request, client_id: int, order_id: int, amount: Decimal) -> bool:
    for credit in req.deps.whmcs.get_credits(client_id):
        if str(credit.get("description", "")).strip() == description(order_id) and \
                cents(to_decimal(credit.get("amount"))) == amount:
            return True
    return False


def _answer(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"credited": fmt2(amount), "currency": currency}


def order_paid(req: Request) -> dict[str, Any]:
    params = parse(OrderPaidParams, req.payload)
    records = req.deps.order_credits
    record: OrderCredit | None = records.get(params.orderId)
    if record is not None and record.status == "done":
        if (record.invoice_id, record.client_id) != (params.invoiceId, params.userId):
            raise Conflict(f"Order #{params.orderId} was credited for invoice #{record.invoice_id} of client "
                           f"#{record.client_id}, not invoice #{params.invoiceId} of client #{params.userId}.",
                           code="order_credit_mismatch")
        return _answer(record.amount, record.currency)
    if record is None:
        # Kept open before WHMCS is asked: if this function dies anywhere from here on, the daily sweep
        # delivers the order again (WHMCS never fires OrderPaid twice). Forgotten when nothing applies.
        records.remember_open(params.orderId, params.model_dump(), "the first delivery did not finish")
    try:
        return _credit(req, params, record)
    except (InvalidInput, UpstreamApiError) as exc:
        refusal = _caller_error(exc, params)
        if refusal is None:  # WHMCS failed at something else: worth another delivery
            records.remember_open(params.orderId, params.model_dump(), exc.message)
            raise
        if record is None and records.forget(params.orderId):
            pass  # refused before anything was claimed: this delivery leaves nothing behind
        elif _nothing_outstanding(record):
            # Nothing was or will be credited for this request: settle the record an earlier delivery left.
            records.settle(params.orderId, "refused", note=refusal.message[:500])
        else:  # a claimed or ambiguous credit may be outstanding: keep it for the sweep and the operator
            records.remember_open(params.orderId, params.model_dump(), refusal.message)
        raise refusal from None
    except (UpstreamError, UpstreamTimeout) as exc:
        # WHMCS will not fire OrderPaid again: keep the order for the daily sweep (retry_open_credits).
        records.remember_open(params.orderId, params.model_dump(), exc.message)
        raise


def _nothing_outstanding(record: OrderCredit | None) -> bool:
    """True when no AddCredit can be outstanding for this record: none was ever sent, or the last one was
    refused outright (the claim was released). A crashed claim or an ambiguous credit may have arrived."""
    if record is None or record.status in ("open", "nothing", "refused"):
        return True
    return record.status == "pending" and record.lease_until == 0


def _caller_error(exc: DomainError, params: OrderPaidParams) -> InvalidInput | None:
    """The 422 for a request WHMCS definitely cannot serve (it names something WHMCS does not have)."""
    if isinstance(exc, InvalidInput):
        return exc
    if not isinstance(exc, UpstreamApiError):
        return None
    field = _UNKNOWN_TO_WHMCS.get(exc.upstream_message.strip().rstrip(".").lower())
    if field == "invoiceId":
        return InvalidInput(f"The field 'invoiceId' is invalid: WHMCS has no invoice #{params.invoiceId}.",
                            field=field)
    if field == "userId":
        return InvalidInput(f"The field 'userId' is invalid: WHMCS has no client #{params.userId}.", field=field)
    return None


def _settle_nothing(req: Request, params: OrderPaidParams, record: OrderCredit | None,
                    currency: str) -> dict[str, Any]:
    if record is not None:  # an earlier delivery left it open: nothing to credit now
        if record.status in ("pending", "ambiguous") and \
                _already_credited(req, params.userId, params.orderId, record.amount):
            # ...but a credit it may have sent did arrive: that is the order's credit.
            req.deps.order_credits.mark(params.orderId, "done", note="found in GetCredits after an interrupted "
                                        "delivery")
            return _answer(record.amount, record.currency)
        req.deps.order_credits.settle(params.orderId, "nothing")
    else:  # only what this delivery kept open before asking WHMCS
        req.deps.order_credits.forget(params.orderId)
    return _answer(Decimal("0.00"), currency)


def _credit(req: Request, params: OrderPaidParams, record: OrderCredit | None) -> dict[str, Any]:
    records = req.deps.order_credits
    whmcs = req.deps.whmcs
    invoice = whmcs.get_invoice(params.invoiceId)
    if int(invoice.get("userid") or 0) != params.userId:
        raise InvalidInput(f"Invoice #{params.invoiceId} does not belong to client #{params.userId}.",
                           field="invoiceId")
    client = whmcs.get_client(params.userId)
    currency = str(client.get("currency_code") or "")
    if str(invoice.get("status", "")).lower() != "paid":
        return _settle_nothing(req, params, record, currency)
    amount = creditable_amount(req, params, invoice)
    if amount <= 0:
        return _settle_nothing(req, params, record, currency)

    intent = OrderCredit(order_id=params.orderId, status="pending", amount=amount, currency=currency,
                         client_id=params.userId, invoice_id=params.invoiceId)
    taken_over = record is not None  # a record left by an earlier delivery (open, pending, ambiguous, settled
    # with nothing or refused): WHMCS is asked before anything is sent
    # A first delivery (no record when it started) does not ask GetCredits: it must not take over a record a
    # concurrent delivery has claimed meanwhile, whose AddCredit may have arrived (it waits for it instead).
    if not records.claim(intent, params.model_dump(), fresh=record is None):
        return _wait_for_other_delivery(req, params.orderId)

    if taken_over and _already_credited(req, params.userId, params.orderId, amount):
        records.mark(params.orderId, "done", note="found in GetCredits after an interrupted delivery")
        observability.count(observability.CREDITS_APPLIED)
        return _answer(amount, currency)
    try:
        balance = whmcs.add_credit(params.userId, amount, description(params.orderId))
    except UpstreamTimeout as exc:
        if exc.maybe_applied:
            # Ambiguous first: if the check below fails too, no later delivery may credit blindly.
            records.mark(params.orderId, "ambiguous")
            if _already_credited(req, params.userId, params.orderId, amount):
                records.mark(params.orderId, "done", note="confirmed by GetCredits after a timeout")
                observability.count(observability.CREDITS_APPLIED)
                return _answer(amount, currency)
            raise UpstreamTimeout("WHMCS did not confirm the credit in time; the next delivery of this order "
                                  "checks WHMCS before crediting again.", upstream="WHMCS",
                                  maybe_applied=True) from None
        records.mark(params.orderId, "pending", lease_until=0)  # nothing sent: free to retry at once
        raise
    except DomainError:
        # A definite refusal: nothing was credited; release the claim so a later delivery can retry.
        records.mark(params.orderId, "pending", lease_until=0)
        raise
    records.mark(params.orderId, "done", new_balance=str(balance))
    observability.count(observability.CREDITS_APPLIED)
    logger.info("order credited", extra={"order_id": params.orderId, "amount": str(amount), "currency": currency})
    return _answer(amount, currency)


def _wait_for_other_delivery(req: Request, order_id: int) -> dict[str, Any]:
    """A concurrent duplicate delivery holds the claim: wait briefly for its outcome, at most
    ``WAIT_FOR_OTHER_DELIVERY_S`` and never past the request's deadline (API.md section 2). Then 409:
    the other delivery is still applying it, and a retry finds its outcome."""
    budget = min(WAIT_FOR_OTHER_DELIVERY_S, deadline.current().remaining())
    give_up = time.monotonic() + max(0.0, budget)
    while True:
        record = req.deps.order_credits.get(order_id)
        if record is not None and record.status == "done":
            return _answer(record.amount, record.currency)
        left = give_up - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(POLL_INTERVAL_S, left))
    raise Conflict(f"The credit for order #{order_id} is being applied by another delivery; retry shortly.",
                   code="order_credit_in_progress")


def is_stale(order: OpenOrder, now: float | None = None) -> bool:
    return (time.time() if now is None else now) - order.opened_at > STALE_AFTER_S


def _since(order: OpenOrder) -> str:
    return datetime.fromtimestamp(order.opened_at, UTC).strftime("%Y-%m-%d")


def retry_open_credits(deps: Deps, *, include_stale: bool = False, emit_metric: bool = True) -> list[dict[str, Any]]:
    """Deliver again every order whose credit is not settled (run daily by the billing planner, and by
    `cswhmcs credits retry`). Safe to run any time: each delivery checks WHMCS before crediting.

    An order open for more than 7 days is not delivered again (unless ``include_stale``, the operator's
    choice): it is listed with ``stale`` in the outcomes, logged in one error line per sweep, and counted
    in the ``OrderCreditsStale`` metric (emitted on every sweep, 0 included) that the operator is alarmed on.
    """
    outcomes: list[dict[str, Any]] = []
    stale: list[OpenOrder] = []
    now = time.time()
    for order in deps.order_credits.open_orders():
        if not include_stale and is_stale(order, now):
            stale.append(order)
            outcomes.append({"orderId": order.order_id, "was": order.status, "stale": True,
                             "open_since": _since(order),
                             "error": f"open since {_since(order)}, more than {STALE_AFTER_S // 86400} days: "
                                      f"no longer retried (last error: {order.last_error or 'none'})"})
            continue
        req = Request(route="/v1/hooks/order-paid", payload=order.body, settings=deps.settings, deps=deps)
        # Each order within the route's own budget (never the planner's 15 minutes): a delivery then
        # always ends well inside its claim's lease, which another delivery could otherwise take over.
        budget = deadline.API_BUDGET_SECONDS - deadline.ANSWER_RESERVE_SECONDS
        limit = deadline.Deadline.after(min(budget, deadline.current().remaining()))
        try:
            with deadline.use(limit):
                answer = order_paid(req)
            outcomes.append({"orderId": order.order_id, "was": order.status, "credited": answer["credited"],
                             "currency": answer["currency"]})
        except DomainError as exc:
            outcomes.append({"orderId": order.order_id, "was": order.status, "error": exc.message})
    if stale:
        logger.error("order credits open for more than 7 days are no longer retried: check them in WHMCS, then "
                     "`cswhmcs credits retry --include-stale`",
                     extra={"count": len(stale), "order_ids": [o.order_id for o in stale[:100]]})
    if emit_metric:
        _emit_stale_metric(len(stale))
    if len(outcomes) > len(stale):
        logger.info("open order credits retried", extra={"outcomes": [o for o in outcomes if not o.get("stale")]})
    return outcomes


def _emit_stale_metric(count: int) -> None:
    """CloudWatch EMF on stdout at once, a line of its own (Powertools; off where POWERTOOLS_METRICS_DISABLED is
    set, as in the tests): the sweep's gauge, apart from the invocation's counts (``observability.count``)."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    metrics = EphemeralMetrics(namespace=METRIC_NAMESPACE, service=SERVICE)
    metrics.add_metric(name=STALE_METRIC, unit=MetricUnit.Count, value=count)
    metrics.flush_metrics()
