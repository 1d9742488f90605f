"""POST /v1/accounts/create: wiring only.

The logic is cswhmcs.accounts.provisioning.create_account.
"""

from cswhmcs.accounts.provisioning import create_account
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/create", create_account)
