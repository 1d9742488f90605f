"""POST /v1/accounts/overview: wiring only.

The logic is cswhmcs.accounts.overview.account_overview.
"""

from cswhmcs.accounts.overview import account_overview
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/overview", account_overview)
