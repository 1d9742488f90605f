"""Lambda entry point for POST /v1/accounts/sso: wiring only; the logic is cswhmcs.accounts.sso.single_sign_on."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.sso import single_sign_on

lambda_handler = make_handler("/v1/accounts/sso", single_sign_on)
