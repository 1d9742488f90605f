"""Lambda wiring for the billing planner and worker (functions/billing_*/app.py call these).

Settings come from ``config.get_settings`` (Secrets Manager re-read every 5 minutes, like the API
routes) and every tunable from them (``BillingOptions.from_settings``): a bad value stops the function
at start, naming the variable. The worker's clients are kept while the settings stay the same and
rebuilt when they change (a rotated WHMCS credential); the ComputeStacks client takes its pair from
the settings at each request (``cswhmcs.factory.SecretCredentials``), behind the run-level credential
gate (``billing/credentials.py``). All worker environments draw from one ComputeStacks budget, a sliding
window counted in the ledger table (``cswhmcs.adapters.pacing.SharedWindow``, ``BillingOptions.cs_window_budget``):
however many environments Lambda runs or replaces, any 300 s hold at most billing's share of the limit.

With the billing receiver configured (``WHMCS_RECEIVER_URL``), the worker handles an SQS batch as one
group (``process_accounts``): the lines of all its accounts go to the receiver together. The receiver is
the same PHP server as the WHMCS API, so it draws from the same WHMCS bucket.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from cswhmcs import deadline, observability
from cswhmcs.billing.credentials import is_credentials_stop
from cswhmcs.billing.ledger import Ledger
from cswhmcs.billing.messages import WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.planner import CHECK, PLANNER_MARGIN_SECONDS, check_month_end, lambda_trigger, sqs_queue_depth
from cswhmcs.billing.worker import WORKER_MARGIN_SECONDS, AccountResult, WorkerDeps, process_account, process_accounts
from cswhmcs.config import Settings
from cswhmcs.observability import logger


class AccountFailed(Exception):
    """Raised for one SQS record so that only it returns to the queue."""


def build_worker_deps(settings: Settings) -> WorkerDeps:
    """The worker's clients and ledger for these settings (one execution environment's share of the budgets)."""
    from cswhmcs import factory
    from cswhmcs.adapters.dynamo import AccountsRepo, dynamodb_resource
    from cswhmcs.adapters.pacing import SharedWindow, TokenBucket
    from cswhmcs.billing.credentials import guarded_client

    options = BillingOptions.from_settings(settings)
    settings.require("CS_API_URL", "CS_API_KEY", "CS_API_SECRET", "WHMCS_API_URL", "WHMCS_API_IDENTIFIER",
                     "WHMCS_API_SECRET", "LEDGER_TABLE")
    wh_rate, wh_burst = options.whmcs_rate_per_worker()
    # One DynamoDB resource for the ledger and the accounts: a second would build a second client (~15 ms of a
    # cold start).
    resource = dynamodb_resource(settings)
    ledger = Ledger.from_settings(settings, resource)
    # Every worker draws from one sliding window in the ledger table: billing's share of the IP's limit.
    cs_pacer = SharedWindow(ledger.table, options.cs_window_budget(), window=options.cs_window)
    cs, gate = guarded_client(settings, ledger, pacer=cs_pacer)
    whmcs_bucket = TokenBucket(wh_rate, wh_burst)  # shared: the receiver runs on the WHMCS server
    whmcs = factory.whmcs_client(settings, pacer=whmcs_bucket)
    receiver = factory.receiver_client(settings, pacer=whmcs_bucket)
    from cswhmcs.accounts.webhook import reconcile_from_billing

    accounts = AccountsRepo.from_settings(settings, resource)

    def usernames(message: WorkMessage, result: AccountResult) -> bool:
        return reconcile_from_billing(message, result.cs_user, whmcs, accounts)

    return WorkerDeps.from_settings(settings, cs=cs, whmcs=whmcs, ledger=ledger, options=options, cs_gate=gate,
                                    receiver=receiver, usernames=usernames)


class _WorkerDepsCache:
    """The worker deps of this execution environment, kept while the settings are the same. The
    ComputeStacks pair is left out of the comparison: the client follows the secret by itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Settings | None = None
        self._deps: WorkerDeps | None = None

    def __call__(self, settings: Settings) -> WorkerDeps:
        key = settings.model_copy(update={"CS_API_KEY": SecretStr(""), "CS_API_SECRET": SecretStr("")})
        with self._lock:
            if self._deps is None or key != self._key:
                old, self._deps = self._deps, build_worker_deps(settings)
                self._key = key
                if old is not None:
                    _close(old)
            return self._deps

    def cache_clear(self) -> None:
        with self._lock:
            old, self._deps, self._key = self._deps, None, None
        if old is not None:
            _close(old)


def _close(deps: WorkerDeps) -> None:
    for client in (deps.cs, deps.whmcs, deps.receiver):
        close = getattr(client, "close", None)
        if callable(close):
            close()


_worker_deps = _WorkerDepsCache()


def handle_record(body: str, deps: WorkerDeps) -> dict[str, Any]:
    message = WorkMessage.from_json(body)
    result = process_account(message, deps)
    reconcile_username(message, result, deps)
    return report_result(message, result)


def reconcile_username(message: WorkMessage, result: AccountResult, deps: WorkerDeps) -> None:
    """After an account's work succeeded: the username reconcile (``WorkerDeps.usernames``; never raises)."""
    if deps.usernames is not None and result.error is None:
        deps.usernames(message, result)


def report_result(message: WorkMessage, result: AccountResult) -> dict[str, Any]:
    """Log one account's result; raises ``AccountFailed`` when its message must return to the queue
    (a credentials stop is acknowledged: see below)."""
    log = {"run": message.run.run_id, "service_id": result.service_id, "cs_user_id": result.cs_user_id,
           "rows": result.rows_absorbed, "lines": [(o.ref, o.status, str(o.amount), o.currency) for o in result.lines]}
    if result.held:  # eligible, but this period's line exists: waits for the next period's line
        log["held"] = [(product, f"{amount:f}", currency) for product, amount, currency in result.held]
    if result.error and is_credentials_stop(result.error):
        # Acknowledged: a redelivery would only be skipped again, and nothing is lost (billing/credentials.py).
        log["skipped"] = result.error
        logger.warning("billing account skipped: ComputeStacks rejected the API credentials", extra=log)
        return log
    if result.error:
        logger.warning("billing account not finished; it will be retried", extra={**log, "error": result.error})
        raise AccountFailed(result.error)
    logger.info("billing account done", extra=log)
    return log


def _within_time(body: str, deps: WorkerDeps, context: Any) -> dict[str, Any]:
    """One record inside the function's remaining time: an account that cannot finish is released."""
    with deadline.use(deadline.for_lambda(context, margin=WORKER_MARGIN_SECONDS)):
        return handle_record(body, deps)


def worker_handler(event: dict[str, Any], context: Any, env: Mapping[str, str] | None = None,
                   deps: WorkerDeps | None = None) -> dict[str, Any]:
    """SQS batch -> ``{"batchItemFailures": [...]}``: only failed accounts return to the queue.
    ``env`` is not read (kept for the entry points' signature): everything comes from the settings."""
    from cswhmcs.config import get_settings

    worker_deps = deps or _worker_deps(get_settings())
    if worker_deps.receiver is not None:
        return handle_batch(event, worker_deps, context)
    records = event.get("Records") or []
    failures: list[str] = []
    for record in records:
        record_id = str(record.get("messageId", ""))
        try:
            _within_time(str(record["body"]), worker_deps, context)
        except Exception as exc:  # this record returns to the queue; the others go on
            if not isinstance(exc, AccountFailed):  # (an AccountFailed was counted by the worker)
                observability.count(observability.ACCOUNTS_FAILED)
                logger.warning("billing work message failed", extra={"message_id": record_id,
                                                                     "error_type": type(exc).__name__})
            failures.append(record_id)
    if records and len(failures) == len(records):
        # As Powertools' batch processor does: an invocation whose every record failed is an error (the
        # Errors alarm sees it), and SQS returns the whole batch.
        raise BatchFailed(len(records))
    return {"batchItemFailures": [{"itemIdentifier": record_id} for record_id in failures]}


class BatchFailed(Exception):
    """Every record of an SQS batch failed: the invocation fails and the batch returns to the queue."""

    def __init__(self, records: int) -> None:
        super().__init__(f"All {records} billing work messages of the batch failed; they return to the queue.")


def handle_batch(event: dict[str, Any], deps: WorkerDeps, context: Any) -> dict[str, Any]:
    """The receiver path: the whole SQS batch as one group, inside one deadline (the function's remaining
    time less the margin). The same rules per record as ``handle_record``: a body that is not a work
    message fails that record; an account not finished returns to the queue; the rest is acknowledged."""
    failures: list[str] = []
    parsed: list[tuple[str, WorkMessage]] = []
    for record in event.get("Records") or []:
        record_id = str(record.get("messageId", ""))
        try:
            parsed.append((record_id, WorkMessage.from_json(record["body"])))
        except Exception as exc:  # this record only
            logger.warning("billing work message not understood", extra={"message_id": record_id,
                                                                         "error_type": type(exc).__name__})
            failures.append(record_id)
    if parsed:
        with deadline.use(deadline.for_lambda(context, margin=WORKER_MARGIN_SECONDS)):
            try:
                results = process_accounts([message for _, message in parsed], deps)
            except Exception as exc:  # every account of the group returns to the queue
                logger.warning("billing batch failed; its accounts will be retried",
                               extra={"error_type": type(exc).__name__, "accounts": len(parsed)})
                results = []
                failures += [record_id for record_id, _ in parsed]
                observability.count(observability.ACCOUNTS_FAILED, len(parsed))
            for (_, message), result in zip(parsed, results, strict=False):
                reconcile_username(message, result, deps)
        for (record_id, message), result in zip(parsed, results, strict=False):
            try:
                report_result(message, result)
            except AccountFailed:
                failures.append(record_id)
    return {"batchItemFailures": [{"itemIdentifier": record_id} for record_id in failures]}


def planner_handler(event: dict[str, Any], context: Any, env: Mapping[str, str] | None = None, *, sqs: Any = None,
                    whmcs: Any = None, ledger: Ledger | None = None, accounts: Any = None) -> dict[str, Any]:
    """``env`` is not read (kept for the entry points' signature): everything comes from the settings.
    ``{"mode": "check", ...}`` is the month-end deadline check (``planner.check_month_end``), not a run.

    Runs inside the function's remaining time less ``PLANNER_MARGIN_SECONDS``: a plan that cannot finish
    gives its lease up and raises (``PlanningOutOfTime``), so Lambda's retry of the invocation resumes it.
    """
    with deadline.use(deadline.for_lambda(context, margin=PLANNER_MARGIN_SECONDS)):
        return _plan_within_time(event, sqs=sqs, whmcs=whmcs, ledger=ledger, accounts=accounts)


def _plan_within_time(event: dict[str, Any], *, sqs: Any, whmcs: Any, ledger: Ledger | None,
                      accounts: Any) -> dict[str, Any]:
    import boto3

    from cswhmcs import factory
    from cswhmcs.adapters.dynamo import AccountsRepo
    from cswhmcs.config import get_settings

    settings = get_settings()
    settings.require("WORK_QUEUE_URL")
    if isinstance(event, Mapping) and event.get("mode") == CHECK:
        # The month-end deadline check: reads the run record and the queue's depth, plans nothing.
        check = check_month_end(event, ledger=ledger or Ledger.from_settings(settings),
                                queue_depth=sqs_queue_depth(sqs or boto3.client("sqs"), settings.WORK_QUEUE_URL))
        return check.to_dict()
    answer = lambda_trigger(
        event,
        ledger=ledger or Ledger.from_settings(settings),
        accounts=accounts or AccountsRepo.from_settings(settings),
        whmcs=whmcs or factory.whmcs_client(settings),
        sqs=sqs or boto3.client("sqs"),
        queue_url=settings.WORK_QUEUE_URL,
        options=BillingOptions.from_settings(settings),
    )
    if isinstance(event, Mapping) and event.get("mode") == "collect":
        if deadline.current().expired():  # planned, but no time left: the next day's sweep delivers them
            logger.warning("open order credits not retried: the billing planner is out of time")
        else:
            sweep_open_credits(settings)
        if deadline.current().expired():
            logger.warning("overdue usage not checked: the billing planner is out of time")
        else:
            overdue = sweep_overdue(settings, event)
            if overdue is not None:
                answer["overdue"] = overdue
    return answer


def sweep_open_credits(settings: Any) -> None:
    """Deposit credits whose OrderPaid delivery failed are delivered again with the daily collection.
    A failure here never stops billing."""
    from cswhmcs.api import Deps
    from cswhmcs.credit import retry_open_credits

    try:
        retry_open_credits(Deps(settings))
    except Exception as exc:  # logged; the next day's sweep tries again
        logger.warning("open order credits could not be retried", extra={"error_type": type(exc).__name__})


def sweep_overdue(settings: Any, event: Mapping[str, Any]) -> dict[str, Any] | None:
    """With ``OVERDUE_SUSPEND_DAYS`` set, the daily collection suspends the services of usage invoices
    overdue past it and lifts what is paid (``billing/overdue.py``); unset or 0, it asks WHMCS nothing.
    A failure here never stops billing: the next day's collection looks again."""
    from cswhmcs.api import Deps
    from cswhmcs.billing.overdue import configured_days, run_collection_pass
    from cswhmcs.billing.planner import parse_trigger

    if configured_days(settings) <= 0:
        return None
    try:
        trigger = parse_trigger(event)
        return run_collection_pass(Deps(settings), as_of=trigger.as_of, timezone=trigger.timezone).to_dict()
    except Exception as exc:  # logged; the next day's collection tries again
        logger.error("overdue usage pass failed", extra={"error_type": type(exc).__name__})
        return None
