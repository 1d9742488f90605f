"""WhmcsClient against the WHMCS sandbox, a real HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs.adapters.whmcs import Currency, WhmcsApiError, WhmcsClient, WhmcsPermissionDenied
from cswhmcs.errors import UpstreamAuthFailed, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from sandboxes.whmcs import WhmcsSandbox, parse_form, seed_demo

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox() -> Iterator[WhmcsSandbox]:
    with WhmcsSandbox() as sb:
        yield sb


def client_for(sb: WhmcsSandbox, **kwargs: Any) -> WhmcsClient:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("connect_timeout", 0.5)
    kwargs.setdefault("sleep", lambda _s: None)
    return WhmcsClient(sb.url, sb.identifier, sb.secret, sb.access_key, **kwargs)


@pytest.fixture
def whmcs(sandbox: WhmcsSandbox) -> Iterator[WhmcsClient]:
    client = client_for(sandbox)
    yield client
    client.close()


def add_item(client: WhmcsClient, client_id: int, **overrides: Any) -> int:
    args: dict[str, Any] = {"client_id": client_id, "description": "Containers 2025-03 (ann@example.org)",
                            "amount": Decimal("12.30"), "quantity": Decimal("720"), "unit_mode": "quantity",
                            "invoice_action": "duedate", "due_date": date(2025, 4, 1)}
    args.update(overrides)
    return client.add_billable_item(**args)


def raw_post(sb: WhmcsSandbox, **data: str) -> httpx.Response:
    return httpx.post(sb.url, data={"responsetype": "json", **data}, timeout=2)


# ---------------------------------------------------------------------- auth and access control


def test_wrong_secret_is_an_auth_failure(sandbox: WhmcsSandbox) -> None:
    # Given
    client = WhmcsClient(sandbox.url, sandbox.identifier, "wrong-secret-123", sleep=lambda _s: None)
    # When
    with pytest.raises(UpstreamAuthFailed) as info:
        client.get_currencies()
    # Then
    assert info.value.message == "WHMCS rejected the API credentials: Authentication Failed."
    assert info.value.http_status == 403
    assert "wrong-secret-123" not in str(info.value)
    assert sandbox.requests[-1]["params"] == {"responsetype": "json"}  # credentials never logged


def test_unknown_identifier_is_an_auth_failure(sandbox: WhmcsSandbox) -> None:
    # Given
    client = WhmcsClient(sandbox.url, "nobody-identifier", sandbox.secret, sleep=lambda _s: None)
    # When / Then
    with pytest.raises(UpstreamAuthFailed, match="Invalid or missing credentials"):
        client.get_health_status()


def test_username_password_alias_is_accepted(sandbox: WhmcsSandbox) -> None:
    # Given / When
    response = raw_post(sandbox, action="GetHealthStatus", username=sandbox.identifier,
                        password=sandbox.secret)
    # Then
    assert response.status_code == 200
    assert response.json()["result"] == "success"
    assert response.json()["checks"]["danger"] is None
    assert sandbox.requests[-1] == {"action": "GetHealthStatus", "params": {"responsetype": "json"}}


def test_denied_whmcsdetails_gives_no_version(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    sandbox.deny_actions = {"WhmcsDetails"}
    # When
    version = whmcs.version()
    # Then
    assert version is None
    assert whmcs.request_count == 1


def test_role_allow_list_names_the_action(sandbox: WhmcsSandbox) -> None:
    # Given
    sandbox.add_credential("billing-only", "billing-secret", allowed_actions=["AddBillableItem"])
    client = WhmcsClient(sandbox.url, "billing-only", "billing-secret", sleep=lambda _s: None)
    # When
    with pytest.raises(WhmcsPermissionDenied) as info:
        client.get_clients_products(clientid=1)
    # Then
    assert info.value.action == "GetClientsProducts"
    assert "billing-secret" not in info.value.message


def test_ip_allow_list_and_access_key_bypass(sandbox: WhmcsSandbox) -> None:
    # Given
    sandbox.allowed_ips = {"203.0.113.9"}
    without_key = WhmcsClient(sandbox.url, sandbox.identifier, sandbox.secret, sleep=lambda _s: None)
    with_key = client_for(sandbox)
    # When / Then
    with pytest.raises(UpstreamAuthFailed, match="Invalid IP 127.0.0.1"):
        without_key.get_health_status()
    assert with_key.get_health_status()["result"] == "success"


def test_unknown_action_and_case_insensitive_dispatch(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given / When
    with pytest.raises(WhmcsApiError) as info:
        whmcs.call("UpdateBillableItem", {"id": 1}, retry=False)
    lower = whmcs.call("whmcsdetails", retry=True)
    # Then
    assert info.value.whmcs_message == 'Invalid API Action: "updatebillableitem" is not a valid API action'
    assert lower["whmcs"]["version"] == "8.10.1"


def test_json_only_when_asked(sandbox: WhmcsSandbox) -> None:
    # Given / When
    response = httpx.post(sandbox.url, data={"action": "WhmcsDetails", "identifier": sandbox.identifier,
                                             "secret": sandbox.secret}, timeout=2)
    # Then
    assert response.status_code == 200
    assert "application/json" not in response.headers["content-type"]
    assert response.text.startswith("result=success")


# ---------------------------------------------------------------------- reads


def test_currencies_have_no_default_flag(whmcs: WhmcsClient, sandbox: WhmcsSandbox) -> None:
    # Given
    sandbox.add_currency("CHF", "", " CHF", "0.88")
    # When
    currencies = whmcs.get_currencies()
    # Then
    assert currencies[:2] == [Currency(1, "USD", "$", " USD", Decimal("1.00000")),
                              Currency(2, "EUR", "€", " EUR", Decimal("0.92000"))]
    assert [c.code for c in currencies] == ["USD", "EUR", "GBP", "CHF"]
    assert currencies[3].rate == Decimal("0.88000")
    auth = {"identifier": sandbox.identifier, "secret": sandbox.secret}
    raw = raw_post(sandbox, action="GetCurrencies", **auth).json()
    assert raw["currencies"]["currency"][0] == {"id": 1, "code": "USD", "prefix": "$", "suffix": " USD",
                                                "format": "1", "rate": "1.00000"}


@pytest.mark.parametrize("numeric_strings", [False, True])
def test_client_details_and_currency(sandbox: WhmcsSandbox, whmcs: WhmcsClient,
                                     numeric_strings: bool) -> None:
    # Given
    sandbox.numeric_strings = numeric_strings
    eur = sandbox.add_client("Jan", "Berg", "jan@example.de", currency_code="EUR", credit="5.5")
    # When
    record = whmcs.get_client(eur["id"])
    # Then
    assert record["id"] == record["client_id"] == record["userid"] == eur["id"]
    assert record["currency"] == 2 and record["currency_code"] == "EUR"
    assert record["credit"] == Decimal("5.50")
    with pytest.raises(WhmcsApiError, match="Client Not Found"):
        whmcs.get_client(999)


def test_client_details_by_email_and_missing_selector(sandbox: WhmcsSandbox) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    auth = {"identifier": sandbox.identifier, "secret": sandbox.secret}
    # When
    by_email = raw_post(sandbox, action="GetClientsDetails", email="ANN@example.org", **auth).json()
    neither = raw_post(sandbox, action="GetClientsDetails", **auth).json()
    # Then
    assert by_email["client"]["id"] == ann["id"] and by_email["email"] == "ann@example.org"
    assert neither == {"result": "error", "message": "Either clientid Or email Is Required"}


@pytest.mark.parametrize("numeric_strings", [False, True])
def test_clients_products_filters_and_pages(sandbox: WhmcsSandbox, numeric_strings: bool) -> None:
    # Given
    sandbox.numeric_strings = numeric_strings
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    bob = sandbox.add_client("Bob", "Ray", "bob@example.org")
    cloud = sandbox.add_product("Cloud Account")
    ids = [sandbox.add_service(ann["id"], cloud["pid"], username=f"a{i}@example.org")["id"] for i in range(5)]
    sandbox.add_service(bob["id"], cloud["pid"], username="bob@example.org")
    client = client_for(sandbox)
    client.page_size = 2
    # When
    services = client.get_clients_products(clientid=ann["id"])
    one = client.get_clients_products(username="bob@example.org")
    none = client.get_clients_products(serviceid=999)
    # Then
    assert [s["id"] for s in services] == ids
    assert all(s["clientid"] == ann["id"] and s["pid"] == cloud["pid"] for s in services)
    assert services[0]["name"] == "Cloud Account" and services[0]["status"] == "Active"
    assert "module" not in services[0]
    assert [s["username"] for s in one] == ["bob@example.org"]
    assert none == []
    assert [r["params"]["limitstart"] for r in sandbox.requests[:3]] == ["0", "2", "4"]


def test_products_expose_module_but_not_module_settings(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    cloud = sandbox.add_product("Cloud Account", configoption1="5", configoption2="")
    sandbox.add_product("Shared Hosting", module="cpanel", gid=2)
    # When
    ours = whmcs.get_products(module="computestacks")
    both = whmcs.get_products(pid=[1, 2])
    # Then
    assert [(p["pid"], p["module"]) for p in ours] == [(cloud["pid"], "computestacks")]
    assert len(both) == 2
    assert "configoption1" not in ours[0]
    assert sandbox.product(cloud["pid"])["configoption2"] == ""


def test_get_invoice_shape(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    cloud = sandbox.add_product("Cloud Account")
    svc = sandbox.add_service(ann["id"], cloud["pid"])
    order_id, invoice_id = sandbox.add_order(ann["id"], [svc["id"]], amounts=["25.00"],
                                             extra_items=[{"type": "Setup", "relid": svc["id"],
                                                           "description": "Setup fee", "amount": "5.00"}])
    # When
    invoice = whmcs.get_invoice(invoice_id)
    # Then
    assert invoice["invoiceid"] == invoice_id and invoice["userid"] == ann["id"]
    assert invoice["status"] == "Paid" and invoice["total"] == Decimal("30.00")
    assert invoice["transactions"] == []
    assert [(i["type"], i["relid"], i["amount"]) for i in invoice["items"]] == [
        ("Hosting", svc["id"], Decimal("25.00")), ("Setup", svc["id"], Decimal("5.00"))]
    assert sandbox.service(svc["id"])["orderid"] == order_id
    with pytest.raises(WhmcsApiError, match="Invoice ID Not Found"):
        whmcs.get_invoice(999)


def test_update_client_product_sets_the_username(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    svc = sandbox.add_service(ann["id"], sandbox.add_product("Cloud Account")["pid"])
    # When
    whmcs.update_client_product(svc["id"], serviceusername="ann@example.org")
    # Then
    assert sandbox.service(svc["id"])["username"] == "ann@example.org"
    with pytest.raises(WhmcsApiError, match="Service ID Not Found"):
        whmcs.update_client_product(999, serviceusername="x")


# ---------------------------------------------------------------------- AddBillableItem


def test_add_billable_item_twice_creates_two_items(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    # When
    first = add_item(whmcs, ann["id"])
    second = add_item(whmcs, ann["id"])
    # Then: WHMCS does not de-duplicate; that is the caller's job
    assert second > first
    items = sandbox.billable_items
    assert len(items) == 2
    assert items[0] == items[0] | {"clientid": ann["id"], "amount": "12.30", "unit": "quantity",
                                   "quantity": "720", "invoiceaction": "duedate", "duedate": "2025-04-01"}


def test_before_82_the_quantity_travels_as_hours() -> None:
    # Given
    with WhmcsSandbox(version="8.1.3") as sb:
        ann = sb.add_client("Ann", "Lee", "ann@example.org")
        client = client_for(sb)
        # When
        assert client.version() == "8.1.3"
        add_item(client, ann["id"], unit_mode="hours", quantity=Decimal("36.5"))
        # Then
        (item,) = sb.billable_items
        assert item["hours"] == "36.5" and item["quantity"] == "36.5"


def test_from_82_on_unit_is_required(sandbox: WhmcsSandbox) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    auth = {"identifier": sandbox.identifier, "secret": sandbox.secret}
    # When
    legacy = raw_post(sandbox, action="AddBillableItem", clientid=str(ann["id"]), description="x",
                      amount="1.00", hours="3", **auth).json()
    # Then
    assert legacy["message"] == "Invalid Unit, please specify either 'hours' or 'quantity'"
    assert sandbox.billable_items == []


def test_hours_mode_also_works_on_82_when_the_version_was_unknown(sandbox: WhmcsSandbox,
                                                                  whmcs: WhmcsClient) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    # When
    add_item(whmcs, ann["id"], unit_mode="hours", quantity=Decimal("3"))
    # Then
    (item,) = sandbox.billable_items
    assert item["unit"] == "hours" and item["quantity"] == "3"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"client_id": 999}, "Client ID not Found"),
    ({"description": ""}, "You must provide a description"),
    ({"invoice_action": "sometime"}, "Invalid Invoice Action"),
    ({"due_date": None}, "Due date is required"),
])
def test_add_billable_item_validation(sandbox: WhmcsSandbox, whmcs: WhmcsClient, overrides: dict[str, Any],
                                      message: str) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    # When
    with pytest.raises(WhmcsApiError) as info:
        fields = dict(overrides)
        add_item(whmcs, fields.pop("client_id", ann["id"]), **fields)
    # Then
    assert info.value.whmcs_message == message
    assert sandbox.billable_items == []


def test_bad_due_date_format(sandbox: WhmcsSandbox) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    # When
    reply = raw_post(sandbox, action="AddBillableItem", identifier=sandbox.identifier, secret=sandbox.secret,
                     clientid=str(ann["id"]), description="x", amount="1.00", unit="quantity", quantity="1",
                     invoiceaction="duedate", duedate="01/04/2025").json()
    # Then
    assert reply["message"] == "Invalid Date Format - Expected: 'YYYY-mm-dd'"


def test_timeout_after_commit_is_ambiguous_and_the_item_exists(sandbox: WhmcsSandbox) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    sandbox.timeout_after_commit_next(1, delay=0.3, actions=["AddBillableItem"])
    client = client_for(sandbox, timeout=0.1)
    # When
    with pytest.raises(UpstreamTimeout) as info:
        add_item(client, ann["id"])
    # Then
    assert info.value.maybe_applied is True
    assert len(sandbox.billable_items) == 1  # applied, though the answer was lost
    assert sandbox.actions_called() == ["AddBillableItem"]  # and not sent again


def test_5xx_knob_read_is_retried_write_is_not(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    sandbox.fail_next(1, actions=["GetCurrencies", "AddBillableItem"])
    sandbox.fail_next(1, actions=["AddBillableItem"])
    # When
    currencies = whmcs.get_currencies()
    with pytest.raises(UpstreamError) as info:
        add_item(whmcs, ann["id"])
    # Then
    assert len(currencies) == 3
    assert info.value.http_status == 500
    assert sandbox.actions_called() == ["GetCurrencies", "GetCurrencies", "AddBillableItem"]
    assert sandbox.billable_items == []


def test_error_knob_answers_result_error_and_applies_nothing(sandbox: WhmcsSandbox,
                                                             whmcs: WhmcsClient) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    sandbox.error_next(1, "Database error", actions=["AddCredit"])
    # When
    with pytest.raises(WhmcsApiError, match="Database error"):
        whmcs.add_credit(ann["id"], Decimal("5.00"), "Deposit")
    # Then
    assert sandbox.credits == []
    assert whmcs.add_credit(ann["id"], Decimal("5.00"), "Deposit") == Decimal("5.00")


def test_unreachable_sandbox(sandbox: WhmcsSandbox) -> None:
    # Given
    url = sandbox.url
    sandbox.stop()
    client = WhmcsClient(url, "i", "s", connect_timeout=0.2, timeout=0.2, max_retries=1,
                         sleep=lambda _s: None)
    # When / Then
    with pytest.raises(UpstreamUnreachable):
        client.get_health_status()
    assert client.request_count == 2


# ---------------------------------------------------------------------- AddCredit / GetCredits


def test_add_credit_and_get_credits(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    jan = sandbox.add_client("Jan", "Berg", "jan@example.de", currency_code="EUR", credit="2.50")
    # When
    first = whmcs.add_credit(jan["id"], Decimal("10.00"), "Credit for Cloud Services Order #12")
    second = whmcs.add_credit(jan["id"], Decimal("10.00"), "Credit for Cloud Services Order #12")
    credits = whmcs.get_credits(jan["id"])
    # Then: running balance, and no de-duplication
    assert (first, second) == (Decimal("12.50"), Decimal("22.50"))
    assert [(c["description"], c["amount"]) for c in credits] == [
        ("Credit for Cloud Services Order #12", Decimal("10.00"))] * 2
    assert whmcs.get_client(jan["id"])["credit"] == Decimal("22.50")


@pytest.mark.parametrize(("fields", "message"), [
    ({"amount": ""}, "No Amount Provided"),
    ({"amount": "1.005"}, "Amount must be in decimal format: ### or ###.##"),
    ({"amount": "-1.00"}, "Amount must be in decimal format: ### or ###.##"),
    ({"amount": "1", "type": "swap"}, "Type can only be add or remove"),
    ({"amount": "1", "clientid": "999"}, "Client ID Not Found"),
    ({"amount": "1", "date": "2025-13-01"}, "Date Format is not Valid"),
])
def test_add_credit_validation(sandbox: WhmcsSandbox, fields: dict[str, str], message: str) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    data = {"clientid": str(ann["id"]), "description": "x", **fields}
    # When
    reply = raw_post(sandbox, action="AddCredit", identifier=sandbox.identifier, secret=sandbox.secret,
                     **data).json()
    # Then
    assert reply == {"result": "error", "message": message}
    assert sandbox.credits == []


# ---------------------------------------------------------------------- the sandbox itself


def test_concurrent_billable_items_get_distinct_increasing_ids(sandbox: WhmcsSandbox) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    ids: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        client = client_for(sandbox)
        billable_id = add_item(client, ann["id"])
        with lock:
            ids.append(billable_id)
        client.close()

    # When
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then
    assert sorted(ids) == list(range(1, 9))
    assert len(sandbox.billable_items) == 8


def test_seed_demo_and_requests_log(sandbox: WhmcsSandbox, whmcs: WhmcsClient) -> None:
    # Given
    demo = seed_demo(sandbox)
    # When
    ours = whmcs.get_products(module="computestacks")
    sandbox.reset_requests()
    whmcs.get_client(demo["clients"][1]["id"])
    # Then
    assert [p["name"] for p in ours] == ["Cloud Account"]
    assert {c["currency_code"] for c in sandbox.clients} == {"USD", "EUR"}
    jan_id = str(demo["clients"][1]["id"])
    assert sandbox.requests == [{"action": "GetClientsDetails",
                                 "params": {"responsetype": "json", "clientid": jan_id}}]


def test_parse_form_bracket_notation() -> None:
    # Given / When
    parsed = parse_form("unset%5B0%5D=domain&unset%5B1%5D=ns1"
                        "&customfields%5Bcolor%5D=red&a%5B%5D=1&a%5B%5D=2")
    # Then
    assert parsed == {"unset": {"0": "domain", "1": "ns1"}, "customfields": {"color": "red"}, "a": ["1", "2"]}
