"""BillingWorkerFunction: SQS (ReportBatchItemFailures) -> bill or collect one account per message."""

import os
from typing import Any

from cswhmcs.billing.handlers import worker_handler


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return worker_handler(event, context, os.environ)
