"""`/v1/connection/test` with WHMCS_RECEIVER_URL set, through the live API, against the REAL receiver
(`whmcs/modules/servers/computestacks/billing.php` served by `php -S` on a throwaway MariaDB): the message says
whether the receiver answered, refused the signature, is missing or cannot be reached; unset, nothing changes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from sandboxes.mariadb import available as mariadb_available
from sandboxes.receiver import ReceiverServer
from sandboxes.whmcsdb import WhmcsDatabase
from tests.conftest import OLD_SIGNING_SECRET, SIGNING_SECRET, LiveStack
from tests.support.endpoints import closed_port

__all__ = ["closed_port"]  # the fixture (tests/support/endpoints.py), used by name

pytestmark = pytest.mark.skipif(
    shutil.which("php") is None or not mariadb_available(),
    reason="the receiver needs php-cli and MariaDB (apt-get install php-cli php-mysql php-illuminate-database "
           "mariadb-server)")

BOTH_OK = "ComputeStacks and WHMCS both accepted the backend's credentials."
ALL_OK = ("ComputeStacks and WHMCS both accepted the backend's credentials, and the WHMCS billing receiver "
          "accepted its signature.")


@pytest.fixture
def receiver_db(fresh_whmcs_db: WhmcsDatabase) -> Iterator[WhmcsDatabase]:
    db = fresh_whmcs_db
    db.create_schema()
    db.put_currency(id=1, code="USD", prefix="$", suffix=" USD", format=1, rate="1.00000", default=True)
    db.put_client(id=1, firstname="Ann", lastname="Usd", email="ann@example.org", currency=1)
    db.set_servers([SIGNING_SECRET])  # the ComputeStacks server record's Access Hash
    yield db


@pytest.fixture
def receiver(receiver_db: WhmcsDatabase) -> Iterator[ReceiverServer]:
    server = ReceiverServer(receiver_db, workers=2).start()
    yield server
    server.stop()


def connection_test(stack: LiveStack, monkeypatch: pytest.MonkeyPatch, receiver_url: str | None) -> httpx.Response:
    from cswhmcs.api import reset_deps

    if receiver_url is None:
        monkeypatch.delenv("WHMCS_RECEIVER_URL", raising=False)
    else:
        monkeypatch.setenv("WHMCS_RECEIVER_URL", receiver_url)
    reset_deps()
    return stack.call("/v1/connection/test", {})


def failure(resp: httpx.Response, status: int) -> tuple[str, str]:
    """A failed connection test's code and message, once its status is the one expected."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    return body["code"], body["message"]


def test_a_receiver_that_answers_is_named_in_the_one_success_sentence(
        live_stack: LiveStack, receiver: ReceiverServer, receiver_db: WhmcsDatabase,
        monkeypatch: pytest.MonkeyPatch) -> None:
    resp = connection_test(live_stack, monkeypatch, receiver.url)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"result": "success", "message": ALL_OK}
    # Any active backend secret may match the Access Hash: the previous one after a rotation too
    receiver_db.set_servers([OLD_SIGNING_SECRET])
    assert connection_test(live_stack, monkeypatch, receiver.url).json()["message"] == ALL_OK
    # A ping creates nothing
    assert receiver_db.billable_items() == [] and receiver_db.receiver_refs() == []


def test_a_wrong_access_hash_says_to_set_it_to_the_signing_secret(
        live_stack: LiveStack, receiver: ReceiverServer, receiver_db: WhmcsDatabase,
        monkeypatch: pytest.MonkeyPatch) -> None:
    receiver_db.set_servers(["an-access-hash-that-is-not-ours-9d2c"])
    resp = connection_test(live_stack, monkeypatch, receiver.url)
    assert failure(resp, 502) == ("receiver_auth_failed", (
        "ComputeStacks: OK. WHMCS: OK. WHMCS billing receiver: refused the backend's signature (set the "
        "ComputeStacks server's Access Hash to the backend's SIGNING_SECRET)"))
    assert SIGNING_SECRET not in resp.text and "an-access-hash" not in resp.text


def test_a_missing_receiver_file_says_to_upload_billing_php(
        live_stack: LiveStack, receiver: ReceiverServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same php -S server, a file that is not there (what an older module folder gives)
    resp = connection_test(live_stack, monkeypatch, f"{receiver.base_url}/modules/servers/computestacks/nothere.php")
    assert failure(resp, 502) == ("receiver_missing", (
        "ComputeStacks: OK. WHMCS: OK. WHMCS billing receiver: missing (404): the module files in WHMCS are "
        "older than the backend; upload modules/servers/computestacks/billing.php"))


def test_nothing_listening_is_unreachable(live_stack: LiveStack, closed_port: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port}/modules/servers/computestacks/billing.php"
    code, message = failure(connection_test(live_stack, monkeypatch, url), 504)
    assert code == "receiver_unreachable"
    assert message.startswith("ComputeStacks: OK. WHMCS: OK. WHMCS billing receiver: unreachable (")


def test_a_receiver_failure_beside_a_failing_whmcs_is_named_with_it(
        live_stack: LiveStack, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # WHMCS's own API down too: the side stays the one it was before the receiver existed, the message names all
    monkeypatch.setenv("WHMCS_API_URL", f"http://127.0.0.1:{closed_port}/includes/api.php")
    code, message = failure(connection_test(live_stack, monkeypatch, f"http://127.0.0.1:{closed_port}/billing.php"),
                            504)
    assert code == "whmcs_unreachable"
    assert message.startswith("ComputeStacks: OK. WHMCS: unreachable (") and \
        "WHMCS billing receiver: unreachable (" in message


def test_without_the_receiver_url_the_answer_is_exactly_todays(
        live_stack: LiveStack, receiver: ReceiverServer, monkeypatch: pytest.MonkeyPatch) -> None:
    resp = connection_test(live_stack, monkeypatch, None)
    assert resp.status_code == 200 and resp.json() == {"result": "success", "message": BOTH_OK}
    # An empty value (the template parameter's default) is unset too
    resp = connection_test(live_stack, monkeypatch, "")
    assert resp.json() == {"result": "success", "message": BOTH_OK}
    # The receiver was never asked
    assert "billing.php" not in receiver.log_text()


def test_the_clients_items_are_what_the_real_receiver_takes(receiver: ReceiverServer,
                                                             receiver_db: WhmcsDatabase) -> None:
    # The wire shape both sides agree on (API.md section 8): created, then existing when sent again
    from decimal import Decimal

    from cswhmcs.adapters.receiver import ReceiverClient, ReceiverItem

    items = [ReceiverItem(ref=f"77:2026-05:{n}", client_id=1, description=f"Product {n} [ref 77:2026-05:{n}]",
                          amount=Decimal("4.05"), currency="USD", quantity=Decimal("744.5"), unit=unit,
                          invoice_action="duedate", due_date="2026-06-01")
             for n, unit in ((1, "quantity"), (2, "hours"))]
    with ReceiverClient(receiver.url, lambda: [SIGNING_SECRET.encode()], timeout=10) as client:
        first = client.send(items)
        again = client.send(items)
    assert [a.status for a in first] == ["created", "created"]
    assert [a.status for a in again] == ["existing", "existing"]
    assert [a.billable_id for a in again] == [a.billable_id for a in first]
    rows = receiver_db.billable_items()
    assert [(r["id"], r["amount"]) for r in rows] == [(a.billable_id, "4.05") for a in first]
