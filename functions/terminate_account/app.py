"""POST /v1/accounts/terminate: wiring only.

The logic is cswhmcs.accounts.provisioning.terminate_account.
"""

from cswhmcs.accounts.provisioning import terminate_account
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/terminate", terminate_account)
