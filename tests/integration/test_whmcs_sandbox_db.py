"""The WHMCS sandbox in DB-backed mode on a real MariaDB: one WHMCS whichever path created an item.

Currencies and clients are written through to the WHMCS tables; billable items live only in
``tblbillableitems``, so what the real billing receiver (``billing.php``) creates is what the sandbox shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cswhmcs.adapters.whmcs import WhmcsApiError, WhmcsClient
from cswhmcs.signing import compute_signature
from sandboxes.whmcs import WhmcsSandbox
from sandboxes.whmcsdb import WhmcsDatabase

pytestmark = pytest.mark.integration

RECEIVER_SECRET = "sandbox-db-test-access-hash-0123456789"  # noqa: S105 - a test-only Access Hash
ROUTE = "/whmcs/billable-items"


@pytest.fixture
def db(fresh_whmcs_db: WhmcsDatabase) -> WhmcsDatabase:
    """A fresh database per test: ids start at 1 and nothing leaks between tests."""
    return fresh_whmcs_db


@pytest.fixture
def sandbox(db: WhmcsDatabase) -> Iterator[WhmcsSandbox]:
    with WhmcsSandbox(db=db) as sb:
        yield sb


def client_for(sb: WhmcsSandbox) -> WhmcsClient:
    return WhmcsClient(sb.url, sb.identifier, sb.secret, sb.access_key, timeout=5.0, connect_timeout=1.0,
                       sleep=lambda _s: None)


def add_item(sb: WhmcsSandbox, client_id: int, **overrides: Any) -> int:
    args: dict[str, Any] = {"client_id": client_id, "description": "Containers 2025-03 (ann@example.org)",
                            "amount": Decimal("12.30"), "quantity": Decimal("720"), "unit_mode": "quantity",
                            "invoice_action": "duedate", "due_date": date(2025, 4, 1)}
    args.update(overrides)
    with client_for(sb) as whmcs:
        return whmcs.add_billable_item(**args)


# ---------------------------------------------------------------------- currencies and clients


def test_currencies_are_written_through_with_their_ids(sandbox: WhmcsSandbox, db: WhmcsDatabase) -> None:
    # When
    sandbox.set_currency_rate("EUR", "0.95")
    chf = sandbox.add_currency("CHF", "", " CHF", "0.88")
    # Then
    rows = db.query("SELECT id, code, prefix, suffix, format, rate, `default` FROM tblcurrencies ORDER BY id")
    assert [(r["id"], r["code"], r["rate"], r["default"]) for r in rows] == [
        (1, "USD", "1.00000", 1), (2, "EUR", "0.95000", 0), (3, "GBP", "0.79000", 0), (chf["id"], "CHF", "0.88000", 0)]
    assert rows[1]["prefix"] == "€" and rows[1]["suffix"] == " EUR" and rows[1]["format"] == 1


def test_clients_and_their_changes_are_written_through(sandbox: WhmcsSandbox, db: WhmcsDatabase) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org", currency_code="USD")
    jan = sandbox.add_client("Jan", "Berg", "jan@example.de", currency_code="EUR", credit="5.00",
                             companyname="Berg GmbH", country="DE")
    # When
    with client_for(sandbox) as whmcs:
        whmcs.add_credit(ann["id"], Decimal("2.50"), "Goodwill")
    sandbox.set_client_currency(jan["id"], "GBP")
    sandbox.set_client_status(jan["id"], "Inactive")
    # Then
    rows = {r["id"]: r for r in db.query("SELECT * FROM tblclients ORDER BY id")}
    assert set(rows) == {ann["id"], jan["id"]}
    assert (rows[ann["id"]]["email"], rows[ann["id"]]["currency"], rows[ann["id"]]["credit"]) == (
        "ann@example.org", 1, "2.50")
    assert (rows[jan["id"]]["firstname"], rows[jan["id"]]["companyname"], rows[jan["id"]]["country"]) == (
        "Jan", "Berg GmbH", "DE")
    jan_row = rows[jan["id"]]
    assert (jan_row["currency"], jan_row["credit"], jan_row["status"]) == (3, "5.00", "Inactive")
    assert sandbox.client(jan["id"])["currency_code"] == "GBP"


# ---------------------------------------------------------------------- billable items


@pytest.mark.parametrize(("version", "unit"), [("8.10.1", "quantity"), ("8.1.3", "hours")])
def test_add_billable_item_lands_in_the_table_and_reads_back_as_in_memory(db: WhmcsDatabase, version: str,
                                                                          unit: str) -> None:
    # Given: the same call against a DB-backed and an in-memory sandbox
    results = []
    for backing in (db, None):
        with WhmcsSandbox(version=version, db=backing) as sb:
            ann = sb.add_client("Ann", "Lee", "ann@example.org")
            # When
            billable_id = add_item(sb, ann["id"], unit_mode=unit)
            results.append((billable_id, sb.billable_items))
    # Then: the row is in tblbillableitems ...
    (row,) = db.billable_items()
    assert (row["userid"], row["amount"], row["hours"], row["unit"], row["invoiceaction"], row["duedate"]) == (
        1, "12.30", "720.0000", unit, "duedate", "2025-04-01")
    assert row["description"] == "Containers 2025-03 (ann@example.org)"
    # ... and the sandbox shows it exactly as the in-memory mode would
    (db_id, db_items), (mem_id, mem_items) = results
    assert db_id == mem_id == row["id"] and db_items == mem_items


def test_items_get_increasing_ids_and_a_new_sandbox_on_the_same_database_sees_them(db: WhmcsDatabase) -> None:
    # Given
    with WhmcsSandbox(db=db) as sb:
        ann = sb.add_client("Ann", "Lee", "ann@example.org")
        ids = [add_item(sb, ann["id"], amount=Decimal(f"{n}.00"), quantity=Decimal("1.5")) for n in (1, 2, 3)]
    # When
    with WhmcsSandbox(db=db) as again:
        items = again.billable_items
    # Then
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [(i["id"], i["amount"], i["quantity"]) for i in items] == [
        (ids[0], "1.00", "1.5"), (ids[1], "2.00", "1.5"), (ids[2], "3.00", "1.5")]


def test_a_refused_billable_item_writes_nothing(sandbox: WhmcsSandbox, db: WhmcsDatabase) -> None:
    # Given
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    # When / Then
    with pytest.raises(WhmcsApiError, match="Client ID not Found"):
        add_item(sandbox, ann["id"] + 100)
    with pytest.raises(WhmcsApiError, match="Invalid Invoice Action"):
        add_item(sandbox, ann["id"], invoice_action="bogus")
    assert db.billable_items() == [] and sandbox.billable_items == []


def test_an_item_written_to_the_table_by_someone_else_shows_in_the_sandbox(sandbox: WhmcsSandbox,
                                                                           db: WhmcsDatabase) -> None:
    # Given: an admin adds an item in WHMCS directly
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org")
    db.add_billable_item(userid=ann["id"], description="Manual fee", hours="1", amount="9.99", unit="quantity",
                         invoiceaction="nextcron", duedate=None)
    # When
    (item,) = sandbox.billable_items
    # Then
    assert (item["clientid"], item["description"], item["amount"], item["quantity"], item["duedate"]) == (
        ann["id"], "Manual fee", "9.99", "1", None)


def test_receiver_servers_need_a_database() -> None:
    with WhmcsSandbox() as sb, pytest.raises(RuntimeError, match="DB-backed"):
        sb.set_receiver_servers(["x"])


# ---------------------------------------------------------------------- the real receiver


def signed_post(url: str, payload: dict[str, Any], secret: str = RECEIVER_SECRET) -> httpx.Response:
    body = json.dumps(payload).encode()
    ts = int(time.time())
    headers = {"Content-Type": "application/json", "X-CSW-Timestamp": str(ts),
               "X-CSW-Signature": compute_signature(secret.encode(), ts, ROUTE, body)}
    return httpx.post(url, content=body, headers=headers, timeout=20)


def test_an_item_the_receiver_creates_shows_in_the_sandbox(sandbox: WhmcsSandbox, db: WhmcsDatabase) -> None:
    from sandboxes.receiver import ReceiverServer

    # Given
    sandbox.add_client("Ann", "Lee", "ann@example.org", currency_code="USD")
    jan = sandbox.add_client("Jan", "Berg", "jan@example.de", currency_code="EUR")
    sandbox.set_receiver_servers([RECEIVER_SECRET])
    item = {"ref": "u1:p1:2025-03", "clientid": jan["id"], "description": "Containers 2025-03 [ref u1:p1:2025-03]",
            "amount": "11.04", "currency": "EUR", "quantity": "720", "unit": "quantity",
            "invoiceaction": "duedate", "duedate": "2025-04-01"}
    with ReceiverServer(db, workers=2) as receiver:
        # When
        resp = signed_post(receiver.url, {"items": [item]})
        assert resp.status_code == 200, resp.text[:500]
        later = add_item(sandbox, jan["id"])  # the sandbox's own API path, after the receiver's item
    # Then
    (result,) = resp.json()["items"]
    assert result["status"] == "created" and result["ref"] == item["ref"]
    first, second = sandbox.billable_items
    assert first["id"] == result["billableid"] and later == second["id"] > first["id"]
    assert (first["clientid"], first["amount"], first["quantity"], first["unit"]) == (jan["id"], "11.04", "720",
                                                                                      "quantity")
    assert first["description"] == item["description"] and first["duedate"] == "2025-04-01"


def test_an_answer_lost_behind_a_proxy_after_commit_is_one_item_when_sent_again(sandbox: WhmcsSandbox,
                                                                                db: WhmcsDatabase) -> None:
    from sandboxes.faultproxy import FaultProxy
    from sandboxes.receiver import ReceiverServer

    # Given: the receiver behind a proxy that loses the next answer after the receiver committed
    ann = sandbox.add_client("Ann", "Lee", "ann@example.org", currency_code="USD")
    sandbox.set_receiver_servers([RECEIVER_SECRET])
    item = {"ref": "u2:p1:2025-03", "clientid": ann["id"], "description": "Containers [ref u2:p1:2025-03]",
            "amount": "3.00", "currency": "USD", "quantity": "1.5", "unit": "hours",
            "invoiceaction": "nextcron", "duedate": "2025-04-01"}
    with ReceiverServer(db, workers=2) as receiver, FaultProxy(receiver.url) as proxy:
        proxy.drop_answer_next()
        with pytest.raises(httpx.RemoteProtocolError):
            signed_post(proxy.url, {"items": [item]})
        # When: the same item is sent again
        resp = signed_post(proxy.url, {"items": [item]})
    # Then
    assert resp.status_code == 200, resp.text[:500]
    (result,) = resp.json()["items"]
    (only,) = sandbox.billable_items
    assert result["status"] == "existing" and result["billableid"] == only["id"]
    assert (only["clientid"], only["amount"], only["quantity"]) == (ann["id"], "3.00", "1.5")
    assert proxy.forwarded_count == 2
