"""POST /v1/user-groups: wiring only.

The logic is cswhmcs.accounts.sync.user_groups.
"""

from cswhmcs.accounts.sync import user_groups
from cswhmcs.api import make_handler

lambda_handler = make_handler("/v1/user-groups", user_groups)
