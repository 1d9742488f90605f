"""The billing receiver (whmcs/modules/servers/computestacks/billing.php, API.md section 8) on a real database.

billing.php runs under `php -S` with 8 workers on the stand-in WHMCS bootstrap (sandboxes/whmcs_root/init.php:
Illuminate's Capsule, localAPI, logModuleCall), against MariaDB (InnoDB: the engine WHMCS runs on) and, for the
core cases, SQLite. What must hold: a ref creates at most one billable item, ever (repeats, concurrency, crashes);
refusals and bad requests write nothing; the answer is JSON and nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxes.mariadb import MariaDB
from sandboxes.receiver import ReceiverServer
from sandboxes.whmcsdb import WhmcsDatabase
from tests.php.conftest import (
    EUR_CLIENT,
    NEEDS_PHP,
    PHP,
    RECEIVER_SECRET,
    USD_CLIENT,
    item,
    post_items,
    signature_headers,
)

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "whmcs" / "modules" / "servers" / "computestacks"
RECEIVER_FILES = [MODULE / "billing.php", MODULE / "lib" / "Receiver.php"]
BOTH = pytest.mark.parametrize("whmcs_db", ["mariadb", "sqlite"], indirect=True)
SECOND_SECRET = "receiver-access-hash-second-91bc"
DISABLED_SECRET = "receiver-access-hash-disabled-44d0"

pytestmark = [pytest.mark.php, NEEDS_PHP]


def answers(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["result"] == "success" and data["receiver"] == "1", data
    return list(data["items"])


def assert_nothing_written(db: WhmcsDatabase) -> None:
    assert db.billable_items() == []
    assert db.receiver_refs() == []


# ---------------------------------------------------------------------- created, existing, concurrency


@BOTH
def test_created_then_existing(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    first = answers(post_items(receiver, [item("svc:1:prod:2026-11")]))
    assert [(a["ref"], a["status"], a["code"]) for a in first] == [("svc:1:prod:2026-11", "created", "")]
    billable_id = first[0]["billableid"]
    assert isinstance(billable_id, int) and billable_id > 0

    again = answers(post_items(receiver, [item("svc:1:prod:2026-11", amount="99.99")]))
    assert [(a["status"], a["billableid"]) for a in again] == [("existing", billable_id)]

    rows = whmcs_db.billable_items()
    assert len(rows) == 1
    assert rows[0]["id"] == billable_id
    assert (rows[0]["userid"], rows[0]["amount"], rows[0]["hours"], rows[0]["unit"], rows[0]["invoiceaction"],
            rows[0]["duedate"]) == (USD_CLIENT, "12.50", "730.0000", "quantity", "duedate", "2027-01-15")
    assert rows[0]["description"] == "Container usage [ref svc:1:prod:2026-11]"
    refs = whmcs_db.receiver_refs()
    assert [(r["ref"], r["billableid"], r["clientid"], r["amount"], r["currency"]) for r in refs] == [
        ("svc:1:prod:2026-11", billable_id, USD_CLIENT, "12.50", "USD")]


@BOTH
def test_concurrent_requests_create_each_ref_once(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    """8 requests at once (the refs table does not exist yet, so they also race to create it)."""
    refs = [f"svc:{n}:prod:2026-11" for n in range(10)]
    batch = [item(r) for r in refs]
    barrier = threading.Barrier(8)

    def send(_: int) -> list[dict[str, Any]]:
        barrier.wait()
        return answers(post_items(receiver, batch, timeout=60))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))

    rows = whmcs_db.billable_items()
    assert len(rows) == 10
    ids_by_ref: dict[str, set[int]] = {}
    for result in results:
        assert [a["ref"] for a in result] == refs
        for a in result:
            assert a["status"] in ("created", "existing"), a
            ids_by_ref.setdefault(a["ref"], set()).add(a["billableid"])
    assert all(len(ids) == 1 for ids in ids_by_ref.values()), ids_by_ref
    descriptions = {r["id"]: r["description"] for r in rows}
    assert all(descriptions[next(iter(ids))].endswith(f"[ref {ref}]") for ref, ids in ids_by_ref.items())
    created = sum(a["status"] == "created" for result in results for a in result)
    assert created == 10
    assert sorted(r["ref"] for r in whmcs_db.receiver_refs()) == sorted(refs)
    # the refs table appeared complete (primary key included) and the losers of the creation race cleaned up
    assert [t for t in whmcs_db.tables() if t.startswith("mod_")] == ["mod_computestacks_billing_refs"]


@BOTH
def test_a_second_request_waits_for_the_first_and_answers_existing(receiver: ReceiverServer,
                                                                   whmcs_db: WhmcsDatabase) -> None:
    """The unique key, not a check-then-insert: B arrives while A's transaction is open and must wait for it."""
    answers(post_items(receiver, []))  # warm up
    answers(post_items(receiver, [item("warm:0")]))  # the refs table exists now
    receiver.pause_after_add(2)
    box: dict[str, Any] = {}
    first = threading.Thread(target=lambda: box.setdefault("a", post_items(receiver, [item("race:1")])))
    first.start()
    receiver.wait_paused()  # A is inside its transaction (asleep after AddBillableItem)
    b = answers(post_items(receiver, [item("race:1")]))
    first.join(30)
    a = answers(box["a"])
    assert a[0]["status"] == "created"
    assert b[0] == {**b[0], "status": "existing", "billableid": a[0]["billableid"]}
    assert len([r for r in whmcs_db.billable_items() if "race:1" in r["description"]]) == 1


def test_duplicate_ref_inside_one_request(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    result = answers(post_items(receiver, [item("dup:1"), item("other:1"), item("dup:1")]))
    assert [a["status"] for a in result] == ["created", "created", "existing"]
    assert result[2]["billableid"] == result[0]["billableid"]
    assert len(whmcs_db.billable_items()) == 2


def test_refs_are_case_sensitive(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    result = answers(post_items(receiver, [item("svc:abc"), item("svc:ABC")]))
    assert [a["status"] for a in result] == ["created", "created"]
    assert result[0]["billableid"] != result[1]["billableid"]


def test_ping(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    resp = post_items(receiver, [])
    assert resp.status_code == 200
    assert resp.json() == {"result": "success", "receiver": "1", "items": []}
    assert_nothing_written(whmcs_db)


@pytest.mark.parametrize(("version", "unit", "hours_column", "unit_column"), [
    ("8.10.1", "hours", "2.5000", "hours"),
    ("8.1.3", "hours", "2.5000", "hours"),  # before 8.2 WHMCS reads `hours` only: the receiver sends it
    ("8.10.1", "quantity", "2.5000", "quantity"),
])
def test_units(whmcs_db: WhmcsDatabase, version: str, unit: str, hours_column: str, unit_column: str) -> None:
    with ReceiverServer(whmcs_db, workers=1, whmcs_version=version) as server:
        result = answers(post_items(server, [item("unit:1", unit=unit, quantity="2.5", invoiceaction="nextcron",
                                                   duedate=None)]))
    assert result[0]["status"] == "created"
    row = whmcs_db.billable_items()[0]
    assert (row["hours"], row["unit"], row["invoiceaction"], row["duedate"]) == (hours_column, unit_column,
                                                                                 "nextcron", None)


# ---------------------------------------------------------------------- refused items


@BOTH
def test_currency_mismatch_is_refused_with_the_clients_currency(receiver: ReceiverServer,
                                                                whmcs_db: WhmcsDatabase) -> None:
    result = answers(post_items(receiver, [item("cur:1", clientid=EUR_CLIENT, currency="USD"),
                                           item("cur:2", clientid=EUR_CLIENT, currency="eur")]))
    assert result[0] == {"ref": "cur:1", "status": "refused", "billableid": None, "code": "currency_mismatch",
                         "currency": "EUR", "message": result[0]["message"]}
    assert "EUR" in result[0]["message"]
    assert (result[1]["status"], result[1]["code"]) == ("created", "")  # codes compare case-insensitively
    assert [r["userid"] for r in whmcs_db.billable_items()] == [EUR_CLIENT]
    assert [r["ref"] for r in whmcs_db.receiver_refs()] == ["cur:2"]


def test_client_not_found(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    result = answers(post_items(receiver, [item("nc:1", clientid=999)]))
    assert (result[0]["status"], result[0]["code"], result[0]["billableid"]) == ("refused", "client_not_found", None)
    assert "999" in result[0]["message"]
    assert whmcs_db.billable_items() == []
    assert whmcs_db.receiver_refs() == []


def test_whmcs_rejection_rolls_back_the_ref(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    """A description of "0" passes our check but not WHMCS's (`!$description` is true for "0" in PHP)."""
    result = answers(post_items(receiver, [item("rej:1", description="0"), item("ok:1")]))
    assert (result[0]["status"], result[0]["code"], result[0]["billableid"]) == ("refused", "rejected", None)
    assert "You must provide a description" in result[0]["message"]
    assert result[1]["status"] == "created"
    assert [r["ref"] for r in whmcs_db.receiver_refs()] == ["ok:1"]
    assert len(whmcs_db.billable_items()) == 1
    # Refused is not remembered: once WHMCS accepts the item, the same ref creates it.
    assert answers(post_items(receiver, [item("rej:1")]))[0]["status"] == "created"


def test_database_failure_answers_503_and_commits_nothing(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    answers(post_items(receiver, [item("pre:1")]))
    whmcs_db.execute("RENAME TABLE tblbillableitems TO tblbillableitems_away")
    resp = post_items(receiver, [item("db:1")])
    assert resp.status_code == 503
    assert resp.json()["result"] == "error" and "again" in resp.json()["message"]
    assert [r["ref"] for r in whmcs_db.receiver_refs()] == ["pre:1"]
    whmcs_db.execute("RENAME TABLE tblbillableitems_away TO tblbillableitems")
    assert answers(post_items(receiver, [item("db:1")]))[0]["status"] == "created"


# ---------------------------------------------------------------------- 400: the whole body first


def _bad_bodies() -> list[tuple[str, bytes, str]]:
    def items(*xs: dict[str, Any]) -> bytes:
        return json.dumps({"items": list(xs)}).encode()

    def without(field: str) -> dict[str, Any]:
        x = item("bad:1")
        del x[field]
        return x

    return [
        ("not JSON", b"{items: nope", "not valid JSON"),
        ("empty body", b"", "not valid JSON"),
        ("not an object", b'[{"ref": "a"}]', "must be a JSON object"),
        ("no items", b'{"things": []}', 'no "items"'),
        ("items not a list", b'{"items": {"ref": "a"}}', '"items" must be a list'),
        ("101 items", items(*[item(f"many:{n}") for n in range(101)]), "101 entries; at most 100"),
        ("item not an object", items(item("ok:1"), "x"), "items[1] must be an object"),
        ("bad ref chars", items(item("ok:1"), item("bad ref/1")), "items[1].ref must be 1-64"),
        ("ref too long", items(item("r" * 65)), "items[0].ref must be 1-64"),
        ("empty ref", items(item("")), "items[0].ref must be 1-64"),
        ("bad amount", items(item("ok:1"), item("ok:2", amount="12.5")), "items[1].amount"),
        ("amount as number", items(item("ok:1", amount=12.5)), "items[0].amount"),
        ("missing field", items(item("ok:1"), item("ok:2"), without("currency")), "items[2].currency is missing"),
        ("clientid as string", items(item("ok:1", clientid="1")), "items[0].clientid must be a positive integer"),
        ("clientid zero", items(item("ok:1", clientid=0)), "items[0].clientid"),
        ("empty description", items(item("ok:1", description="  ")), "items[0].description"),
        ("bad currency", items(item("ok:1", currency="EURO")), "items[0].currency"),
        ("bad quantity", items(item("ok:1", quantity="1e3")), "items[0].quantity"),
        ("bad unit", items(item("ok:1", unit="days")), "items[0].unit"),
        ("bad invoiceaction", items(item("ok:1", invoiceaction="recur")), "items[0].invoiceaction"),
        ("impossible date", items(item("ok:1", duedate="2027-02-30")), "items[0].duedate must be a valid date"),
        ("date format", items(item("ok:1", duedate="15.01.2027")), "items[0].duedate"),
        ("duedate missing for duedate", items(without("duedate")), "items[0].duedate is missing"),
    ]


@BOTH
def test_bad_bodies_are_refused_before_anything_is_written(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    for name, body, expected in _bad_bodies():
        resp = post_items(receiver, body=body)
        assert resp.status_code == 400, (name, resp.text)
        data = resp.json()
        assert data["result"] == "error" and expected in data["message"], (name, data)
        assert_nothing_written(whmcs_db)


def test_body_over_512_kib_is_refused(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    body = json.dumps({"items": [item("big:1", description="x" * (512 * 1024))]}).encode()
    resp = post_items(receiver, body=body)
    assert resp.status_code == 400 and "512 KiB" in resp.json()["message"]
    assert_nothing_written(whmcs_db)


def test_only_post(receiver: ReceiverServer) -> None:
    resp = httpx.get(receiver.url, timeout=10)
    assert resp.status_code == 405 and resp.json()["result"] == "error"


# ---------------------------------------------------------------------- 401: the signature


def _signature_cases() -> list[tuple[str, Any]]:
    now = int(time.time())

    def with_headers(**h: str) -> Any:
        return lambda body: {"Content-Type": "application/json", **h}

    def signed(secrets: list[str], offset: int = 0, route: str = "/whmcs/billable-items") -> Any:
        # the timestamp is taken when the request is made, so the offset from the receiver's clock is exact
        return lambda body: signature_headers(body, secrets, timestamp=int(time.time()) + offset, route=route)

    def tampered(body: bytes) -> dict[str, str]:
        h = signature_headers(body)
        h["X-CSW-Signature"] = h["X-CSW-Signature"][:-1] + ("0" if h["X-CSW-Signature"][-1] != "0" else "1")
        return h

    def eleven(body: bytes) -> dict[str, str]:
        h = signature_headers(body, [f"wrong-secret-{n:02d}" for n in range(10)] + [RECEIVER_SECRET])
        return h

    return [
        ("no headers", with_headers(), "X-CSW-Timestamp header is missing"),
        ("no signature", with_headers(**{"X-CSW-Timestamp": str(now)}), "X-CSW-Signature header is missing"),
        ("no timestamp", lambda body: {k: v for k, v in signature_headers(body).items() if k != "X-CSW-Timestamp"},
         "X-CSW-Timestamp header is missing"),
        ("timestamp not a number", lambda body: {**signature_headers(body), "X-CSW-Timestamp": "yesterday"},
         "X-CSW-Timestamp header is malformed"),
        ("signature malformed", with_headers(**{"X-CSW-Timestamp": str(now), "X-CSW-Signature": "v1=abc"}),
         "X-CSW-Signature header is malformed"),
        ("other scheme", with_headers(**{"X-CSW-Timestamp": str(now), "X-CSW-Signature": "sha256=" + "a" * 64}),
         "X-CSW-Signature header is malformed"),
        ("eleven signatures", eleven, "more than 10 signatures"),
        ("wrong secret", signed(["not-the-access-hash-1"]), "does not match"),
        ("two wrong", signed(["not-the-access-hash-1", "not-the-access-hash-2"]), "does not match"),
        ("tampered", tampered, "does not match"),
        ("stale 301 s", signed([RECEIVER_SECRET], -301), "300 s"),
        # +302: the receiver's clock may have ticked into the next second since the timestamp was taken
        ("future 302 s", signed([RECEIVER_SECRET], +302), "300 s"),
        ("another route", signed([RECEIVER_SECRET], route="/v1/accounts/suspend"), "does not match"),
        ("disabled server's hash", signed([DISABLED_SECRET]), "does not match"),
    ]


@BOTH
def test_signature_refusals_write_nothing(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    whmcs_db.set_servers([RECEIVER_SECRET, SECOND_SECRET], disabled_hashes=[DISABLED_SECRET])
    body = json.dumps({"items": [item("sig:1")]}).encode()
    for name, make_headers, expected in _signature_cases():
        resp = httpx.post(receiver.url, content=body, headers=make_headers(body), timeout=10)
        assert resp.status_code == 401, (name, resp.text)
        data = resp.json()
        assert data["result"] == "error" and expected in data["message"], (name, data)
        assert_nothing_written(whmcs_db)
    log = whmcs_db.activity_log()
    assert len(log) == len(_signature_cases())
    assert all("ComputeStacks billing receiver refused" in row["description"] for row in log)


@BOTH
def test_signatures_that_are_accepted(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    whmcs_db.set_servers([RECEIVER_SECRET, f" old-secret-rotating-out-55aa , {SECOND_SECRET} \n"],
                         disabled_hashes=[DISABLED_SECRET])
    cases = [
        ("second v1= is right", ["not-the-access-hash-1", RECEIVER_SECRET], 0, "acc:1"),
        ("second server record", [SECOND_SECRET], 0, "acc:2"),
        ("one of several secrets in one Access Hash", ["old-secret-rotating-out-55aa"], 0, "acc:3"),
        ("299 s old", [RECEIVER_SECRET], -299, "acc:4"),
        ("299 s ahead", [RECEIVER_SECRET], +299, "acc:5"),
    ]
    for name, secrets, offset, ref in cases:
        resp = post_items(receiver, [item(ref)], secrets=secrets, timestamp=int(time.time()) + offset)
        assert resp.status_code == 200, (name, resp.text)
        assert resp.json()["items"][0]["status"] == "created", name
    assert len(whmcs_db.billable_items()) == len(cases)


def test_no_server_record_refuses_everything(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    whmcs_db.set_servers([], disabled_hashes=[RECEIVER_SECRET])
    resp = post_items(receiver, [item("none:1")])
    assert resp.status_code == 401 and "no enabled ComputeStacks server record" in resp.json()["message"]
    assert_nothing_written(whmcs_db)


# ---------------------------------------------------------------------- crash inside the transaction


def test_php_killed_between_insert_and_commit_leaves_nothing(mariadb_server: MariaDB, whmcs_db: WhmcsDatabase,
                                                             receiver: ReceiverServer) -> None:
    answers(post_items(receiver, [item("warm:1")]))  # the refs table exists
    receiver.pause_after_add(60)
    sent = threading.Thread(target=lambda: _swallow(lambda: post_items(receiver, [item("crash:1")], timeout=90)),
                            daemon=True)
    sent.start()
    dirty = mariadb_server.connect(whmcs_db.database)
    try:
        with dirty.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        deadline = time.monotonic() + 20
        while True:  # the ref row and the item exist, uncommitted: the request is asleep inside its transaction
            with dirty.cursor() as cur:
                cur.execute("SELECT (SELECT COUNT(*) FROM mod_computestacks_billing_refs WHERE ref = 'crash:1'), "
                            "(SELECT COUNT(*) FROM tblbillableitems WHERE description LIKE '%crash:1%')")
                row = cur.fetchone()
            if row == (1, 1):
                break
            assert time.monotonic() < deadline, "the paused request never got inside its transaction"
            time.sleep(0.05)
        with dirty.cursor() as cur:  # the paused request's connection: the one transaction that has written here
            cur.execute("SELECT t.trx_mysql_thread_id FROM information_schema.innodb_trx t "
                        "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                        "WHERE p.db = %s AND t.trx_rows_modified > 0", (whmcs_db.database,))
            paused = [r[0] for r in cur.fetchall()]
        assert len(paused) == 1, paused
        receiver.kill()
        deadline = time.monotonic() + 20
        while True:  # MariaDB notices the dead connection and rolls its transaction back
            with dirty.cursor() as cur:
                cur.execute("SELECT trx_state, trx_started, trx_rows_modified FROM information_schema.innodb_trx "
                            "WHERE trx_mysql_thread_id = %s", (paused[0],))
                left = cur.fetchall()
            if not left:
                break
            assert time.monotonic() < deadline, f"MariaDB did not roll back the killed request's transaction: {left}"
            # INNODB_TRX is a cache InnoDB refreshes only when it was last read more than 100 ms ago: polling
            # faster than that would read the same stale copy for ever.
            time.sleep(0.25)
    finally:
        dirty.close()
    sent.join(10)
    fresh = WhmcsDatabase.mariadb(mariadb_server.socket, whmcs_db.database)
    try:
        assert [r["ref"] for r in fresh.receiver_refs()] == ["warm:1"]
        assert [r for r in fresh.billable_items() if "crash:1" in r["description"]] == []
    finally:
        fresh.close()
    with ReceiverServer(whmcs_db, workers=2) as again:  # the resend after the crash creates it, once
        assert answers(post_items(again, [item("crash:1")]))[0]["status"] == "created"
        assert answers(post_items(again, [item("crash:1")]))[0]["status"] == "existing"
    assert len([r for r in whmcs_db.billable_items() if "crash:1" in r["description"]]) == 1


def _swallow(call: Any) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass


# ---------------------------------------------------------------------- output and logs


def test_nothing_is_printed_before_the_json(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    receiver.notice_in_bootstrap(True)
    body = json.dumps({"items": [item("out:1")]}).encode()
    responses = {
        "200": post_items(receiver, [item("out:1")]),
        "400": post_items(receiver, body=b"[]"),
        "401": httpx.post(receiver.url, content=body, headers={"X-CSW-Timestamp": "1"}, timeout=10),
        "405": httpx.get(receiver.url, timeout=10),
    }
    for status, resp in responses.items():
        assert str(resp.status_code) == status, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.text.startswith("{") and resp.text.endswith("}"), (status, resp.text[:200])
        assert isinstance(json.loads(resp.text), dict)
        assert "careless" not in resp.text and "Notice" not in resp.text
    assert answers(responses["200"])[0]["status"] == "created"


def test_the_bootstrap_does_print_when_asked(whmcs_db: WhmcsDatabase) -> None:
    """The knob works: a plain PHP page on the same bootstrap shows the stray output billing.php hides."""
    with ReceiverServer(whmcs_db, workers=1) as server:
        server.notice_in_bootstrap(True)
        (server.root / "plain.php").write_text("<?php require __DIR__ . '/init.php'; echo 'page';")
        text = httpx.get(f"{server.base_url}/plain.php", timeout=10).text
    assert "careless addon" in text and text.endswith("page")


def test_module_log_holds_no_secret(receiver: ReceiverServer, whmcs_db: WhmcsDatabase) -> None:
    whmcs_db.set_servers([f"{RECEIVER_SECRET},{SECOND_SECRET}"])
    signatures: list[str] = []
    for batch in ([item("log:1"), item("log:2", clientid=EUR_CLIENT)], [], [item("log:1")]):
        body = json.dumps({"items": batch}).encode()
        headers = signature_headers(body, ["not-the-access-hash-1", SECOND_SECRET])
        signatures += re.findall(r"v1=([0-9a-f]{64})", headers["X-CSW-Signature"])
        assert httpx.post(receiver.url, content=body, headers=headers, timeout=10).status_code == 200
    assert post_items(receiver, body=b"{}", secrets=[RECEIVER_SECRET]).status_code == 400
    log = whmcs_db.module_log()
    assert len(log) == 4  # each request that passed the signature check, once
    assert log[3]["response"].startswith("400: The body has no")
    assert log[0]["module"] == "computestacks" and "log:1" in log[0]["request"] and "log:2" in log[0]["request"]
    assert "currency_mismatch" in log[0]["response"]
    text = json.dumps(log + whmcs_db.activity_log())
    for secret in (RECEIVER_SECRET, SECOND_SECRET, *signatures):
        assert secret not in text


# ---------------------------------------------------------------------- PHP 7.4


_PHP8_ONLY = r"""
$bad = array();
$tokens = array('T_MATCH' => 'match', 'T_NULLSAFE_OBJECT_OPERATOR' => '?->', 'T_ENUM' => 'enum',
    'T_READONLY' => 'readonly', 'T_ATTRIBUTE' => '#[...]');
$functions = array('str_contains', 'str_starts_with', 'str_ends_with', 'array_is_list', 'get_debug_type', 'fdiv');
foreach (array_slice($argv, 1) as $file) {
    $code = array();
    foreach (token_get_all(file_get_contents($file)) as $t) {
        if (!is_array($t) || !in_array($t[0], array(T_WHITESPACE, T_COMMENT, T_DOC_COMMENT), true)) {
            $code[] = $t;
        }
    }
    $n = count($code);
    $depth = 0;
    $signature = false;
    for ($i = 0; $i < $n; $i++) {
        $t = $code[$i];
        $prev = $i > 0 ? $code[$i - 1] : null;
        $next = $i + 1 < $n ? $code[$i + 1] : null;
        if (is_array($t)) {
            $name = token_name($t[0]);
            if (isset($tokens[$name])) { $bad[] = basename($file) . ":$t[2] $tokens[$name]"; }
            if ($t[0] === T_STRING && $next === '(' && in_array(strtolower($t[1]), $functions, true)
                && !(is_array($prev)
                    && in_array($prev[0], array(T_OBJECT_OPERATOR, T_DOUBLE_COLON, T_FUNCTION), true))) {
                $bad[] = basename($file) . ":$t[2] $t[1]()";
            }
            if ($t[0] === T_STRING && $next === ':' && ($prev === '(' || $prev === ',') && !$signature) {
                $bad[] = basename($file) . ":$t[2] named argument";
            }
            if ($signature && $depth === 1 && in_array($t[0], array(T_PUBLIC, T_PRIVATE, T_PROTECTED), true)) {
                $bad[] = basename($file) . ":$t[2] constructor promotion";
            }
            if ($signature && $t[0] === T_STRING && strtolower($t[1]) === 'mixed') {
                $bad[] = basename($file) . ":$t[2] mixed type";
            }
            if ($t[0] === T_FUNCTION || $t[0] === T_FN) { $signature = true; $depth = 0; }
            continue;
        }
        if ($signature) {
            if ($t === '(') { $depth++; }
            elseif ($t === ')') { $depth--; if ($depth === 0) { $signature = false; } }
            elseif ($t === '|' && $depth === 1) { $bad[] = basename($file) . ": union type"; }
        }
        if ($t === ':' && $prev === ')' && is_array($next) && $next[0] === T_STRING
            && strtolower($next[1]) === 'mixed') {
            $bad[] = basename($file) . ": mixed return type";
        }
    }
}
echo json_encode($bad);
"""


@pytest.mark.parametrize("path", RECEIVER_FILES, ids=lambda p: p.name)
def test_receiver_parses(path: Path) -> None:
    assert PHP is not None
    proc = subprocess.run([PHP, "-l", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_receiver_keeps_to_php_74() -> None:
    assert PHP is not None
    proc = subprocess.run([PHP, "-r", _PHP8_ONLY, "--", *map(str, RECEIVER_FILES)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_php_74_check_finds_php_8_code(tmp_path: Path) -> None:
    sample = tmp_path / "php8.php"
    sample.write_text("<?php class A { public function __construct(private int $x) {} }\n"
                      "function f(int|string $a): mixed { return match ($a) { 1 => $a?->b, default => 0 }; }\n"
                      "str_contains('a', 'b'); f(a: 1);\n")
    assert PHP is not None
    proc = subprocess.run([PHP, "-r", _PHP8_ONLY, "--", str(sample)], capture_output=True, text=True, timeout=30,
                          check=False)
    found = " ".join(json.loads(proc.stdout))
    for construct in ("constructor promotion", "union type", "mixed", "match", "?->", "str_contains()",
                      "named argument"):
        assert construct in found, (construct, found)
