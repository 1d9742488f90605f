"""Lambda entry point for POST /v1/accounts/overview: wiring only; the logic is cswhmcs.accounts.overview.account_overview."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.overview import account_overview

lambda_handler = make_handler("/v1/accounts/overview", account_overview)
