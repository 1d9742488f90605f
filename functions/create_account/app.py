"""Lambda entry point for POST /v1/accounts/create: wiring only; the logic is cswhmcs.accounts.provisioning.create_account."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.provisioning import create_account

lambda_handler = make_handler("/v1/accounts/create", create_account)
