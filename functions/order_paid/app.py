"""POST /v1/hooks/order-paid: wiring only.

The logic is cswhmcs.credit.order_paid.
"""

from cswhmcs.api import make_handler
from cswhmcs.credit import order_paid
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_handler("/v1/hooks/order-paid", order_paid))
