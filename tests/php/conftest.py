"""Fixtures for the billing receiver (billing.php) on a real WHMCS-like database.

* ``mariadb_server`` (session, tests/conftest.py): one throwaway MariaDB for the whole run (~1 s).
* ``whmcs_db`` (per test): a fresh, seeded WHMCS database. MariaDB by default; parametrize indirectly with
  ``"sqlite"`` to run on SQLite: ``@pytest.mark.parametrize("whmcs_db", ["mariadb", "sqlite"], indirect=True)``.
  Seed: currencies 1 USD (default) and 2 EUR, clients 1 (USD) and 2 (EUR), one ComputeStacks server record
  whose Access Hash is ``RECEIVER_SECRET``.
* ``receiver`` (per test): ``php -S`` serving billing.php on ``whmcs_db`` with 8 workers (sandboxes/receiver.py).

Tests elsewhere can reuse them by importing: ``from tests.php.conftest import mariadb_server, whmcs_db, receiver``
(plus the helpers ``post_items``, ``signature_headers``, ``item``). They skip, naming what to install, only when
php or mariadbd is absent.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxes.mariadb import MariaDB
from sandboxes.receiver import ReceiverServer
from sandboxes.whmcsdb import WhmcsDatabase

RECEIVER_ROUTE = "/whmcs/billable-items"
RECEIVER_SECRET = "receiver-access-hash-primary-7f3a"
USD_CLIENT = 1
EUR_CLIENT = 2
PHP = shutil.which("php")
NEEDS_PHP = pytest.mark.skipif(PHP is None, reason="php-cli is not installed (apt-get install php-cli php-mysql "
                                                   "php-sqlite3 php-illuminate-database)")


def seed(db: WhmcsDatabase, access_hashes: Sequence[str] = (RECEIVER_SECRET,)) -> WhmcsDatabase:
    """The standard WHMCS fixtures on a fresh database (schema included)."""
    db.create_schema()
    db.put_currency(id=1, code="USD", prefix="$", suffix=" USD", format=1, rate="1.00000", default=True)
    db.put_currency(id=2, code="EUR", prefix="€", suffix=" EUR", format=3, rate="0.92000")
    db.put_client(id=USD_CLIENT, firstname="Ann", lastname="Usd", email="ann@example.org", currency=1)
    db.put_client(id=EUR_CLIENT, firstname="Eve", lastname="Eur", email="eve@example.org", currency=2, country="DE")
    db.set_servers(list(access_hashes))
    return db


@pytest.fixture
def whmcs_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WhmcsDatabase]:
    kind = getattr(request, "param", "mariadb")
    if kind == "sqlite":
        db = WhmcsDatabase.sqlite(tmp_path / "whmcs.sqlite")
        yield seed(db)
        db.close()
        return
    server: MariaDB = request.getfixturevalue("mariadb_server")
    name = f"whmcs_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    db = WhmcsDatabase.mariadb(server.socket, name)
    yield seed(db)
    db.close()
    server.drop_database(name)


@pytest.fixture
def receiver(whmcs_db: WhmcsDatabase) -> Iterator[ReceiverServer]:
    if PHP is None:
        pytest.skip("php-cli is not installed (apt-get install php-cli php-mysql php-sqlite3 php-illuminate-database)")
    server = ReceiverServer(whmcs_db, workers=8).start()
    yield server
    server.stop()


# ---------------------------------------------------------------------- helpers


def item(ref: str, **overrides: Any) -> dict[str, Any]:
    """A valid ITEM (API.md section 8) for the USD client."""
    base: dict[str, Any] = {"ref": ref, "clientid": USD_CLIENT, "description": f"Container usage [ref {ref}]",
                            "amount": "12.50", "currency": "USD", "quantity": "730", "unit": "quantity",
                            "invoiceaction": "duedate", "duedate": "2027-01-15"}
    base.update(overrides)
    return base


def signature_headers(body: bytes, secrets: Sequence[str] = (RECEIVER_SECRET,), *, timestamp: int | None = None,
                      route: str = RECEIVER_ROUTE) -> dict[str, str]:
    """X-CSW-Timestamp + X-CSW-Signature with one v1= per secret (what the backend sends)."""
    from cswhmcs import signing  # looked up per call: the secrets capture wraps compute_signature

    ts = int(time.time()) if timestamp is None else timestamp
    sigs = [signing.compute_signature(s.encode(), ts, route, body) for s in secrets]
    return {"X-CSW-Timestamp": str(ts), "X-CSW-Signature": ",".join(sigs), "Content-Type": "application/json"}


def post_items(receiver: ReceiverServer, items: list[dict[str, Any]] | None = None, *, body: bytes | None = None,
               secrets: Sequence[str] = (RECEIVER_SECRET,), timestamp: int | None = None,
               headers: dict[str, str] | None = None, timeout: float = 30.0) -> httpx.Response:
    """POST a signed batch (or a given raw body) to the receiver."""
    raw = body if body is not None else json.dumps({"items": items or []}).encode()
    sent = signature_headers(raw, secrets, timestamp=timestamp) if headers is None else headers
    return httpx.post(receiver.url, content=raw, headers=sent, timeout=timeout)
