"""The PHP module as the real client of the API.

Two halves, both driving whmcs/modules/servers/computestacks through tests/php/driver.php with php-cli
(the driver and the recording backend are in tests/support/php_module.py):

* contract tests against that tiny recording backend: signing (API.md section 1) checked
  with an independent HMAC, the body each route gets, error texts, retry, logging, and the OrderPaid
  hook's lines built from WHMCS stand-ins;
* end-to-end tests against ``live_stack`` (tests/conftest.py): the real handlers behind
  ``cswhmcs serve``, DynamoDB Local and the ComputeStacks and WHMCS sandboxes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.php_module import (
    OVERVIEW,
    PHP,
    SECRET,
    FakeBackend,
    Recorded,
    assert_log_clean,
    backend,
    calls,
    free_port,
    run_driver,
    steps,
)

__all__ = ["backend"]  # the fixture (tests/support/php_module.py), used by name

pytestmark = [
    pytest.mark.php,
    pytest.mark.skipif(PHP is None, reason="php-cli is not installed (apt-get install php-cli php-curl)"),
]

NEVER_SENT = {"serverusername", "serverpassword", "serveraccesshash", "model"}
PASSWORD_ROUTES = {"/v1/accounts/create", "/v1/accounts/change-password"}
SIGNATURE_401 = (
    "The backend refused the request signature: check the server's Access Hash (signing secret) "
    "and the clocks."
)


# ---------------------------------------------------------------------------------------------- helpers


def expected_signature(secret: str, timestamp: str, route: str, body: bytes) -> str:
    """API.md section 1, written out again here rather than imported, so the test is independent."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + route.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def assert_signed(req: Recorded, route: str, secret: str = SECRET) -> None:
    headers = {k.lower(): v for k, v in req.headers.items()}
    ts = headers["x-csw-timestamp"]
    assert ts.isdigit() and abs(time.time() - int(ts)) < 30
    assert headers["x-csw-signature"] == expected_signature(secret, ts, route, req.body)
    assert headers["content-type"].startswith("application/json")


# ------------------------------------------------------------------------------------ contract tests

ALL_CALLS = [
    ("create", "CreateAccount", "/v1/accounts/create"),
    ("suspend", "SuspendAccount", "/v1/accounts/suspend"),
    ("unsuspend", "UnsuspendAccount", "/v1/accounts/unsuspend"),
    ("password", "ChangePassword", "/v1/accounts/change-password"),
    ("package", "ChangePackage", "/v1/accounts/change-package"),
    ("sso", "ServiceSingleSignOn", "/v1/accounts/sso"),
    ("clientarea", "ClientArea", "/v1/accounts/overview"),
    ("admintab", "AdminServicesTabFields", "/v1/accounts/overview"),
    ("list", "ListAccounts", "/v1/accounts/list"),
    ("test", "TestConnection", "/v1/connection/test"),
    ("groups", "UserGroupLoader", "/v1/user-groups"),
    ("terminate", "TerminateAccount", "/v1/accounts/terminate"),
]


def test_every_function_signs_its_route_and_returns_what_whmcs_expects(backend: FakeBackend) -> None:
    # Given a password with characters JSON escapes, and every module function
    password = 'p"a/ss\\wörd-9'
    scenario = {
        "params": {"password": password, "serviceid": 42, "status": "Active"},
        "steps": [
            {"name": n, "fn": fn, **({"model": True} if fn == "CreateAccount" else {})}
            for n, fn, _ in ALL_CALLS
        ],
    }
    # When
    report = run_driver(backend.host, SECRET, scenario)
    # Then each call hit its route once, signed for that exact route, with the right body
    assert [backend.route_of(r.path) for r in backend.requests] == [route for _, _, route in ALL_CALLS]
    for req, (_, _, route) in zip(backend.requests, ALL_CALLS, strict=True):
        assert_signed(req, route)
        body = req.json
        assert NEVER_SENT.isdisjoint(body), route
        assert ("password" in body) == (route in PASSWORD_ROUTES), route
        assert body["serviceid"] == 42 and body["clientsdetails"]["email"] == "ann@example.org"
        if route in PASSWORD_ROUTES:
            assert body["password"] == password
    s = steps(report)
    for name in ("create", "suspend", "unsuspend", "password", "package", "terminate"):
        assert s[name]["result"] == "success", s[name]
    assert s["create"]["saved_properties"] == {"Username": "ann@example.org"}
    assert s["sso"]["result"] == {
        "success": True,
        "redirectTo": "https://cs.example.net/?username=ann%40example.org&token=tok%2Fen123",
    }
    assert s["test"]["result"] == {"success": True, "error": ""}
    assert s["groups"]["result"] == {"1": "Default", "7": "Premium <EU>"}
    assert s["list"]["result"]["success"] is True
    assert [(a["uniqueIdentifier"], a["status"]) for a in s["list"]["result"]["accounts"]] == [
        ("ann@example.org", "Active"),
        ("bob@example.org", "Suspended"),
    ]
    assert all(isinstance(v, str) for a in s["list"]["result"]["accounts"] for v in a.values())
    ca = s["clientarea"]["result"]
    assert ca["templatefile"] == "clientarea"
    assert ca["vars"]["sso_url"] == "clientarea.php?action=productdetails&id=42&dosinglesignon=1"
    assert ca["vars"]["run_rate_display"] == "€12.30" and ca["vars"]["currency"] == "EUR"
    assert ca["vars"]["projects"] == 2 and ca["vars"]["services"] == 5 and ca["vars"]["active"] is True
    assert ca["vars"]["error"] == ""
    assert s["admintab"]["result"] == {
        "Username": "ann@example.org",
        "ComputeStacks user id": "17",
        "Status": "Active",
        "Projects": "2",
        "Services": "5",
        "Estimated Monthly": "€12.30 EUR",
        "Current Usage": "€4.05 EUR",
    }
    # and every body carries its own nonce, so no two signatures are alike even within one second
    nonces = [r.json["csw_nonce"] for r in backend.requests]
    assert len(set(nonces)) == len(nonces) and all(len(n) == 24 for n in nonces)
    # and the module log holds every call, with nothing secret left in it
    assert_log_clean(report)
    logged_actions = [e["action"] for st in report["steps"] for e in st["module_log"]]
    assert logged_actions == [fn for _, fn, _ in ALL_CALLS]
    sso_log = s["sso"]["module_log"][0]
    assert "tok%2Fen123" not in sso_log["response"] and "tok/en123" not in sso_log["response"]


def test_identical_calls_in_one_second_are_signed_differently(backend: FakeBackend) -> None:
    # Given the same call three times in a row (a double click; Create run again)
    report = run_driver(backend.host, SECRET, {"steps": [{"name": f"s{i}", "fn": "SuspendAccount"} for i in range(3)]})
    # Then the bodies differ only by their nonce, so the backend cannot take one for a replay of another
    assert [st["result"] for st in report["steps"]] == ["success"] * 3
    bodies = [r.json for r in backend.requests]
    assert len({b.pop("csw_nonce") for b in bodies}) == 3
    assert bodies[0] == bodies[1] == bodies[2]
    assert len({r.headers["X-CSW-Signature"] for r in backend.requests}) == 3


def test_meta_data_and_config_options() -> None:
    report = run_driver("127.0.0.1:9", SECRET, calls(meta="MetaData", config="ConfigOptions", hooks="Hooks"))
    s = steps(report)
    assert s["meta"]["result"] == {
        "DisplayName": "ComputeStacks",
        "APIVersion": "1.1",
        "RequiresServer": True,
        "ServiceSingleSignOnLabel": "Launch Control Panel",
        "AdminSingleSignOnLabel": False,
        "ListAccountsUniqueIdentifierDisplayName": "Username",
        "ListAccountsUniqueIdentifierField": "username",
        "ListAccountsProductField": "configoption1",
    }
    config = s["config"]["result"]
    assert list(config) == ["User Group", "Apply Credit"]
    assert config["User Group"]["Loader"] == "computestacks_UserGroupLoader"
    assert config["Apply Credit"]["Type"] == "yesno" and config["Apply Credit"]["Default"] == "on"
    assert "credit" in config["Apply Credit"]["Description"].lower()
    assert s["hooks"]["result"] == [{"point": "OrderPaid", "priority": 1, "callable": True},
                                    {"point": "InvoicePaid", "priority": 1, "callable": True}]


def test_admin_values_are_escaped(backend: FakeBackend) -> None:
    backend.answer("/v1/accounts/overview", 200, {**OVERVIEW, "username": "<script>x</script>@example.org"})
    report = run_driver(backend.host, SECRET, {"steps": [{"name": "tab", "fn": "AdminServicesTabFields"}]})
    assert steps(report)["tab"]["result"]["Username"] == "&lt;script&gt;x&lt;/script&gt;@example.org"


def test_backend_errors_become_whmcs_error_returns(backend: FakeBackend) -> None:
    # Given a backend that refuses or fails every route
    not_found = {
        "result": "error",
        "code": "account_not_found",
        "message": "Service 99 has no ComputeStacks account.",
    }
    for route in ("/v1/accounts/suspend", "/v1/accounts/sso", "/v1/accounts/overview"):
        backend.answer(route, 404, not_found)
    backend.answer("/v1/accounts/unsuspend", 502, b"<html>Bad gateway</html>", "text/html")
    backend.answer(
        "/v1/accounts/list",
        504,
        {"result": "error", "code": "upstream_timeout", "message": "ComputeStacks did not answer in time."},
    )
    backend.answer(
        "/v1/user-groups",
        502,
        {
            "result": "error",
            "code": "upstream_error",
            "message": "ComputeStacks rejected the API credentials.",
        },
    )
    backend.answer(
        "/v1/connection/test",
        502,
        {"result": "error", "code": "upstream_error", "message": "WHMCS rejected the API credentials."},
    )
    backend.answer("/v1/accounts/create", 200, b"not json")
    names = ["suspend", "sso", "clientarea", "admintab", "unsuspend", "list", "groups", "test", "create"]
    fns = [
        "SuspendAccount",
        "ServiceSingleSignOn",
        "ClientArea",
        "AdminServicesTabFields",
        "UnsuspendAccount",
        "ListAccounts",
        "UserGroupLoader",
        "TestConnection",
        "CreateAccount",
    ]
    # When
    report = run_driver(
        backend.host,
        SECRET,
        {
            "params": {"serviceid": 99},
            "steps": [{"name": n, "fn": f} for n, f in zip(names, fns, strict=True)],
        },
    )
    # Then
    s = steps(report)
    assert s["suspend"]["result"] == "Service 99 has no ComputeStacks account."
    assert s["sso"]["result"] == {"success": False, "errorMsg": "Service 99 has no ComputeStacks account."}
    assert s["clientarea"]["result"]["templatefile"] == "clientarea"
    assert s["clientarea"]["result"]["vars"]["error"]
    assert s["admintab"]["result"] == {
        "ComputeStacks": "Account details unavailable: Service 99 has no ComputeStacks account."
    }
    assert (
        s["unsuspend"]["result"] == "The ComputeStacks backend answered HTTP 502 without a readable message."
    )
    assert s["list"]["result"] == {
        "success": False,
        "error": f"The ComputeStacks backend at http://{backend.host} answered HTTP 504: "
        "ComputeStacks did not answer in time.",
    }
    assert s["groups"]["result"]["exception"] == "ComputeStacks rejected the API credentials."
    assert s["groups"]["result"]["class"] == "Exception"
    assert s["test"]["result"] == {"success": False, "error": "WHMCS rejected the API credentials."}
    assert s["create"]["result"] == "The ComputeStacks backend answered HTTP 200 without a readable message."
    assert_log_clean(report)


def test_refused_signature_says_what_to_check(backend: FakeBackend) -> None:
    backend.answer(
        "/v1/accounts/suspend",
        401,
        {"result": "error", "code": "signature_invalid", "message": "The request signature does not match."},
    )
    report = run_driver(backend.host, "wrong-secret", {"steps": [{"name": "s", "fn": "SuspendAccount"}]})
    assert steps(report)["s"]["result"] == SIGNATURE_401 + " The request signature does not match."
    assert_signed(backend.requests[0], "/v1/accounts/suspend", "wrong-secret")
    assert_log_clean(report)


def test_base_path_is_not_signed_and_first_of_several_secrets_signs(backend: FakeBackend) -> None:
    # Given a Hostname with a stage path, and an Access Hash holding two secrets during a rotation
    backend.base_path = "/Prod"
    report = run_driver(
        backend.host, f" {SECRET} , old-secret-2 ", {"steps": [{"name": "s", "fn": "SuspendAccount"}]}
    )
    # Then the URL has the path, the signature covers the bare route, made with the first secret
    assert steps(report)["s"]["result"] == "success"
    assert backend.requests[0].path == "/Prod/v1/accounts/suspend"
    assert_signed(backend.requests[0], "/v1/accounts/suspend", SECRET)
    assert_log_clean(report)


def test_unreachable_backend_is_retried_once_then_named() -> None:
    port = free_port()  # nothing listens there
    report = run_driver(
        f"127.0.0.1:{port}",
        SECRET,
        {"steps": [{"name": "s", "fn": "SuspendAccount"}, {"name": "t", "fn": "TestConnection"}]},
    )
    s = steps(report)
    refused = (
        f"The ComputeStacks backend could not be reached at http://127.0.0.1:{port}: connection refused "
        "(tried twice). Nothing was sent; check the server's Hostname and Secure settings, DNS and firewall."
    )
    assert s["s"]["result"] == refused
    assert s["t"]["result"] == {"success": False, "error": refused}
    # a refused connection fails fast: no time limit is waited out
    assert s["s"]["seconds"] < 2 and s["t"]["seconds"] < 2
    # one retry per call, each attempt logged
    assert len(report["retry_sleeps"]) == 2
    assert len(s["s"]["module_log"]) == 2 and "retrying once" in s["s"]["module_log"][0]["response"]
    assert_log_clean(report)


def test_secure_server_uses_https(backend: FakeBackend) -> None:
    report = run_driver(
        backend.host,
        SECRET,
        {"params": {"serversecure": "on"}, "steps": [{"name": "s", "fn": "SuspendAccount"}]},
    )
    # The fake speaks plain HTTP, so the TLS handshake fails: what matters is the scheme used.
    assert steps(report)["s"]["result"].startswith(
        f"The ComputeStacks backend could not be reached at https://{backend.host}: the TLS (SSL) connection failed"
    )


def test_missing_server_settings_are_explained() -> None:
    report = run_driver(
        "",
        "",
        {
            "steps": [
                {"name": "nohost", "fn": "SuspendAccount"},
                {"name": "nosecret", "fn": "SuspendAccount", "params": {"serverhostname": "127.0.0.1:9"}},
            ]
        },
    )
    s = steps(report)
    assert "no Hostname" in s["nohost"]["result"]
    assert "no Access Hash" in s["nosecret"]["result"]


# ---------------------------------------------------------------------------- OrderPaid hook (stand-ins)


def _clients_products(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "result": "success",
        "totalresults": len(rows),
        "startnumber": 0,
        "numreturned": len(rows),
        "products": {"product": rows},
    }


def _server(host: str, secret: str = SECRET) -> dict[str, Any]:
    return {
        "serverhostname": host,
        "serversecure": False,
        "serveraccesshash": secret,
        "serverpassword": "unused-server-password",
        "serverusername": "unused",
    }


def test_order_paid_posts_the_orders_computestacks_lines(backend: FakeBackend) -> None:
    # Given order 500 with a CS product (Apply Credit on), a CS product with it off and a cPanel product,
    # plus a CS service of an older order
    rows = [
        {"id": 11, "pid": 3, "orderid": 500, "serverid": 1},
        {"id": 12, "pid": 4, "orderid": 500, "serverid": 1},
        {"id": 13, "pid": 5, "orderid": 500, "serverid": 2},
        {"id": 10, "pid": 3, "orderid": 499, "serverid": 1},
    ]
    step = {
        "name": "hook",
        "fn": "OrderPaid",
        "vars": {"orderId": 500, "invoiceId": 900, "userId": 7},
        "localapi": {"GetClientsProducts": _clients_products(rows)},
        "capsule": {
            "tblproducts": [
                {"id": 3, "servertype": "computestacks", "configoption2": "on"},
                {"id": 4, "servertype": "computestacks", "configoption2": ""},
                {"id": 5, "servertype": "cpanel", "configoption2": "on"},
            ]
        },
        "module_servers": {
            "11": _server(backend.host),
            "12": _server(backend.host),
            "13": {"serverhostname": "cpanel.example.net", "serveraccesshash": "x"},
        },
    }
    # When
    report = run_driver(backend.host, SECRET, {"steps": [step]})
    # Then one signed request carries both CS lines of that order
    assert [backend.route_of(r.path) for r in backend.requests] == ["/v1/hooks/order-paid"]
    assert_signed(backend.requests[0], "/v1/hooks/order-paid")
    assert {k: v for k, v in backend.requests[0].json.items() if k != "csw_nonce"} == {
        "orderId": 500,
        "invoiceId": 900,
        "userId": 7,
        "lines": [{"serviceid": 11, "apply_credit": True}, {"serviceid": 12, "apply_credit": False}],
    }
    result = steps(report)["hook"]["result"]
    assert result["errors"] == []
    assert result["posted"][0]["credited"] == "25.00" and result["posted"][0]["currency"] == "EUR"
    assert steps(report)["hook"]["localapi_calls"] == ["GetClientsProducts"]
    assert any("deposit credit is 25.00 EUR." in a["message"] for a in steps(report)["hook"]["activity"])
    assert_log_clean(report)


def test_order_paid_without_capsule_uses_get_products_and_credit_on(backend: FakeBackend) -> None:
    rows = [
        {"id": 21, "pid": 8, "orderid": 600, "serverid": 1},
        {"id": 22, "pid": 9, "orderid": 600, "serverid": 1},
    ]
    products = {
        "result": "success",
        "totalresults": 2,
        "products": {
            "product": [
                {"pid": 8, "module": "computestacks", "name": "Cloud"},
                {"pid": 9, "module": "cpanel", "name": "Web"},
            ]
        },
    }
    step = {
        "name": "hook",
        "fn": "OrderPaid",
        "vars": {"orderId": 600, "invoiceId": 901, "userId": 7},
        "localapi": {"GetClientsProducts": _clients_products(rows), "GetProducts": products},
        "module_servers": {"21": _server(backend.host), "22": _server(backend.host)},
    }
    report = run_driver(backend.host, SECRET, {"steps": [step]})
    assert backend.requests[0].json["lines"] == [{"serviceid": 21, "apply_credit": True}]
    assert steps(report)["hook"]["localapi_calls"] == ["GetClientsProducts", "GetProducts", "GetProducts"]


def test_order_paid_failures_are_logged_never_thrown(backend: FakeBackend) -> None:
    # Given a backend that fails, and (second step) a WHMCS that cannot list the services
    backend.answer(
        "/v1/hooks/order-paid",
        502,
        {"result": "error", "code": "upstream_error", "message": "WHMCS answered with an error."},
    )
    rows = [{"id": 31, "pid": 3, "orderid": 700, "serverid": 1}]
    base = {
        "fn": "OrderPaid",
        "vars": {"orderId": 700, "invoiceId": 902, "userId": 7},
        "via_hook": True,
        "capsule": {"tblproducts": [{"id": 3, "servertype": "computestacks", "configoption2": "on"}]},
        "module_servers": {"31": _server(backend.host)},
    }
    scenario = {
        "steps": [
            {**base, "name": "backend_fails", "localapi": {"GetClientsProducts": _clients_products(rows)}},
            {
                **base,
                "name": "whmcs_fails",
                "localapi": {"GetClientsProducts": {"result": "error", "message": "Client Not Found"}},
            },
        ]
    }
    # When the registered hook runs
    report = run_driver(backend.host, SECRET, scenario)
    # Then nothing escapes to WHMCS and the Activity Log says why
    s = steps(report)
    assert s["backend_fails"]["result"]["hooks_called"] == 1
    assert any(
        "WHMCS answered with an error." in a["message"] and a["userid"] == 7
        for a in s["backend_fails"]["activity"]
    )
    assert any("Client Not Found" in a["message"] for a in s["whmcs_fails"]["activity"])
    assert_log_clean(report)


# --------------------------------------------------------------------------------- live stack (e2e)


def _id(value: Any) -> int:
    """Sandbox helpers return a record or a bare id; take the id either way."""
    if isinstance(value, dict):
        return int(value["id"] if "id" in value else value["pid"])
    if isinstance(value, tuple | list):
        return int(value[0])
    return int(value)


def _cs_user_by_email(cs: Any, email: str) -> dict[str, Any]:
    found = [u for u in cs.users.values() if str(u.get("email", "")).lower() == email.lower()]
    assert len(found) == 1, f"expected one ComputeStacks user {email}, found {found}"
    user: dict[str, Any] = found[0]
    return user


@dataclass
class Seeded:
    params: dict[str, Any]
    group: int
    group2: int
    client_id: int
    email: str


def _seed(live_stack: Any) -> Seeded:
    cs, wh = live_stack.cs, live_stack.whmcs
    group = _id(cs.add_user_group("Default"))
    group2 = _id(cs.add_user_group("Premium"))
    email = "ann.lee@example.org"
    client = wh.add_client("Ann", "Lee", email, currency_code="EUR")
    client_id = _id(client)
    pid = _id(
        wh.add_product("Cloud Hosting", module="computestacks", configoption1=str(group), configoption2="on")
    )
    service_id = _id(wh.add_service(client_id, pid, status="Pending", password="Xy7pQ2mN4k"))
    params = {
        "serviceid": service_id,
        "accountid": service_id,
        "userid": client_id,
        "pid": pid,
        "configoption1": str(group),
        "configoption2": "on",
        "username": "",
        "password": "Xy7pQ2mN4k",
        "status": "Pending",
        "clientsdetails": {
            "client_id": client_id,
            "userid": client_id,
            "id": client_id,
            "firstname": "Ann",
            "lastname": "Lee",
            "fullname": "Ann Lee",
            "email": email,
            "companyname": "",
            "country": "US",
            "currency": int(client["currency"]),
            "currency_code": "EUR",
            "telephoneNumber": "+1.5035550100",
        },
    }
    return Seeded(params=params, group=group, group2=group2, client_id=client_id, email=email)


def test_module_lifecycle_against_the_live_stack(live_stack: Any) -> None:
    # Given a WHMCS client, product and pending service, and two ComputeStacks user groups
    seeded = _seed(live_stack)
    cs = live_stack.cs
    secret = live_stack.signing_secret

    # When WHMCS provisions the service and then uses every module function
    report = run_driver(
        live_stack.api_host,
        secret,
        {
            "params": seeded.params,
            "steps": [
                {"name": "test", "fn": "TestConnection"},
                {"name": "groups", "fn": "UserGroupLoader"},
                {"name": "create", "fn": "CreateAccount", "model": True},
                {"name": "create_again", "fn": "CreateAccount", "model": True},
            ],
        },
    )
    s = steps(report)
    # Then
    assert s["test"]["result"] == {"success": True, "error": ""}
    assert s["groups"]["result"].get(str(seeded.group)) == "Default"
    assert s["groups"]["result"].get(str(seeded.group2)) == "Premium"
    assert s["create"]["result"] == "success", s["create"]
    username = s["create"]["saved_properties"]["Username"]
    user = _cs_user_by_email(cs, username)
    # the ComputeStacks login: the service username if it is an email, else one generated from the
    # client's email and the ids (the old module's rule), so it need not be the client's own email
    assert "@" in username
    assert user["active"] is True and int(user["user_group_id"]) == seeded.group
    assert s["create_again"]["result"] == "success"  # safe to repeat (API.md section 3)
    assert s["create_again"]["saved_properties"] == {"Username": username}
    assert len([u for u in cs.users.values() if u.get("email", "").lower() == username.lower()]) == 1
    assert_log_clean(report)

    active = {"username": username, "status": "Active"}
    # Suspend the active service, then unsuspend it: the ComputeStacks user follows each time
    for fn, status, active_after in (("SuspendAccount", "Active", False), ("UnsuspendAccount", "Suspended", True)):
        report = run_driver(
            live_stack.api_host,
            secret,
            {
                "params": {**seeded.params, **active, "status": status},
                "steps": [{"name": fn, "fn": fn}],
            },
        )
        assert steps(report)[fn]["result"] == "success", fn
        assert _cs_user_by_email(cs, username)["active"] is active_after, fn

    report = run_driver(
        live_stack.api_host,
        secret,
        {
            "params": {**seeded.params, **active},
            "steps": [
                {"name": "password", "fn": "ChangePassword", "params": {"password": "N3w-Pa55word!"}},
                {"name": "package", "fn": "ChangePackage", "params": {"configoption1": str(seeded.group2)}},
                {"name": "sso", "fn": "ServiceSingleSignOn"},
                {"name": "clientarea", "fn": "ClientArea"},
                {"name": "admintab", "fn": "AdminServicesTabFields"},
                {"name": "list", "fn": "ListAccounts"},
            ],
        },
    )
    s = steps(report)
    assert s["password"]["result"] == "success"
    assert s["package"]["result"] == "success"
    assert int(_cs_user_by_email(cs, username)["user_group_id"]) == seeded.group2
    sso = s["sso"]["result"]
    assert sso["success"] is True, sso
    assert quote(username, safe="") in sso["redirectTo"] and "token=" in sso["redirectTo"]
    ca = s["clientarea"]["result"]
    assert ca["templatefile"] == "clientarea" and ca["vars"]["error"] == ""
    assert ca["vars"]["username"] == username and ca["vars"]["currency"]
    assert ca["vars"]["sso_url"] == (
        f"clientarea.php?action=productdetails&id={seeded.params['serviceid']}&dosinglesignon=1"
    )
    assert ca["vars"]["run_rate_display"] and ca["vars"]["current_usage_display"]
    tab = s["admintab"]["result"]
    assert tab["Username"] == username and tab["Status"] == "Active"
    assert set(tab) == {
        "Username",
        "ComputeStacks user id",
        "Status",
        "Projects",
        "Services",
        "Estimated Monthly",
        "Current Usage",
        # the backend's ledger figures (API.md §3 additions): this period's usage and the billing status
        "Usage This Period",
        "Billed Periods",
        "Last Billed",
        "Needs Attention",
    }
    listed = s["list"]["result"]
    assert listed["success"] is True
    mine = [a for a in listed["accounts"] if a["uniqueIdentifier"] == username]
    assert mine and mine[0]["status"] == "Active" and mine[0]["product"] == str(seeded.group2)
    assert_log_clean(report)

    # A failing call returns the API's own message; a wrong secret gets the clear 401 text
    report = run_driver(
        live_stack.api_host,
        secret,
        {
            "params": {**seeded.params, **active},
            "steps": [
                {
                    "name": "unknown",
                    "fn": "SuspendAccount",
                    "params": {"serviceid": 987654, "accountid": 987654, "username": "nobody@example.org"},
                },
                {"name": "terminate", "fn": "TerminateAccount"},
            ],
        },
    )
    s = steps(report)
    unknown = s["unknown"]["result"]
    assert unknown != "success" and unknown and "without a readable message" not in unknown
    assert s["terminate"]["result"] == "success"
    assert _cs_user_by_email(cs, username)["active"] is False  # terminate suspends, never deletes

    report = run_driver(
        live_stack.api_host,
        "not-the-secret",
        {"params": {**seeded.params, **active}, "steps": [{"name": "bad", "fn": "SuspendAccount"}]},
    )
    assert steps(report)["bad"]["result"].startswith(SIGNATURE_401)
    assert_log_clean(report)


def test_order_paid_hook_credits_the_deposit_once(live_stack: Any) -> None:
    # Given a paid order with a CS product (Apply Credit on), a CS product with it off and another module's
    wh = live_stack.whmcs
    client = _id(wh.add_client("Bo", "Ng", "bo.ng@example.org", currency_code="EUR"))
    on = _id(wh.add_product("Cloud Deposit", module="computestacks", configoption1="1", configoption2="on"))
    off = _id(wh.add_product("Cloud No Credit", module="computestacks", configoption1="1", configoption2=""))
    other = _id(wh.add_product("Web Hosting", module="cpanel"))
    s_on = _id(wh.add_service(client, on))
    s_off = _id(wh.add_service(client, off))
    s_other = _id(wh.add_service(client, other))
    order_id, invoice_id = wh.add_order(client, [s_on, s_off, s_other], amounts=["25.00", "10.00", "5.00"])
    server = {
        "serverhostname": live_stack.api_host,
        "serversecure": False,
        "serveraccesshash": live_stack.signing_secret,
    }
    step = {
        "fn": "OrderPaid",
        "vars": {"orderId": order_id, "invoiceId": invoice_id, "userId": client},
        # tblproducts as WHMCS holds it (the API cannot show configoption2)
        "capsule": {
            "tblproducts": [
                {"id": p["pid"], "servertype": p["module"], "configoption2": p["configoption2"]}
                for p in wh.products
            ]
        },
        "module_servers": {str(sid): server for sid in (s_on, s_off, s_other)},
    }
    # When WHMCS fires OrderPaid twice (localAPI answered by the WHMCS sandbox)
    report = run_driver(
        live_stack.api_host,
        live_stack.signing_secret,
        {
            "localapi_proxy": {"url": wh.url, "identifier": wh.identifier, "secret": wh.secret},
            "steps": [{**step, "name": "first"}, {**step, "name": "again", "via_hook": True}],
        },
    )
    # Then the module sent the order's CS lines, and the client got exactly one credit of the deposit
    first = steps(report)["first"]["result"]
    assert first["errors"] == [], first
    assert first["posted"][0]["payload"]["lines"] == [
        {"serviceid": s_on, "apply_credit": True},
        {"serviceid": s_off, "apply_credit": False},
    ]
    assert first["posted"][0]["credited"] == "25.00" and first["posted"][0]["currency"] == "EUR"
    credits = [c for c in wh.credits if int(c["clientid"]) == client]
    assert len(credits) == 1 and credits[0]["amount"] == "25.00"
    for name in ("first", "again"):  # a repeated hook is answered the same, and credits nothing more
        messages = [a["message"] for a in steps(report)[name]["activity"]]
        assert messages == [f"ComputeStacks: order #{order_id} deposit credit is 25.00 EUR."], messages
    assert_log_clean(report)


def test_list_accounts_pages_through_every_user(live_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 75 ComputeStacks users (and the admin), and the module paging 30 users per answer
    for i in range(75):
        live_stack.cs.add_user(f"sync{i:02d}@example.org", f"F{i}", f"L{i:02d}", active=(i % 4 != 0))
    monkeypatch.setenv("CSW_SYNC_PAGE_SIZE", "30")
    # When WHMCS runs the Server Sync Tool
    report = run_driver(
        live_stack.api_host,
        live_stack.signing_secret,
        {
            "params": {"serverhostname": live_stack.api_host, "serversecure": False,
                       "serveraccesshash": live_stack.signing_secret},
            "steps": [{"name": "list", "fn": "ListAccounts"}],
        },
    )
    # Then it got every non-admin user, through three signed calls of one ComputeStacks page each
    result = steps(report)["list"]["result"]
    assert result["success"] is True
    emails = [a["email"] for a in result["accounts"]]
    assert sorted(emails) == sorted(f"sync{i:02d}@example.org" for i in range(75))
    assert {a["status"] for a in result["accounts"] if a["email"] == "sync00@example.org"} == {"Suspended"}
    lists = [line for line in live_stack.log_lines if "/v1/accounts/list -> 200" in line]
    assert len(lists) == 3
    assert len([r for r in live_stack.cs.requests if r["path"].endswith("/admin/users")]) == 3
