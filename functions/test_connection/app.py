"""POST /v1/connection/test: wiring only.

The logic is cswhmcs.accounts.connection.test_connection.
"""

from cswhmcs.accounts.connection import test_connection
from cswhmcs.api import make_handler
from cswhmcs.observability import api_entry

# Every log line carries the request ids (correlation_id: API Gateway's) and cold_start; metrics are
# written once per invocation (cswhmcs.observability.lambda_entry).
lambda_handler = api_entry(make_handler("/v1/connection/test", test_connection))
