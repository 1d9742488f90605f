"""WhmcsClient against httpx.MockTransport: encoding, error mapping, retry rules, coercion, paging."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cswhmcs.adapters.whmcs import (
    Currency,
    WhmcsApiError,
    WhmcsClient,
    WhmcsPermissionDenied,
    as_decimal,
    as_int,
    format_money,
)
from cswhmcs.config import load_settings
from cswhmcs.errors import (
    ConfigurationError,
    InvalidInput,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

URL = "https://whmcs.example.net/includes/api.php"
IDENT = "ident-AbCdEf123456"
SECRET = "secret-ZyXwVu987654"
ACCESS = "access-key-Qq11"

Handler = Callable[[httpx.Request], httpx.Response]


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode(), keep_blank_values=True).items()}


def ok(**data: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": "success", **data})


def error(message: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"result": "error", "message": message})


class Recorder:
    """A MockTransport handler that answers from a script (one entry per request) and records requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.forms: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.forms.append(form(request))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer


def make_client(recorder: Recorder, **kwargs: Any) -> WhmcsClient:
    kwargs.setdefault("sleep", lambda _s: None)
    return WhmcsClient(URL, IDENT, SECRET, ACCESS, transport=httpx.MockTransport(recorder), **kwargs)


def billable(client: WhmcsClient, **overrides: Any) -> int:
    args: dict[str, Any] = {"client_id": 7, "description": "Containers, March 2025",
                            "amount": Decimal("12.30"), "quantity": Decimal("720"), "unit_mode": "quantity",
                            "invoice_action": "duedate", "due_date": date(2025, 4, 1)}
    args.update(overrides)
    return client.add_billable_item(**args)


def assert_no_secrets(exc: BaseException) -> None:
    text = f"{exc} {exc!r} {getattr(exc, 'message', '')}"
    for secret in (IDENT, SECRET, ACCESS):
        assert secret not in text


# ---------------------------------------------------------------------- encoding


def test_call_posts_a_form_with_credentials_and_json_responsetype() -> None:
    # Given
    rec = Recorder(ok(billableid=5))
    client = make_client(rec)
    # When
    billable_id = billable(client)
    # Then
    assert billable_id == 5
    request = rec.requests[0]
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert rec.forms[0] == {
        "action": "AddBillableItem", "identifier": IDENT, "secret": SECRET, "accesskey": ACCESS,
        "responsetype": "json", "clientid": "7", "description": "Containers, March 2025", "amount": "12.30",
        "invoiceaction": "duedate", "unit": "quantity", "quantity": "720", "duedate": "2025-04-01",
    }


def test_amounts_are_sent_with_two_decimals_and_never_rounded() -> None:
    # Given
    rec = Recorder(ok(newbalance="5.00"))
    client = make_client(rec)
    # When
    client.add_credit(7, Decimal("5"), "Deposit for order #12")
    # Then
    assert rec.forms[0]["amount"] == "5.00"
    assert rec.forms[0]["type"] == "add"
    assert format_money(Decimal("1E+1")) == "10.00"
    with pytest.raises(InvalidInput):
        format_money(Decimal("1.005"))


def test_add_credit_refuses_a_non_positive_amount_without_sending() -> None:
    # Given
    rec = Recorder(ok(newbalance="0.00"))
    client = make_client(rec)
    # When / Then
    with pytest.raises(InvalidInput):
        client.add_credit(7, Decimal("0.00"), "nothing")
    assert client.request_count == 0


def test_hours_mode_sends_hours_and_the_82_fields() -> None:
    # Given
    rec = Recorder(ok(billableid=9))
    client = make_client(rec)
    # When
    billable(client, unit_mode="hours", quantity=Decimal("12.5"), due_date=None, invoice_action="nextcron")
    # Then
    sent = rec.forms[0]
    assert sent["hours"] == "12.5"
    assert sent["unit"] == "hours"
    assert sent["quantity"] == "12.5"
    assert "duedate" not in sent
    assert sent["invoiceaction"] == "nextcron"


def test_nested_params_use_php_bracket_notation() -> None:
    # Given
    rec = Recorder(ok(serviceid=3))
    client = make_client(rec)
    # When
    client.update_client_product(3, serviceusername="ann@example.org", unset=["domain"])
    # Then
    assert rec.forms[0]["serviceusername"] == "ann@example.org"
    assert rec.forms[0]["unset[0]"] == "domain"
    assert rec.forms[0]["serviceid"] == "3"


def test_credentials_cannot_be_overridden_through_params() -> None:
    # Given
    client = make_client(Recorder(ok()))
    # When / Then
    with pytest.raises(ValueError):
        client.call("GetClients", {"secret": "other"}, retry=True)


def test_pacer_is_called_before_every_attempt() -> None:
    # Given
    calls: list[int] = []
    rec = Recorder(httpx.Response(502, text="<html>Bad Gateway</html>"), ok(totalresults=0))
    client = make_client(rec, pacer=lambda: calls.append(1))
    # When
    client.get_currencies()
    # Then
    assert len(calls) == 2 == client.request_count


def test_repr_and_from_settings_keep_secrets_out() -> None:
    # Given
    settings = load_settings({"WHMCS_API_URL": URL + "/", "WHMCS_API_IDENTIFIER": IDENT,
                              "WHMCS_API_SECRET": SECRET, "WHMCS_TIMEOUT": "4"})
    # When
    client = WhmcsClient.from_settings(settings)
    # Then
    assert SECRET not in repr(client) and IDENT not in repr(client)
    assert client._url == URL
    client.close()


def test_from_settings_names_the_missing_setting() -> None:
    # Given
    settings = load_settings({"WHMCS_API_URL": URL})
    # When / Then
    with pytest.raises(ConfigurationError, match="WHMCS_API_IDENTIFIER"):
        WhmcsClient.from_settings(settings)


# ---------------------------------------------------------------------- error mapping


@pytest.mark.parametrize("message", ["Authentication Failed", "Invalid or missing credentials"])
def test_refused_credentials_raise_auth_failed(message: str) -> None:
    # Given
    rec = Recorder(error(message, 403))
    client = make_client(rec)
    # When
    with pytest.raises(UpstreamAuthFailed) as info:
        client.get_currencies()
    # Then
    assert info.value.message == f"WHMCS rejected the API credentials: {message}."
    assert info.value.upstream == "WHMCS"
    assert info.value.status == 502
    assert client.request_count == 1  # never retried: it would only fail again
    assert_no_secrets(info.value)


def test_auth_failure_answered_with_200_is_still_an_auth_failure() -> None:
    # Given
    client = make_client(Recorder(error("Authentication Failed")))
    # When / Then
    with pytest.raises(UpstreamAuthFailed, match="Authentication Failed"):
        client.get_health_status()


def test_invalid_ip_says_how_to_fix_it() -> None:
    # Given
    client = make_client(Recorder(error("Invalid IP 203.0.113.9", 403)))
    # When
    with pytest.raises(UpstreamAuthFailed) as info:
        client.get_client(7)
    # Then
    assert "Invalid IP 203.0.113.9" in info.value.message
    assert "WHMCS_API_ACCESS_KEY" in info.value.message


def test_missing_permission_names_the_action() -> None:
    # Given
    denial = 'Invalid Permissions: API action "getclientsproducts" is not allowed'
    client = make_client(Recorder(error(denial, 403)))
    # When
    with pytest.raises(WhmcsPermissionDenied) as info:
        client.get_clients_products(clientid=7)
    # Then
    assert isinstance(info.value, UpstreamAuthFailed)
    assert info.value.action == "GetClientsProducts"
    assert '"GetClientsProducts"' in info.value.message


def test_version_is_none_when_whmcsdetails_is_denied_or_unknown() -> None:
    # Given
    denial = 'Invalid Permissions: API action "whmcsdetails" is not allowed'
    invalid = 'Invalid API Action: "whmcsdetails" is not a valid API action'
    denied = make_client(Recorder(error(denial, 403)))
    unknown = make_client(Recorder(error(invalid, 403)))
    # When / Then
    assert denied.version() is None
    assert unknown.version() is None


def test_version_reads_whmcsdetails() -> None:
    # Given
    client = make_client(Recorder(ok(whmcs={"version": "8.1.3", "canonicalversion": "8.1.3-release.1"})))
    # When / Then
    assert client.version() == "8.1.3"


def test_version_still_raises_when_the_credentials_are_wrong() -> None:
    # Given
    client = make_client(Recorder(error("Authentication Failed", 403)))
    # When / Then
    with pytest.raises(UpstreamAuthFailed):
        client.version()


def test_business_errors_are_upstream_errors_and_not_retried() -> None:
    # Given
    rec = Recorder(error("Client Not Found"))
    client = make_client(rec)
    # When
    with pytest.raises(WhmcsApiError) as info:
        client.get_client(99)
    # Then
    assert info.value.message == "WHMCS answered with an error: Client Not Found."
    assert info.value.whmcs_message == "Client Not Found"
    assert info.value.status == 502
    assert client.request_count == 1


def test_an_error_message_echoing_a_secret_is_redacted() -> None:
    # Given
    client = make_client(Recorder(error(f"Bad value {SECRET} for {IDENT}")))
    # When
    with pytest.raises(UpstreamError) as info:
        client.get_credits(7)
    # Then
    assert_no_secrets(info.value)
    assert "[redacted]" in info.value.message


def test_html_5xx_is_an_upstream_error() -> None:
    # Given
    rec = Recorder(httpx.Response(500, text="<html>Internal Server Error</html>"))
    client = make_client(rec, max_retries=0)
    # When
    with pytest.raises(UpstreamError) as info:
        client.get_invoice(1)
    # Then
    assert info.value.http_status == 500
    assert not isinstance(info.value, UpstreamAuthFailed)


def test_non_json_200_is_an_upstream_error() -> None:
    # Given
    client = make_client(Recorder(httpx.Response(200, text="result=success;")), max_retries=0)
    # When / Then
    with pytest.raises(UpstreamError, match="not JSON"):
        client.get_products()


def test_403_without_json_is_not_mistaken_for_success() -> None:
    # Given
    client = make_client(Recorder(httpx.Response(403, text="<html>Forbidden</html>")))
    # When / Then
    with pytest.raises(UpstreamError, match="HTTP 403"):
        client.get_health_status()
    assert client.request_count == 1


def test_success_result_with_a_5xx_status_is_not_trusted() -> None:
    # Given
    client = make_client(Recorder(httpx.Response(500, json={"result": "success"})), max_retries=0)
    # When / Then
    with pytest.raises(UpstreamError):
        client.get_health_status()


def test_documented_status_success_variant_is_accepted_for_addbillableitem() -> None:
    # Given
    client = make_client(Recorder(httpx.Response(200, json={"status": "success", "billableid": "42"})))
    # When / Then
    assert billable(client) == 42


def test_a_success_without_billableid_is_ambiguous_not_a_failure() -> None:
    # Given
    client = make_client(Recorder(ok()))
    # When
    with pytest.raises(UpstreamTimeout) as info:
        billable(client)
    # Then
    assert info.value.maybe_applied is True
    assert client.request_count == 1


# ---------------------------------------------------------------------- retry rules


def test_addbillableitem_is_not_resent_after_a_read_timeout() -> None:
    # Given
    rec = Recorder(httpx.ReadTimeout("timed out"), ok(billableid=2))
    client = make_client(rec)
    # When
    with pytest.raises(UpstreamTimeout) as info:
        billable(client)
    # Then
    assert info.value.maybe_applied is True
    assert info.value.status == 504
    assert client.request_count == 1
    assert_no_secrets(info.value)


WRITES: list[Callable[[WhmcsClient], Any]] = [
    lambda c: c.add_credit(7, Decimal("1.00"), "Deposit"),
    billable,
    lambda c: c.update_client_product(1, serviceusername="x@example.org"),
]


@pytest.mark.parametrize("failure", [
    httpx.ReadTimeout("timed out"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.Response(500, text="<html>Internal Server Error</html>"),
    httpx.Response(200, text="<html>Fatal error</html>"),
])
@pytest.mark.parametrize("write", WRITES, ids=["AddCredit", "AddBillableItem", "UpdateClientProduct"])
def test_writes_are_never_resent_once_sent(failure: Any, write: Callable[[WhmcsClient], Any]) -> None:
    # Given
    rec = Recorder(failure, ok(newbalance="1.00", billableid=1, serviceid=1))
    client = make_client(rec)
    # When
    with pytest.raises((UpstreamTimeout, UpstreamError)) as info:
        write(client)
    # Then
    assert client.request_count == 1
    if isinstance(info.value, UpstreamTimeout):
        assert info.value.maybe_applied is True


def test_call_with_retry_true_still_does_not_resend_a_write() -> None:
    # Given
    rec = Recorder(httpx.ReadTimeout("timed out"), ok(billableid=1))
    client = make_client(rec)
    # When / Then
    with pytest.raises(UpstreamTimeout):
        client.call("AddBillableItem", {"clientid": 1}, retry=True)
    assert client.request_count == 1


def test_connect_failure_of_a_write_is_retried_because_nothing_was_sent() -> None:
    # Given
    rec = Recorder(httpx.ConnectError("connection refused"), ok(billableid=8))
    client = make_client(rec)
    # When
    billable_id = billable(client)
    # Then
    assert billable_id == 8
    assert client.request_count == 2


def test_connect_failures_end_as_unreachable() -> None:
    # Given
    sleeps: list[float] = []
    rec = Recorder(httpx.ConnectError("connection refused"))
    client = make_client(rec, max_retries=2, sleep=sleeps.append)
    # When
    with pytest.raises(UpstreamUnreachable) as info:
        client.add_credit(7, Decimal("3.00"), "Deposit")
    # Then
    assert info.value.message == "WHMCS could not be reached."
    assert info.value.maybe_applied is False
    assert client.request_count == 3
    assert sleeps == [0.25, 0.5]


@pytest.mark.parametrize("failure", [
    httpx.ReadTimeout("timed out"),
    httpx.Response(503, text="<html>Service Unavailable</html>"),
    httpx.Response(200, text="not json"),
])
def test_reads_are_retried_after_timeouts_5xx_and_garbage(failure: Any) -> None:
    # Given
    rec = Recorder(failure, ok(whmcs={"version": "8.10.1"}))
    client = make_client(rec)
    # When
    version = client.version()
    # Then
    assert version == "8.10.1"
    assert client.request_count == 2


def test_reads_give_up_after_max_retries() -> None:
    # Given
    rec = Recorder(httpx.ReadTimeout("timed out"))
    client = make_client(rec, max_retries=2)
    # When
    with pytest.raises(UpstreamTimeout):
        client.get_health_status()
    # Then
    assert client.request_count == 3


# ---------------------------------------------------------------------- coercion


def test_currencies_are_typed_whatever_the_json_types() -> None:
    # Given
    rec = Recorder(ok(totalresults="2", currencies={"currency": [
        {"id": "1", "code": "USD", "prefix": "$", "suffix": " USD", "format": "1", "rate": "1.00000"},
        {"id": 2, "code": "EUR", "prefix": "€", "suffix": " EUR", "format": 1, "rate": 0.92},
    ]}))
    client = make_client(rec)
    # When
    currencies = client.get_currencies()
    # Then
    assert currencies == [
        Currency(id=1, code="USD", prefix="$", suffix=" USD", rate=Decimal("1.00000")),
        Currency(id=2, code="EUR", prefix="€", suffix=" EUR", rate=Decimal("0.92")),
    ]


def test_client_fields_are_coerced() -> None:
    # Given
    client = make_client(Recorder(ok(client={"id": "7", "client_id": "7", "userid": "7", "currency": "2",
                                             "currency_code": "EUR", "credit": "12.50", "email": "a@x.io"})))
    # When
    record = client.get_client(7)
    # Then
    assert record["id"] == 7 and record["client_id"] == 7 and record["userid"] == 7
    assert record["currency"] == 2
    assert record["credit"] == Decimal("12.50") and isinstance(record["credit"], Decimal)


def test_invoice_items_are_flattened_and_typed() -> None:
    # Given
    items = {"item": [
        {"id": "1", "type": "Hosting", "relid": "42", "description": "Cloud", "amount": "25.00",
         "taxed": "0"},
        {"id": 2, "type": "Setup", "relid": 0, "description": "Setup fee", "amount": 5.0, "taxed": 0},
    ]}
    client = make_client(Recorder(ok(invoiceid="10", userid="7", status="Paid", total="30.00",
                                     transactions="", items=items)))
    # When
    invoice = client.get_invoice(10)
    # Then
    assert invoice["invoiceid"] == 10 and invoice["userid"] == 7 and invoice["status"] == "Paid"
    assert invoice["total"] == Decimal("30.00")
    assert invoice["transactions"] == []
    assert [(i["type"], i["relid"], i["amount"]) for i in invoice["items"]] == [
        ("Hosting", 42, Decimal("25.00")), ("Setup", 0, Decimal("5.0"))]
    assert all(isinstance(i["amount"], Decimal) for i in invoice["items"])


def test_credits_are_typed() -> None:
    # Given
    client = make_client(Recorder(ok(totalresults="1", clientid="7", credits={"credit": [
        {"id": "3", "date": "2025-03-01", "description": "Deposit", "amount": "10.00", "relid": "0"}]})))
    # When
    credits = client.get_credits(7)
    # Then
    assert credits == [{"id": 3, "date": "2025-03-01", "description": "Deposit", "amount": Decimal("10.00"),
                        "relid": 0}]


def test_add_credit_returns_the_new_balance_as_decimal() -> None:
    # Given
    client = make_client(Recorder(ok(newbalance="17.50")))
    # When / Then
    assert client.add_credit(7, Decimal("7.50"), "Deposit") == Decimal("17.50")


def test_products_by_pid_list_and_module() -> None:
    # Given
    rec = Recorder(ok(totalresults="1", products={"product": {"pid": "3", "gid": "1", "name": "Cloud",
                                                              "module": "computestacks"}}))
    client = make_client(rec)
    # When
    products = client.get_products(pid=[3, 4], module="computestacks")
    # Then
    assert products == [{"pid": 3, "gid": 1, "name": "Cloud", "module": "computestacks"}]
    assert rec.forms[0]["pid"] == "3,4" and rec.forms[0]["module"] == "computestacks"


# ---------------------------------------------------------------------- paging


def services_page(request: httpx.Request, total: int, numeric_strings: bool) -> httpx.Response:
    sent = form(request)
    start, num = int(sent["limitstart"]), int(sent["limitnum"])
    ids = list(range(1, total + 1))[start:start + num]

    def n(v: int) -> int | str:
        return str(v) if numeric_strings else v

    products = {"product": [{"id": n(i), "clientid": n(7), "pid": n(3), "username": f"u{i}",
                             "status": "Active", "recurringamount": "0.00"} for i in ids]} if ids else ""
    return httpx.Response(200, json={"result": "success", "totalresults": n(total), "startnumber": n(start),
                                     "numreturned": n(len(ids)), "products": products})


@pytest.mark.parametrize("numeric_strings", [False, True])
def test_get_clients_products_reads_every_page(numeric_strings: bool) -> None:
    # Given
    rec = Recorder(lambda r: services_page(r, total=7, numeric_strings=numeric_strings))
    client = make_client(rec)
    client.page_size = 3
    # When
    services = client.get_clients_products(clientid=7)
    # Then
    assert [s["id"] for s in services] == [1, 2, 3, 4, 5, 6, 7]
    assert all(s["clientid"] == 7 and s["pid"] == 3 for s in services)
    assert services[0]["recurringamount"] == Decimal("0.00")
    assert [f["limitstart"] for f in rec.forms] == ["0", "3", "6"]
    assert all(f["clientid"] == "7" for f in rec.forms)


def test_get_clients_products_empty_result() -> None:
    # Given
    rec = Recorder(lambda r: services_page(r, total=0, numeric_strings=True))
    client = make_client(rec)
    # When
    services = client.get_clients_products(username="nobody@example.org")
    # Then
    assert services == []
    assert rec.forms[0]["username2"] == "nobody@example.org"
    assert client.request_count == 1


def test_get_clients_products_stops_when_whmcs_paging_lies() -> None:
    # Given: totalresults claims more, but every page is empty
    rec = Recorder(ok(totalresults=50, startnumber=0, numreturned=0, products=""))
    client = make_client(rec)
    # When
    services = client.get_clients_products(pid=3)
    # Then
    assert services == []
    assert client.request_count == 1


def test_json_floats_become_decimals_never_floats() -> None:
    # Given
    client = make_client(Recorder(httpx.Response(200, content=json.dumps(
        {"result": "success", "newbalance": 0.1}).encode())))
    # When
    balance = client.add_credit(7, Decimal("0.10"), "Deposit")
    # Then
    assert balance == Decimal("0.1") and isinstance(balance, Decimal)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_ids_coerce_from_numbers_and_numeric_strings(n: int) -> None:
    # Given / When / Then
    assert as_int(n) == as_int(str(n)) == as_int(f"{n}.0") == n
    assert as_int("") is None and as_int(None) is None and as_int("1.5") is None


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2, allow_nan=False,
                   allow_infinity=False))
def test_money_round_trips_through_the_wire_format(amount: Decimal) -> None:
    # Given / When
    text = format_money(amount)
    # Then
    assert as_decimal(text) == amount
    assert "E" not in text and len(text.split(".")[1]) == 2


def test_a_pacer_object_is_acquired_before_every_attempt() -> None:
    # Given
    class CountingPacer:
        def __init__(self) -> None:
            self.calls = 0

        def acquire(self) -> float:
            self.calls += 1
            return 0.0

    pacer = CountingPacer()
    rec = Recorder(httpx.ConnectError("refused"), ok(billableid=1))
    client = make_client(rec, pacer=pacer)
    # When
    billable(client)
    # Then
    assert pacer.calls == 2 == client.request_count


# ---------------------------------------------------------------------- deadline and 429 (issue 8)


def test_a_write_is_not_sent_without_time_for_a_whole_attempt() -> None:
    from cswhmcs import deadline
    from cswhmcs.adapters.retry import OutOfTime

    # Given 5 s left and an attempt that may take 3 s to connect and 10 s to answer
    rec = Recorder(ok(billableid=1))
    client = make_client(rec)
    # When / Then AddBillableItem is not sent: a cut timeout could only make it "maybe created"
    with deadline.use(deadline.Deadline.after(5)), pytest.raises(OutOfTime) as info:
        billable(client)
    assert rec.requests == [] and info.value.maybe_applied is False and info.value.status == 504
    assert client.attempt_seconds == 13.0


def test_a_read_gets_the_remaining_time_as_its_timeout() -> None:
    from cswhmcs import deadline

    rec = Recorder(ok(whmcs={"version": "8.10.1"}))
    client = make_client(rec)
    with deadline.use(deadline.Deadline.after(4)):
        client.version()
    assert rec.requests[0].extensions["timeout"]["read"] <= 4.0


def front_end_429(seconds: str) -> httpx.Response:
    return httpx.Response(429, text="<html><h1>429 Too Many Requests</h1></html>", headers={"Retry-After": seconds})


def test_a_throttled_read_waits_its_retry_after_then_goes_again() -> None:
    sleeps: list[float] = []
    rec = Recorder(front_end_429("3"), ok(currencies={"currency": []}))
    client = make_client(rec, sleep=sleeps.append)
    assert client.get_currencies() == []
    assert sleeps == [3.0] and client.request_count == 2


def test_a_throttled_read_whose_wait_does_not_fit_is_a_504_at_once() -> None:
    from cswhmcs import deadline
    from cswhmcs.errors import RateLimited

    sleeps: list[float] = []
    rec = Recorder(front_end_429("120"))
    client = make_client(rec, sleep=sleeps.append)
    with deadline.use(deadline.Deadline.after(23)), pytest.raises(RateLimited) as info:
        client.get_invoice(5)
    assert sleeps == [] and client.request_count == 1
    assert info.value.status == 504 and "WHMCS is throttling" in info.value.message


def test_a_throttled_write_is_not_resent_and_was_not_applied() -> None:
    from cswhmcs.errors import RateLimited

    rec = Recorder(front_end_429("1"), ok(billableid=1))
    client = make_client(rec)
    with pytest.raises(RateLimited) as info:
        billable(client)
    assert client.request_count == 1 and info.value.maybe_applied is False
