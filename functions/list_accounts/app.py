"""POST /v1/accounts/list: wiring only.

The logic is cswhmcs.accounts.sync.list_accounts.
"""

from cswhmcs.accounts.sync import list_accounts
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/list", list_accounts)
