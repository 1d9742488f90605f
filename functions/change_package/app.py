"""POST /v1/accounts/change-package: wiring only.

The logic is cswhmcs.accounts.provisioning.change_package.
"""

from cswhmcs.accounts.provisioning import change_package
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/change-package", change_package)
