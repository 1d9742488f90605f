"""POST /v1/user-groups: wiring only.

The logic is cswhmcs.accounts.sync.user_groups.
"""

from cswhmcs.accounts.sync import user_groups
from cswhmcs.api import make_handler
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_handler("/v1/user-groups", user_groups))
