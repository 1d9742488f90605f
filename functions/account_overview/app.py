"""POST /v1/accounts/overview: wiring only.

The logic is cswhmcs.accounts.overview.account_overview.
"""

from cswhmcs.accounts.overview import account_overview
from cswhmcs.api import make_handler
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_handler("/v1/accounts/overview", account_overview))
