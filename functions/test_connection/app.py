"""POST /v1/connection/test: wiring only.

The logic is cswhmcs.accounts.connection.test_connection.
"""

from cswhmcs.accounts.connection import test_connection
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/connection/test", test_connection)
