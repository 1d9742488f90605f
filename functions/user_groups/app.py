"""Lambda entry point for POST /v1/user-groups: wiring only; the logic is cswhmcs.accounts.sync.user_groups."""

from cswhmcs.api import make_handler
from cswhmcs.accounts.sync import user_groups

lambda_handler = make_handler("/v1/user-groups", user_groups)
