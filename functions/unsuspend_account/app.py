"""Lambda entry point for POST /v1/accounts/unsuspend: wiring only; the logic is cswhmcs.accounts.provisioning.unsuspend_account."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.provisioning import unsuspend_account

lambda_handler = make_handler("/v1/accounts/unsuspend", unsuspend_account)
