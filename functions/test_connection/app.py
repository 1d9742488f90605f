"""Lambda entry point for POST /v1/connection/test: wiring only; the logic is cswhmcs.accounts.connection.test_connection."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.connection import test_connection

lambda_handler = make_handler("/v1/connection/test", test_connection)
