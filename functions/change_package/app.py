"""Lambda entry point for POST /v1/accounts/change-package: wiring only; the logic is cswhmcs.accounts.provisioning.change_package."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.provisioning import change_package

lambda_handler = make_handler("/v1/accounts/change-package", change_package)
