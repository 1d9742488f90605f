"""POST /v1/hooks/order-paid: wiring only.

The logic is cswhmcs.credit.order_paid.
"""

from cswhmcs.api import make_handler
from cswhmcs.credit import order_paid

lambda_handler = make_handler("/v1/hooks/order-paid", order_paid)
