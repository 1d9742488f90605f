"""POST /v1/hooks/cs-user: wiring only.

Not signed (ComputeStacks cannot sign its webhooks): ``make_token_handler`` checks the ``token`` query
parameter against CS_WEBHOOK_TOKEN first. The logic is cswhmcs.accounts.webhook.cs_user_changed.
"""

from cswhmcs.accounts.webhook import ROUTE, cs_user_changed
from cswhmcs.api import make_token_handler
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_token_handler(ROUTE, cs_user_changed))
