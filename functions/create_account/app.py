"""POST /v1/accounts/create: wiring only.

The logic is cswhmcs.accounts.provisioning.create_account.
"""

from cswhmcs.accounts.provisioning import create_account
from cswhmcs.api import make_handler
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_handler("/v1/accounts/create", create_account))
