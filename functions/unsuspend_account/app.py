"""POST /v1/accounts/unsuspend: wiring only.

The logic is cswhmcs.accounts.provisioning.unsuspend_account.
"""

from cswhmcs.accounts.provisioning import unsuspend_account
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/unsuspend", unsuspend_account)
