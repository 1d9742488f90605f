"""Lambda wiring for the billing planner and worker (functions/billing_*/app.py call these).

Clients are built once per execution environment. Each worker environment gets its own share of the
ComputeStacks budget (``BillingOptions.cs_rate_per_worker``): with the event source's
MaximumConcurrency as the divisor, all workers together stay under the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cswhmcs.billing.ledger import Ledger
from cswhmcs.billing.messages import WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.planner import lambda_trigger
from cswhmcs.billing.worker import WorkerDeps, process_account
from cswhmcs.observability import logger


class AccountFailed(Exception):
    """Raised for one SQS record so that only it returns to the queue."""


@lru_cache(maxsize=1)
def _options(env_items: tuple[tuple[str, str], ...]) -> BillingOptions:
    return BillingOptions.from_env(dict(env_items))


def options_from_env(env: Mapping[str, str]) -> BillingOptions:
    keys = ("BILLING_CS_SHARE", "BILLING_WHMCS_RATE", "WORKER_MAX_CONCURRENCY", "BILLING_PER_PAGE")
    return _options(tuple((k, env[k]) for k in keys if k in env))


@lru_cache(maxsize=1)
def _worker_deps(options: BillingOptions) -> WorkerDeps:
    from cswhmcs.adapters.computestacks import ComputeStacksClient
    from cswhmcs.adapters.pacing import TokenBucket
    from cswhmcs.adapters.whmcs import WhmcsClient
    from cswhmcs.config import get_settings

    settings = get_settings()
    settings.require("CS_API_URL", "CS_API_KEY", "CS_API_SECRET", "WHMCS_API_URL", "WHMCS_API_IDENTIFIER",
                     "WHMCS_API_SECRET", "LEDGER_TABLE")
    cs_rate, cs_burst = options.cs_rate_per_worker()
    wh_rate, wh_burst = options.whmcs_rate_per_worker()
    cs = ComputeStacksClient(settings.CS_API_URL, settings.CS_API_KEY.get_secret_value(),
                             settings.CS_API_SECRET.get_secret_value(), timeout=settings.CS_TIMEOUT,
                             connect_timeout=settings.CONNECT_TIMEOUT, pacer=TokenBucket(cs_rate, cs_burst))
    whmcs = WhmcsClient(settings.WHMCS_API_URL, settings.WHMCS_API_IDENTIFIER.get_secret_value(),
                        settings.WHMCS_API_SECRET.get_secret_value(),
                        settings.WHMCS_API_ACCESS_KEY.get_secret_value() or None,
                        timeout=settings.WHMCS_TIMEOUT, connect_timeout=settings.CONNECT_TIMEOUT,
                        pacer=TokenBucket(wh_rate, wh_burst))
    return WorkerDeps.from_settings(settings, cs=cs, whmcs=whmcs, ledger=Ledger.from_settings(settings),
                                    options=options)


def handle_record(body: str, deps: WorkerDeps) -> dict[str, Any]:
    message = WorkMessage.from_json(body)
    result = process_account(message, deps)
    log = {"run": message.run.run_id, "service_id": result.service_id, "cs_user_id": result.cs_user_id,
           "rows": result.rows_absorbed, "lines": [(o.ref, o.status, str(o.amount), o.currency) for o in result.lines]}
    if result.held:  # eligible, but this period's line exists: waits for the next period's line
        log["held"] = [(product, f"{amount:f}", currency) for product, amount, currency in result.held]
    if result.error:
        logger.warning("billing account not finished; it will be retried", extra={**log, "error": result.error})
        raise AccountFailed(result.error)
    logger.info("billing account done", extra=log)
    return log


def worker_handler(event: dict[str, Any], context: Any, env: Mapping[str, str],
                   deps: WorkerDeps | None = None) -> dict[str, Any]:
    """SQS batch -> ``{"batchItemFailures": [...]}``: only failed accounts return to the queue."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    worker_deps = deps or _worker_deps(options_from_env(env))
    processor = BatchProcessor(event_type=EventType.SQS)
    answer = process_partial_response(
        event=event, record_handler=lambda record: handle_record(record.body, worker_deps),
        processor=processor, context=context,
    )
    return dict(answer)


def planner_handler(event: dict[str, Any], context: Any, env: Mapping[str, str], *, sqs: Any = None,
                    whmcs: Any = None, ledger: Ledger | None = None, accounts: Any = None) -> dict[str, Any]:
    import boto3

    from cswhmcs.adapters.dynamo import AccountsRepo
    from cswhmcs.adapters.whmcs import WhmcsClient
    from cswhmcs.config import get_settings

    settings = get_settings()
    queue_url = env.get("WORK_QUEUE_URL") or settings.WORK_QUEUE_URL
    if not queue_url:
        from cswhmcs.errors import ConfigurationError

        raise ConfigurationError("The backend is not configured: WORK_QUEUE_URL is not set.")
    answer = lambda_trigger(
        event,
        ledger=ledger or Ledger.from_settings(settings),
        accounts=accounts or AccountsRepo.from_settings(settings),
        whmcs=whmcs or WhmcsClient.from_settings(settings),
        sqs=sqs or boto3.client("sqs"),
        queue_url=queue_url,
        options=options_from_env(env),
    )
    if isinstance(event, Mapping) and event.get("mode") == "collect":
        sweep_open_credits(settings)
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
