"""POST /v1/accounts/sso: wiring only.

The logic is cswhmcs.accounts.sso.single_sign_on.
"""

from cswhmcs.accounts.sso import single_sign_on
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/accounts/sso", single_sign_on)
