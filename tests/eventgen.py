"""Writes events/<function>.json: genuine API Gateway REST proxy events for every API route.

The signature is computed with the development secret `dev-signing-secret` at a fixed timestamp, so
the files are stable; `cswhmcs sign-event events/X.json --secret ...` refreshes one for `sam local
invoke -e` (a stale timestamp is refused with 401, as it should be).
Run: .venv/bin/python tests/eventgen.py
"""

from __future__ import annotations

import json
from pathlib import Path

from cswhmcs.local.server import build_event
from cswhmcs.local.template import Template
from cswhmcs.signing import sign_headers

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "dev-signing-secret"
FIXED_TS = 1_790_000_000

CLIENT = {"client_id": 7, "userid": 7, "firstname": "Ann", "lastname": "Lee", "email": "ann@example.org",
          "companyname": "Lee Hosting", "address1": "1 Main St", "city": "Portland", "fullstate": "Oregon",
          "postcode": "97201", "country": "US", "phonenumberformatted": "+1.5035550100", "currency": 2,
          "currency_code": "EUR"}
SERVICE = {"serviceid": 42, "userid": 7, "pid": 3, "serverid": 1, "domain": "", "username": "ann@example.org",
           "producttype": "other", "moduletype": "computestacks", "configoption1": "1", "configoption2": "on",
           "customfields": {}, "configoptions": {}, "server": True, "serverip": "",
           "serverhostname": "127.0.0.1:3000", "serversecure": False, "serverport": "", "status": "Active",
           "clientsdetails": CLIENT}
BODIES: dict[str, dict[str, object]] = {
    "/v1/accounts/create": {**SERVICE, "username": "", "status": "Pending", "password": "Xy7pQ2mN4kLm"},
    "/v1/accounts/suspend": SERVICE,
    "/v1/accounts/unsuspend": SERVICE,
    "/v1/accounts/terminate": SERVICE,
    "/v1/accounts/change-password": {**SERVICE, "password": "N3wPassw0rd!"},
    "/v1/accounts/change-package": {**SERVICE, "configoption1": "2"},
    "/v1/accounts/sso": SERVICE,
    "/v1/accounts/overview": SERVICE,
    "/v1/accounts/list": {"serverhostname": "127.0.0.1:3000", "serversecure": False},
    "/v1/user-groups": {"serverhostname": "127.0.0.1:3000", "serversecure": False},
    "/v1/connection/test": {"serverhostname": "127.0.0.1:3000", "serversecure": False},
    "/v1/hooks/order-paid": {"orderId": 12, "invoiceId": 34, "userId": 7,
                             "lines": [{"serviceid": 42, "apply_credit": True}]},
    "/v1/hooks/invoice-paid": {"invoiceid": 34},
}
# Routes ComputeStacks calls (its webhook_users, token-authenticated, never signed): their events are written
# by hand from what ComputeStacks sends (reference computestacks-api.md) and kept as committed.
HAND_WRITTEN = {"/v1/hooks/cs-user"}


def main() -> None:
    template = Template(ROOT / "template.yaml")
    for route in template.api_routes():
        if route.path in HAND_WRITTEN:
            continue
        body = json.dumps(BODIES[route.path], separators=(",", ":")).encode()
        headers = {"Host": "abc123.execute-api.eu-west-1.amazonaws.com", "Content-Type": "application/json",
                   "User-Agent": "WHMCS-ComputeStacks/1.0",
                   **sign_headers(DEV_SECRET, route.path, body, now=FIXED_TS)}
        event = build_event(route, "POST", route.path, "", headers, body, "203.0.113.10", stage="Prod")
        event["requestContext"]["requestId"] = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
        event["requestContext"]["requestTimeEpoch"] = FIXED_TS * 1000
        event["requestContext"]["requestTime"] = "16/Sep/2026:10:13:20 +0000"
        name = route.code_uri.name
        (ROOT / "events" / f"{name}.json").write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
