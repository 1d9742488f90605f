"""BillingWorkerFunction: SQS (ReportBatchItemFailures) -> bill or collect one account per message."""

import os
from typing import Any

from cswhmcs.billing.handlers import worker_handler
from cswhmcs.observability import lambda_entry


def _handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return worker_handler(event, context, os.environ)


# Log lines carry the request id and cold start; metrics flushed once per invocation.
lambda_handler = lambda_entry(_handler)
