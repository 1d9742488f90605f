"""The WHMCS database as the billing receiver sees it: a subset of WHMCS's real tables, on MariaDB or SQLite.

The PHP side (`sandboxes/whmcs_root/init.php`, the stand-in for WHMCS's bootstrap) and this Python side share one
database: Python creates the `tbl*` schema and the fixtures (currencies, clients, server records), the receiver
writes billable items and its refs table, and the tests read everything back here. Table and column names are
WHMCS's own, so the receiver's SQL is the SQL it runs inside a real WHMCS.

MariaDB (over PyMySQL, unix socket) is the faithful engine; SQLite is the quick one. Thread-safe: one connection,
every use under a lock (the tests read from several threads while requests run).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

REFS_TABLE = "mod_computestacks_billing_refs"
# Decimal columns and their scale: read back as strings with exactly this many places, whatever the engine.
_SCALES = {"hours": 4, "amount": 2, "credit": 2, "rate": 5}

_MYSQL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tblcurrencies (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, code VARCHAR(3) NOT NULL, prefix TEXT NOT NULL,
        suffix TEXT NOT NULL, format INT NOT NULL DEFAULT 1, rate DECIMAL(10,5) NOT NULL DEFAULT 1.00000,
        `default` TINYINT NOT NULL DEFAULT 0, UNIQUE KEY code (code)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS tblclients (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, firstname TEXT NOT NULL, lastname TEXT NOT NULL,
        companyname TEXT NOT NULL, email TEXT NOT NULL, currency INT NOT NULL DEFAULT 1,
        credit DECIMAL(16,2) NOT NULL DEFAULT 0.00, status VARCHAR(16) NOT NULL DEFAULT 'Active',
        country TEXT NOT NULL, datecreated DATE NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS tblbillableitems (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, userid INT NOT NULL, description TEXT NOT NULL,
        hours DECIMAL(16,4) NOT NULL DEFAULT 0, amount DECIMAL(16,2) NOT NULL DEFAULT 0.00,
        unit VARCHAR(16) NOT NULL DEFAULT 'hours', recur INT NOT NULL DEFAULT 0,
        recurcycle VARCHAR(16) NOT NULL DEFAULT '', recurfor INT NOT NULL DEFAULT 0,
        invoiceaction VARCHAR(16) NOT NULL DEFAULT '', duedate DATE NULL, invoicecount INT NOT NULL DEFAULT 0,
        KEY userid (userid)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS tblservers (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL, type VARCHAR(64) NOT NULL,
        hostname TEXT NOT NULL, accesshash TEXT NOT NULL, disabled TINYINT NOT NULL DEFAULT 0)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS tblmodulelog (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, date DATETIME NOT NULL, module TEXT NOT NULL,
        action TEXT NOT NULL, request MEDIUMTEXT NOT NULL, response MEDIUMTEXT NOT NULL, arrdata MEDIUMTEXT NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS tblactivitylog (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, date DATETIME NOT NULL, description TEXT NOT NULL,
        user TEXT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tblcurrencies (
        id INTEGER PRIMARY KEY AUTOINCREMENT, code VARCHAR(3) NOT NULL UNIQUE, prefix TEXT NOT NULL DEFAULT '',
        suffix TEXT NOT NULL DEFAULT '', format INTEGER NOT NULL DEFAULT 1, rate TEXT NOT NULL DEFAULT '1.00000',
        "default" INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS tblclients (
        id INTEGER PRIMARY KEY AUTOINCREMENT, firstname TEXT NOT NULL DEFAULT '', lastname TEXT NOT NULL DEFAULT '',
        companyname TEXT NOT NULL DEFAULT '', email TEXT NOT NULL DEFAULT '', currency INTEGER NOT NULL DEFAULT 1,
        credit TEXT NOT NULL DEFAULT '0.00', status VARCHAR(16) NOT NULL DEFAULT 'Active',
        country TEXT NOT NULL DEFAULT '', datecreated DATE NULL)""",
    """CREATE TABLE IF NOT EXISTS tblbillableitems (
        id INTEGER PRIMARY KEY AUTOINCREMENT, userid INTEGER NOT NULL, description TEXT NOT NULL,
        hours TEXT NOT NULL DEFAULT '0', amount TEXT NOT NULL DEFAULT '0.00', unit VARCHAR(16) NOT NULL DEFAULT 'hours',
        recur INTEGER NOT NULL DEFAULT 0, recurcycle VARCHAR(16) NOT NULL DEFAULT '',
        recurfor INTEGER NOT NULL DEFAULT 0, invoiceaction VARCHAR(16) NOT NULL DEFAULT '', duedate DATE NULL,
        invoicecount INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS tblservers (
        id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL DEFAULT '', type VARCHAR(64) NOT NULL,
        hostname TEXT NOT NULL DEFAULT '', accesshash TEXT NOT NULL DEFAULT '', disabled INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS tblmodulelog (
        id INTEGER PRIMARY KEY AUTOINCREMENT, date DATETIME NOT NULL, module TEXT NOT NULL, action TEXT NOT NULL,
        request TEXT NOT NULL, response TEXT NOT NULL, arrdata TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tblactivitylog (
        id INTEGER PRIMARY KEY AUTOINCREMENT, date DATETIME NOT NULL, description TEXT NOT NULL,
        user TEXT NOT NULL DEFAULT '')""",
)


class WhmcsDatabase:
    """One WHMCS database; create with `WhmcsDatabase.mariadb(...)` or `WhmcsDatabase.sqlite(...)`."""

    def __init__(self, driver: str, conn: Any, *, socket: str = "", database: str = "", path: Path | None = None,
                 user: str = "root") -> None:
        self.driver = driver  # "mysql" | "sqlite"
        self.socket = socket
        self.database = database
        self.path = path
        self.user = user
        self._conn = conn
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def mariadb(cls, socket: str, database: str, user: str = "root") -> WhmcsDatabase:
        import pymysql

        conn = pymysql.connect(unix_socket=socket, user=user, database=database, autocommit=True, connect_timeout=5)
        return cls("mysql", conn, socket=socket, database=database, user=user)

    @classmethod
    def sqlite(cls, path: Path) -> WhmcsDatabase:
        path = Path(path)
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return cls("sqlite", conn, path=path)

    def php_env(self) -> dict[str, str]:
        """What `sandboxes/whmcs_root/init.php` reads to open the same database."""
        if self.driver == "mysql":
            return {"CSW_DB_DRIVER": "mysql", "CSW_DB_SOCKET": self.socket, "CSW_DB_NAME": self.database,
                    "CSW_DB_USER": self.user}
        return {"CSW_DB_DRIVER": "sqlite", "CSW_DB_PATH": str(self.path)}

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except Exception:  # noqa: S110 - already closed or the server is gone: nothing left to release
                pass

    def __enter__(self) -> WhmcsDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ low level
    @property
    def _mark(self) -> str:
        return "%s" if self.driver == "mysql" else "?"

    def _q(self, name: str) -> str:
        return f"`{name}`" if self.driver == "mysql" else f'"{name}"'

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock:
            if self.driver == "mysql":
                try:  # a long-lived sandbox outlives an idle connection: reconnect when it was dropped
                    self._conn.ping(reconnect=False)
                except Exception:
                    self._conn.connect()
            cur = self._conn.cursor()
            try:
                yield cur
            finally:
                cur.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (placeholders `%s` on MariaDB, `?` on SQLite); returns the last insert id."""
        with self._cursor() as cur:
            cur.execute(sql, tuple(params))
            return int(cur.lastrowid or 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            cur.execute(sql, tuple(params))
            names = [d[0] for d in cur.description or ()]
            return [_row(dict(zip(names, r, strict=True))) for r in cur.fetchall()]

    def has_table(self, name: str) -> bool:
        if self.driver == "mysql":
            rows = self.query("SELECT 1 AS x FROM information_schema.tables WHERE table_schema = DATABASE() "
                              "AND table_name = %s", (name,))
        else:
            rows = self.query("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(rows)

    def _upsert(self, table: str, cols: dict[str, Any]) -> None:
        names = ", ".join(self._q(c) for c in cols)
        marks = ", ".join(self._mark for _ in cols)
        if self.driver == "mysql":
            sql = f"REPLACE INTO {table} ({names}) VALUES ({marks})"  # noqa: S608 - names are ours
        else:
            sql = f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})"  # noqa: S608
        self.execute(sql, list(cols.values()))

    # ------------------------------------------------------------------ schema and fixtures
    def create_schema(self) -> None:
        for ddl in _MYSQL_SCHEMA if self.driver == "mysql" else _SQLITE_SCHEMA:
            self.execute(ddl)

    def put_currency(self, *, id: int, code: str, prefix: str, suffix: str, format: int, rate: str,  # noqa: A002
                     default: bool = False) -> None:
        self._upsert("tblcurrencies", {"id": id, "code": code, "prefix": prefix, "suffix": suffix, "format": format,
                                       "rate": rate, "default": 1 if default else 0})

    def put_client(self, *, id: int, firstname: str, lastname: str, email: str, currency: int,  # noqa: A002
                   credit: str = "0.00", status: str = "Active", companyname: str = "", country: str = "US") -> None:
        self._upsert("tblclients", {"id": id, "firstname": firstname, "lastname": lastname,
                                    "companyname": companyname, "email": email, "currency": currency,
                                    "credit": credit, "status": status, "country": country,
                                    "datecreated": dt.date.today().isoformat()})

    def set_servers(self, access_hashes: list[str], *, disabled_hashes: Sequence[str] = ()) -> None:
        """Replaces the `computestacks` server records: one enabled record per Access Hash (a hash may itself be
        a comma-separated list of secrets, as an operator may type it), plus disabled records."""
        m = self._mark
        sql = ("INSERT INTO tblservers (name, type, hostname, accesshash, disabled) "  # noqa: S608 - placeholders
               f"VALUES ({m}, 'computestacks', {m}, {m}, {m})")
        with self._lock:
            self.execute("DELETE FROM tblservers WHERE type = 'computestacks'")
            rows = [(h, 0) for h in access_hashes] + [(h, 1) for h in disabled_hashes]
            for n, (accesshash, disabled) in enumerate(rows, start=1):
                self.execute(sql, (f"ComputeStacks {n}", "127.0.0.1:3000", accesshash, disabled))

    def add_billable_item(self, **cols: Any) -> int:
        """Inserts one row into tblbillableitems (what WHMCS's AddBillableItem or an admin would create)."""
        values = {"description": "", "hours": "0", "amount": "0.00", "unit": "hours", "invoiceaction": "",
                  **cols}
        names = ", ".join(self._q(c) for c in values)
        marks = ", ".join(self._mark for _ in values)
        sql = f"INSERT INTO tblbillableitems ({names}) VALUES ({marks})"  # noqa: S608 - column names are the caller's
        return self.execute(sql, list(values.values()))

    def mark_billable_items_invoiced(self, ids: Sequence[int]) -> None:
        """What WHMCS's cron does to the billable items it put on an invoice: ``invoicecount`` + 1."""
        for item_id in ids:
            self.execute(f"UPDATE tblbillableitems SET invoicecount = invoicecount + 1 WHERE id = {self._mark}",  # noqa: S608
                         (int(item_id),))

    # ------------------------------------------------------------------ reads
    def billable_items(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM tblbillableitems ORDER BY id")

    def tables(self) -> list[str]:
        """Names of the database's tables, sorted."""
        if self.driver == "mysql":
            rows = self.query("SELECT table_name AS name FROM information_schema.tables "
                              "WHERE table_schema = DATABASE() ORDER BY table_name")
        else:
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                              "ORDER BY name")
        return [str(r["name"]) for r in rows]

    def receiver_refs(self) -> list[dict[str, Any]]:
        if not self.has_table(REFS_TABLE):
            return []
        return self.query(f"SELECT * FROM {REFS_TABLE} ORDER BY created_at, ref")  # noqa: S608 - a constant

    def module_log(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM tblmodulelog ORDER BY id")

    def activity_log(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM tblactivitylog ORDER BY id")

    def truncate_billing(self) -> None:
        """Empties tblbillableitems and the receiver's refs table (between independent runs on one database)."""
        tables = ["tblbillableitems"] + ([REFS_TABLE] if self.has_table(REFS_TABLE) else [])
        for table in tables:
            if self.driver == "mysql":
                self.execute(f"TRUNCATE TABLE {table}")
            else:
                self.execute(f"DELETE FROM {table}")  # noqa: S608 - one of two constants
                self.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))


def _row(row: dict[str, Any]) -> dict[str, Any]:
    """Engine-neutral values: decimals as strings with the column's scale, dates as ISO strings."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in _SCALES and value is not None:
            value = str(Decimal(str(value)).quantize(Decimal(1).scaleb(-_SCALES[key])))
        elif isinstance(value, dt.datetime):
            value = value.strftime("%Y-%m-%d %H:%M:%S")
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[key] = value
    return out
