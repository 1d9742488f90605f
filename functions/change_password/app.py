"""Lambda entry point for POST /v1/accounts/change-password: wiring only; the logic is cswhmcs.accounts.provisioning.change_password."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.provisioning import change_password

lambda_handler = make_handler("/v1/accounts/change-password", change_password)
