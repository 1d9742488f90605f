"""POST /v1/accounts/change-password: wiring only.

The logic is cswhmcs.accounts.provisioning.change_password.
"""

from cswhmcs.accounts.provisioning import change_password
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/change-password", change_password)
