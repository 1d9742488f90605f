"""POST /v1/accounts/suspend: wiring only.

The logic is cswhmcs.accounts.provisioning.suspend_account.
"""

from cswhmcs.accounts.provisioning import suspend_account
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/suspend", suspend_account)
