"""The billing worker with the real ReceiverClient (adapters/receiver.py) on the wire: an httpx MockTransport
that behaves as billing.php (API.md section 8: signature checked, a ref creates one item, ever) and loses
answers after committing (502, 504, a dropped connection, a PHP notice before the JSON) or before. Whatever
is lost, every line ends billed once and nothing needs an operator. In-process and fast (moto, no PHP)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs.adapters.receiver import ROUTE, ReceiverClient
from cswhmcs.billing.grouping import DONE, PLANNED
from cswhmcs.billing.worker import process_accounts
from cswhmcs.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, compute_signature
from tests.support.billing import OCT, World, message, world

__all__ = ["world"]  # the fixture

SECRET = b"receiver-test-access-hash-0123456789"


class WireReceiver:
    """billing.php's behaviour behind HTTP. ``faults``: per request, in order: "ok", "502_after",
    "504_before", "drop_after", "notice_after" (a PHP notice printed before a good answer)."""

    def __init__(self, clients: dict[int, str]) -> None:
        self.clients = clients  # client id -> its WHMCS currency code
        self.items: list[dict[str, Any]] = []
        self.refs: dict[str, int] = {}
        self.faults: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests += 1
            ts = request.headers[TIMESTAMP_HEADER]
            expected = compute_signature(SECRET, ts, ROUTE, request.content)
            if expected not in request.headers[SIGNATURE_HEADER].split(","):
                return httpx.Response(401, json={"result": "error", "message": "bad signature"})
            fault = self.faults.pop(0) if self.faults else "ok"
            if fault == "504_before":
                return httpx.Response(504, text="<html>Gateway Time-out</html>")
            answers = [self._one(item) for item in json.loads(request.content)["items"]]
            body = json.dumps({"result": "success", "items": answers, "receiver": "1"})
            if fault == "502_after":
                return httpx.Response(502, text="<html>Bad Gateway</html>")
            if fault == "drop_after":
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
            if fault == "notice_after":
                return httpx.Response(200, text="<br />\n<b>Notice</b>: Undefined index in x.php<br />\n" + body)
            return httpx.Response(200, text=body, headers={"Content-Type": "application/json"})

    def _one(self, item: dict[str, Any]) -> dict[str, Any]:
        ref = item["ref"]
        if ref in self.refs:
            return {"ref": ref, "status": "existing", "billableid": self.refs[ref], "message": "", "code": ""}
        if item["clientid"] not in self.clients:
            return {"ref": ref, "status": "refused", "billableid": None, "message": "Client not found",
                    "code": "client_not_found"}
        if item["currency"] != self.clients[item["clientid"]]:
            return {"ref": ref, "status": "refused", "billableid": None, "message": "Wrong currency",
                    "code": "currency_mismatch", "currency": self.clients[item["clientid"]]}
        self.refs[ref] = len(self.items) + 1
        self.items.append({"id": self.refs[ref], **item})
        return {"ref": ref, "status": "created", "billableid": self.refs[ref], "message": "", "code": ""}


def receiver_client(wire: WireReceiver, *, max_retries: int = 2) -> ReceiverClient:
    sleep: Callable[[float], object] = lambda _s: None  # noqa: E731
    return ReceiverClient("https://whmcs.example/modules/servers/computestacks/billing.php", lambda: [SECRET],
                          transport=httpx.MockTransport(wire), sleep=sleep, max_retries=max_retries,
                          timeout=2.0, connect_timeout=0.5)


def three_accounts(world: World) -> tuple[list[Any], WireReceiver]:
    msgs = []
    for i in range(3):
        acct = world.add_account(10 + i, 2 + i, 30 + i, cs_cur="EUR", client_cur="EUR")
        for product in (1, 2):
            world.cs.add_usage(2 + i, product=product, sp=product, total="3.335", end=OCT + timedelta(days=4))
        msgs.append(message(acct))
    return msgs, WireReceiver({30: "EUR", 31: "EUR", 32: "EUR"})


def settled(world: World, msgs: list[Any], wire: WireReceiver) -> None:
    assert sorted(item["ref"] for item in wire.items) == sorted(set(wire.refs))  # one item per ref
    assert len(wire.items) == 6
    for m in msgs:
        uid = m.account.cs_user_id
        assert world.ledger.load(uid).lines == {}
        assert {(ln.status, ln.billable_id == wire.refs[ln.ref]) for ln in world.ledger.lines_of(uid)} == {
            (DONE, True)}
    assert list(world.ledger.attention()) == []
    assert {item["amount"] for item in wire.items} == {"3.34"}


@pytest.mark.parametrize("fault", ["502_after", "504_before", "drop_after", "notice_after"])
def test_an_answer_lost_on_the_wire_is_retried_by_the_client_and_billed_once(world: World, fault: str) -> None:
    msgs, wire = three_accounts(world)
    wire.faults = [fault]
    client = receiver_client(wire)
    results = process_accounts(msgs, world.deps(receiver=client))
    assert [r.error for r in results] == [None] * 3
    assert wire.requests == 2  # the one request lost, sent again with the same refs
    settled(world, msgs, wire)
    created = [o.reason for r in results for o in r.lines]
    assert created.count("existing") == (0 if fault == "504_before" else 6)


def test_answers_lost_more_often_than_the_client_retries_wait_for_the_next_delivery(world: World) -> None:
    msgs, wire = three_accounts(world)
    wire.faults = ["502_after", "drop_after", "notice_after"]  # every attempt of the first delivery
    first = process_accounts(msgs, world.deps(receiver=receiver_client(wire)))
    assert all(r.error for r in first) and len(wire.items) == 6
    assert {(ln.status, ln.attempts) for m in msgs for ln in world.ledger.load(m.account.cs_user_id).lines.values()} \
        == {(PLANNED, 0)}
    assert list(world.ledger.attention()) == []

    again = process_accounts(msgs, world.deps(receiver=receiver_client(wire)))
    assert [r.error for r in again] == [None] * 3 and wire.requests == 4
    settled(world, msgs, wire)


def test_a_currency_refusal_on_the_wire_is_converted_and_billed(world: World) -> None:
    msgs, wire = three_accounts(world)
    wire.clients[31] = "USD"  # the mapping says EUR, the WHMCS client pays in USD
    results = process_accounts(msgs, world.deps(receiver=receiver_client(wire)))
    assert [r.error for r in results] == [None] * 3 and wire.requests == 2
    usd = [item for item in wire.items if item["currency"] == "USD"]
    assert [Decimal(i["amount"]) for i in usd] == [Decimal("3.63")] * 2  # 3.335 EUR / 0.92 = 3.625 USD
    assert all("converted from 3.34 EUR at 1 EUR = 1.086957 USD" in i["description"] for i in usd)
