"""Lambda entry point for POST /v1/accounts/list: wiring only; the logic is cswhmcs.accounts.sync.list_accounts."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.sync import list_accounts

lambda_handler = make_handler("/v1/accounts/list", list_accounts)
