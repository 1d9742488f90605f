"""BillingPlannerFunction: EventBridge Scheduler -> plan one billing run -> SQS (docs/billing.md)."""

import os
from typing import Any

from cswhmcs.billing.handlers import planner_handler


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return planner_handler(event, context, os.environ)
