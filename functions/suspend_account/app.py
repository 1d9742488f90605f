"""Lambda entry point for POST /v1/accounts/suspend: wiring only; the logic is cswhmcs.accounts.provisioning.suspend_account."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.provisioning import suspend_account

lambda_handler = make_handler("/v1/accounts/suspend", suspend_account)
