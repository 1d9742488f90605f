"""ReceiverClient against httpx.MockTransport: the body, the signature, the retry of every unknown outcome with
the same refs, the typed refusals that are never retried, the answers' checks and the deadline."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs import deadline, factory
from cswhmcs.adapters.receiver import (
    ReceiverAnswer,
    ReceiverBadRequest,
    ReceiverClient,
    ReceiverError,
    ReceiverItem,
    ReceiverMissing,
    ReceiverSignatureRefused,
    ReceiverUnknownOutcome,
)
from cswhmcs.adapters.retry import OutOfTime
from cswhmcs.config import Settings
from cswhmcs.deadline import Deadline
from cswhmcs.errors import RateLimited
from tests.support.clocks import FakeClock
from tests.support.scripted import next_answer

URL = "https://billing.example.com/modules/servers/computestacks/billing.php"
SECRETS = [b"receiver-secret-current-1234", b"receiver-secret-previous-5678"]
Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def item(ref: str = "1001:2026-05:7", **overrides: Any) -> ReceiverItem:
    values: dict[str, Any] = dict(ref=ref, client_id=7, description=f"Compute May 2026 [ref {ref}]",
                                  amount=Decimal("12.30"), currency="EUR", quantity=Decimal("744.000"),
                                  unit="quantity", invoice_action="duedate", due_date="2026-06-01")
    values.update(overrides)
    return ReceiverItem(**values)


def success(request: httpx.Request, **fields: Any) -> httpx.Response:
    """The receiver's answer: every item created, ids from 500 on."""
    items = json.loads(request.content)["items"]
    answers = [{"ref": it["ref"], "status": "created", "billableid": 500 + i, "message": "", "code": ""}
               for i, it in enumerate(items)]
    return httpx.Response(200, json={"result": "success", "items": answers, "receiver": "1", **fields})


class Script:
    """A MockTransport handler that answers from a script (the last entry repeats) and records requests."""

    def __init__(self, *answers: Answer, on_request: Callable[[], None] | None = None) -> None:
        self.answers = list(answers) or [success]
        self.requests: list[httpx.Request] = []
        self.on_request = on_request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request()
        return next_answer(self.answers, request)

    def refs(self, n: int) -> list[str]:
        return [it["ref"] for it in json.loads(self.requests[n].content)["items"]]


def client(script: Script, *, secrets: Callable[[], list[bytes]] = lambda: SECRETS, sleeps: list[float] | None = None,
           **kw: Any) -> ReceiverClient:
    slept = sleeps if sleeps is not None else []
    kw.setdefault("timeout", 2.0)
    kw.setdefault("connect_timeout", 0.5)
    return ReceiverClient(URL, secrets, sleep=slept.append, transport=httpx.MockTransport(script), **kw)


def independent_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, timestamp.encode() + b"./whmcs/billable-items." + body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------- the request


def test_an_item_is_the_api_md_item_with_a_two_place_amount_and_a_plain_quantity() -> None:
    assert item(quantity=Decimal("7.50E+2"), amount=Decimal("12.3")).to_json() == {
        "ref": "1001:2026-05:7", "clientid": 7, "description": "Compute May 2026 [ref 1001:2026-05:7]",
        "amount": "12.30", "currency": "EUR", "quantity": "750", "unit": "quantity", "invoiceaction": "duedate",
        "duedate": "2026-06-01"}
    assert item(quantity=Decimal("0.0250"), unit="hours", invoice_action="nextcron").to_json()["quantity"] == "0.025"
    for bad in (dict(amount=Decimal("1.005")), dict(unit="days"), dict(invoice_action="now"),
                dict(quantity=Decimal("NaN")), dict(ref="L#1"), dict(ref=""), dict(ref="x" * 65)):
        with pytest.raises(ValueError):
            item(**bad).to_json()


def test_every_active_secret_signs_the_exact_body_with_a_fresh_timestamp_per_attempt() -> None:
    # Given a receiver that fails once, and a wall clock that moves between the attempts
    script = Script(httpx.Response(502, text="<html>Bad Gateway</html>"), success)
    clock = iter([1_700_000_000.0, 1_700_000_007.0])
    answers = client(script, now=lambda: next(clock)).send([item("A-1"), item("A-2")])
    # Then each attempt carries one v1= per secret, each verifying independently over its own timestamp
    assert [a.billable_id for a in answers] == [500, 501]
    assert [r.headers["X-CSW-Timestamp"] for r in script.requests] == ["1700000000", "1700000007"]
    for request in script.requests:
        ts = request.headers["X-CSW-Timestamp"]
        assert request.headers["X-CSW-Signature"].split(",") == [
            independent_signature(s, ts, request.content) for s in SECRETS]
        assert request.url == URL and request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == {"items": [item("A-1").to_json(), item("A-2").to_json()]}
    assert script.requests[0].content == script.requests[1].content


def test_a_rotated_secret_is_followed_from_one_attempt_to_the_next() -> None:
    # Given secrets that change between the first and the second attempt (a rotation)
    script = Script(httpx.ReadTimeout("slow"), success)
    generations = [[b"before-rotation-secret"], [b"before-rotation-secret"],
                   [b"after-rotation-secret", b"before-rotation-secret"]]
    c = client(script, secrets=lambda: generations.pop(0) if len(generations) > 1 else generations[0])
    c.send([item()])
    # Then the second attempt is signed with the new set
    first, second = script.requests
    assert first.headers["X-CSW-Signature"] == independent_signature(
        b"before-rotation-secret", first.headers["X-CSW-Timestamp"], first.content)
    assert second.headers["X-CSW-Signature"].split(",") == [
        independent_signature(s, second.headers["X-CSW-Timestamp"], second.content)
        for s in (b"after-rotation-secret", b"before-rotation-secret")]


def test_more_than_100_items_is_a_caller_error_and_sends_nothing() -> None:
    script = Script()
    with pytest.raises(ValueError, match="100"):
        client(script).send([item(f"R-{i}") for i in range(101)])
    assert script.requests == []
    assert len(client(script).send([item(f"R-{i}") for i in range(100)])) == 100


def test_a_ping_is_a_signed_empty_list() -> None:
    script = Script(httpx.Response(200, json={"result": "success", "items": [], "receiver": "1"}))
    c = client(script)
    c.ping()
    (request,) = script.requests
    assert request.content == b'{"items":[]}'
    assert request.headers["X-CSW-Signature"].split(",")[0] == independent_signature(
        SECRETS[0], request.headers["X-CSW-Timestamp"], request.content)
    assert c.request_count == 1


# ---------------------------------------------------------------------- answers


def test_answers_are_returned_in_order_with_their_ids_codes_and_currency() -> None:
    body = {"result": "success", "receiver": "1", "items": [
        {"ref": "A", "status": "created", "billableid": 11, "message": "", "code": ""},
        {"ref": "B", "status": "existing", "billableid": "9", "message": "created before"},
        {"ref": "C", "status": "refused", "billableid": None, "message": "currency is USD",
         "code": "currency_mismatch", "currency": "usd"},
        {"ref": "D", "status": "refused", "billableid": 0, "message": "no such client"},
    ]}
    answers = client(Script(httpx.Response(200, json=body))).send([item("A"), item("B"), item("C"), item("D")])
    assert answers == [
        ReceiverAnswer("A", "created", 11, "", "", None),
        ReceiverAnswer("B", "existing", 9, "created before", "", None),
        ReceiverAnswer("C", "refused", None, "currency is USD", "currency_mismatch", "USD"),
        ReceiverAnswer("D", "refused", None, "no such client", "rejected", None),
    ]


def answer_with(**change: Any) -> Callable[[httpx.Request], httpx.Response]:
    """A 200 whose items are the request's, then changed by ``change`` (a function of the list)."""
    def respond(request: httpx.Request) -> httpx.Response:
        refs = [it["ref"] for it in json.loads(request.content)["items"]]
        items: list[Any] = [{"ref": r, "status": "created", "billableid": 100 + i} for i, r in enumerate(refs)]
        body: dict[str, Any] = {"result": "success", "items": change["items"](items) if "items" in change else items}
        if "top" in change:
            body = change["top"](body)
        return httpx.Response(200, json=body)
    return respond


UNKNOWN_OUTCOMES: dict[str, tuple[Answer, str]] = {
    "read timeout": (httpx.ReadTimeout("no answer"), "timeout"),
    "dropped before the answer": (httpx.RemoteProtocolError("Server disconnected without sending a response."),
                                  "dropped"),
    "dropped while sending": (httpx.WriteError("broken pipe"), "dropped"),
    "refused connection": (httpx.ConnectError("connection refused"), "unreachable"),
    "500": (httpx.Response(500, text="Fatal error"), "failed"),
    "proxy 502": (httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
                  "failed"),
    "proxy 504": (httpx.Response(504, text="<html>Gateway Timeout</html>"), "failed"),
    "cloudflare 520": (httpx.Response(520, text="<html>Web server returned an unknown error</html>"), "failed"),
    "cloudflare 524": (httpx.Response(524, text="<html>A timeout occurred</html>"), "failed"),
    "200 not JSON": (httpx.Response(200, text="<br />\n<b>Notice</b>: Undefined index ... {\"result\":\"success\"}"),
                     "failed"),
    "200 without result=success": (httpx.Response(200, json={"result": "error", "message": "db gone"}), "failed"),
    "200 without items": (answer_with(top=lambda b: {"result": "success"}), "failed"),
    "fewer items": (answer_with(items=lambda items: items[:-1]), "failed"),
    "refs out of order": (answer_with(items=lambda items: list(reversed(items))), "failed"),
    "unknown status": (answer_with(items=lambda items: [*items[:-1], {**items[-1], "status": "queued"}]), "failed"),
    "created without a billableid": (
        answer_with(items=lambda items: [*items[:-1], {**items[-1], "billableid": None}]), "failed"),
    "existing with a bool billableid": (
        answer_with(items=lambda items: [*items[:-1], {**items[-1], "status": "existing", "billableid": True}]),
        "failed"),
}


@pytest.mark.parametrize("kind", list(UNKNOWN_OUTCOMES))
def test_each_unknown_outcome_is_sent_again_with_the_same_refs_then_reported_unknown(kind: str) -> None:
    fault, reason = UNKNOWN_OUTCOMES[kind]
    script = Script(fault)
    sleeps: list[float] = []
    c = client(script, sleeps=sleeps)
    with pytest.raises(ReceiverUnknownOutcome) as err:
        c.send([item("X-1"), item("X-2")])
    # Three attempts (two retries with backoff), each the same body and refs
    assert c.request_count == 3 and sleeps == [0.25, 0.5]
    assert [script.refs(i) for i in range(3)] == [["X-1", "X-2"]] * 3
    assert len({r.content for r in script.requests}) == 1
    assert err.value.reason == reason and err.value.upstream == "receiver"
    assert err.value.message.startswith("The ")
    assert not any(s.decode() in err.value.message for s in SECRETS)


@pytest.mark.parametrize("kind", ["read timeout", "proxy 502", "200 not JSON", "refs out of order"])
def test_an_unknown_outcome_followed_by_an_answer_returns_that_answer(kind: str) -> None:
    script = Script(UNKNOWN_OUTCOMES[kind][0], success)
    c = client(script)
    assert [a.status for a in c.send([item("X-1"), item("X-2")])] == ["created", "created"]
    assert c.request_count == 2 and script.refs(0) == script.refs(1)


# ---------------------------------------------------------------------- definite refusals


@pytest.mark.parametrize("status, error, words", [
    (401, ReceiverSignatureRefused, "Access Hash"),
    (404, ReceiverMissing, "billing.php"),
    (400, ReceiverBadRequest, "items[0].amount must have 2 decimal places"),
    (403, ReceiverError, "HTTP 403"),
    (301, ReceiverError, "redirect"),
])
def test_refusals_are_typed_and_never_sent_again(status: int, error: type[ReceiverError], words: str) -> None:
    script = Script(httpx.Response(status, json={"result": "error",
                                                 "message": "items[0].amount must have 2 decimal places"}))
    c = client(script)
    with pytest.raises(error) as err:
        c.send([item()])
    assert type(err.value) is error and words in err.value.message and err.value.http_status == status
    assert c.request_count == 1


def test_a_refusal_after_an_unknown_outcome_is_still_an_unknown_outcome() -> None:
    # The first attempt may have created the items: a later 401 does not make the outcome definite.
    script = Script(httpx.ReadTimeout("slow"), httpx.Response(401, json={"result": "error", "message": "bad"}))
    with pytest.raises(ReceiverUnknownOutcome):
        client(script).send([item()])
    assert len(script.requests) == 2


def test_no_secret_means_nothing_is_sent() -> None:
    from cswhmcs.errors import ConfigurationError

    script = Script()
    with pytest.raises(ConfigurationError, match="SIGNING_SECRET"):
        client(script, secrets=lambda: []).send([item()])
    assert script.requests == []


# ---------------------------------------------------------------------- time


def test_nothing_is_sent_when_a_whole_attempt_does_not_fit_the_deadline() -> None:
    # Given an attempt of 2.5 s (2 s to answer + 0.5 s to connect) and 2 s left
    script = Script()
    c = client(script)
    with deadline.use(Deadline.after(2.0)), pytest.raises(OutOfTime):
        c.send([item()])
    # Then nothing was sent (OutOfTime: the worker knows nothing was created)
    assert script.requests == [] and c.request_count == 0


def test_retries_stop_when_the_next_whole_attempt_would_not_fit() -> None:
    # Given a fake clock: each attempt takes 0.4 s, the deadline is 3 s away, an attempt needs 2.5 s
    clock = FakeClock()
    script = Script(httpx.Response(502, text="bad gateway"), on_request=lambda: clock.advance(0.4))
    c = ReceiverClient(URL, lambda: SECRETS, timeout=2.0, connect_timeout=0.5, sleep=clock.advance,
                       transport=httpx.MockTransport(script))
    with deadline.use(Deadline(3.0, clock)), pytest.raises(ReceiverUnknownOutcome):
        c.send([item()])
    # Then one attempt went (0.4 s), the backoff (0.25 s) left 2.35 s < 2.5 s: no second attempt
    assert c.request_count == 1


def test_attempt_timeouts_are_the_configured_ones_inside_the_deadline() -> None:
    seen: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return success(request)

    c = client(Script(record), timeout=3.0, connect_timeout=1.0)
    with deadline.use(Deadline.after(10.0)):
        c.send([item()])
    assert seen[0]["read"] == 3.0 and seen[0]["connect"] == 1.0
    assert c.attempt_seconds == 4.0


def test_a_429_is_waited_for_when_it_fits_and_rate_limited_when_it_does_not() -> None:
    throttled = httpx.Response(429, headers={"Retry-After": "3"})
    sleeps: list[float] = []
    script = Script(throttled, success)
    assert client(script, sleeps=sleeps).send([item()])[0].status == "created"
    assert sleeps == [3.0] and len(script.requests) == 2

    sleeps.clear()
    script = Script(throttled)
    c = client(script, sleeps=sleeps)
    with deadline.use(Deadline.after(5.0)), pytest.raises(RateLimited) as err:
        c.send([item()])  # 3 s wait + a 2.5 s attempt > 5 s
    assert sleeps == [] and c.request_count == 1 and err.value.upstream == "receiver"
    assert err.value.message.startswith("The WHMCS billing receiver is throttling")


def test_a_ping_may_be_cut_to_the_deadline() -> None:
    # A ping creates nothing: it goes even when less than a whole attempt is left.
    script = Script(httpx.Response(200, json={"result": "success", "items": []}))
    c = client(script)
    with deadline.use(Deadline.after(1.0)):
        c.ping()
    assert c.request_count == 1
    assert script.requests[0].extensions["timeout"]["read"] <= 1.0


# ---------------------------------------------------------------------- the factory


def test_the_factory_builds_it_only_when_the_url_is_set_and_signs_with_the_settings_secrets() -> None:
    assert factory.receiver_client(Settings(SIGNING_SECRET="abcd1234secret")) is None
    settings = Settings.model_validate({"SIGNING_SECRET": "new-secret-value-1,old-secret-value-2",
                                        "WHMCS_RECEIVER_URL": URL, "WHMCS_TIMEOUT": 4, "CONNECT_TIMEOUT": 1})
    c = factory.receiver_client(settings)
    assert c is not None and c.attempt_seconds == 9.0  # twice WHMCS_TIMEOUT + CONNECT_TIMEOUT
    assert factory.signing_secrets_for(settings)() == [b"new-secret-value-1", b"old-secret-value-2"]
    c.close()


# ---------------------------------------------------------------------- what is logged, how it is built


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_logs_carry_counts_and_refs_never_a_secret_a_signature_or_a_body() -> None:
    from cswhmcs.observability import logger

    handler = _Records()
    base = logging.getLogger(logger.name)
    base.addHandler(handler)
    try:
        script = Script(httpx.Response(502, text="bad"), success)
        client(script).send([item("LOG-1"), item("LOG-2", description="secret-looking description text")])
        with pytest.raises(ReceiverSignatureRefused):
            client(Script(httpx.Response(401, json={"result": "error", "message": "no"}))).send([item("LOG-3")])
    finally:
        base.removeHandler(handler)
    raw = " ".join(f"{r.getMessage()} {r.__dict__}" for r in handler.records)  # before any redaction
    assert "LOG-3" in raw and "items_created" in raw  # refs of a failed send, counts of a good one
    signatures = {part for r in script.requests for part in r.headers["X-CSW-Signature"].split(",")}
    for forbidden in [*(s.decode() for s in SECRETS), *signatures, *(sig[3:] for sig in signatures),
                      "secret-looking description text"]:
        assert forbidden not in raw


def test_its_connections_are_bounded_in_total_time_proxies_included(monkeypatch: pytest.MonkeyPatch) -> None:
    from cswhmcs.adapters import bounded

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    http = ReceiverClient(URL, lambda: SECRETS)._http
    transports = [http._transport, *http._mounts.values()]
    assert len(transports) >= 2
    for transport in transports:
        assert isinstance(transport._pool._network_backend, bounded.BoundedBackend)  # type: ignore[attr-defined]


def test_a_quantity_with_more_places_than_the_receiver_takes_is_rounded_not_refused() -> None:
    # billing.php accepts up to 10 decimals (a 400 would refuse the whole batch): the quantity is shown, not priced
    from cswhmcs.adapters.receiver import ReceiverItem

    item = ReceiverItem(ref="7:2026-10:1", client_id=1, description="x [ref 7:2026-10:1]", amount=Decimal("1.00"),
                        currency="USD", quantity=Decimal("730.123456789012345"), unit="hours",
                        invoice_action="duedate", due_date="2026-11-01")
    assert item.to_json()["quantity"] == "730.123456789"
    assert ReceiverItem(**{**item.__dict__, "quantity": Decimal("1E+2")}).to_json()["quantity"] == "100"


def test_each_send_logs_its_own_attempts_while_another_thread_retries_through_the_same_client() -> None:
    import threading

    from cswhmcs.observability import logger

    inside = threading.Event()
    release = threading.Event()

    def slow_then_fail(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["items"][0]["ref"] == "SLOW-1":
            inside.set()
            release.wait(5)
            return httpx.Response(502, text="proxy")
        return success(request)

    handler = _Records()
    base = logging.getLogger(logger.name)
    base.addHandler(handler)
    shared = client(Script(slow_then_fail), max_retries=2)
    try:
        # One send keeps failing (3 attempts) while another, through the same client, succeeds at once.
        slow = threading.Thread(target=lambda: pytest.raises(ReceiverUnknownOutcome, shared.send, [item("SLOW-1")]))
        slow.start()
        assert inside.wait(5)
        shared.send([item("FAST-1")])
        release.set()
        slow.join(10)
    finally:
        base.removeHandler(handler)
    attempts = {r.getMessage(): r.__dict__.get("attempts") for r in handler.records
                if r.getMessage().startswith("billing receiver send")}
    assert attempts == {"billing receiver send": 1, "billing receiver send failed": 3}
