"""Lambda entry point for POST /v1/accounts/terminate: wiring only; the logic is cswhmcs.accounts.provisioning.terminate_account."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.provisioning import terminate_account

lambda_handler = make_handler("/v1/accounts/terminate", terminate_account)
