"""POST /v1/hooks/invoice-paid: wiring only.

The logic is cswhmcs.billing.overdue.invoice_paid (API.md section 9: lift the overdue-usage suspensions this
backend made once the client has no other usage invoice overdue).
"""

from cswhmcs.api import make_handler
from cswhmcs.billing.overdue import invoice_paid
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_handler("/v1/hooks/invoice-paid", invoice_paid))
