"""A faithful fake of the WHMCS external API (``POST /includes/api.php``) on loopback.

Standard library only: a ``ThreadingHTTPServer`` in a daemon thread (the plumbing is ``sandboxes/plumbing.py``).
It reproduces what ``reference/whmcs-contract.md`` section 6 asks of a fake: one form-encoded endpoint, case-insensitive
``action``, the ``result``/``message`` envelope, credential and permission failures with WHMCS's own
messages, the billing actions with their exact validation errors and *no* de-duplication, and knobs for
the faults a real WHMCS shows (5xx/HTML pages, business errors, a response lost after the action was
applied, latency, numeric strings instead of numbers), and ``hang``/``throttle_all`` for a WHMCS that
never answers or a front end (nginx ``limit_req``, Cloudflare) that answers 429 to everything.

Money is ``Decimal`` internally and stored verbatim as the strings that were sent; never float.

Usage in tests::

    with WhmcsSandbox() as sb:
        client = sb.add_client("Ann", "Lee", "ann@example.org", currency_code="EUR")
        ...  # point a WhmcsClient at sb.url with sb.identifier / sb.secret

Foreground: ``python -m sandboxes.whmcs --port 8082 --seed-demo``.

Where things are: invoices (GetInvoice/GetInvoices, the billing cron that invoices billable items, overdue and
paid) are ``whmcs_invoices.py``; the server records and the stand-in for our server module (ModuleSuspend /
ModuleUnsuspend call the backend's signed suspend/unsuspend routes; the InvoicePaid hook) are
``whmcs_module.py``; the error envelope is ``whmcs_envelope.py``.

DB-backed mode (issue 9): ``WhmcsSandbox(db=WhmcsDatabase.mariadb(...))`` writes every currency and client
through to the WHMCS tables of that database (same ids), and keeps billable items *only* there: its
``AddBillableItem`` inserts into ``tblbillableitems`` and ``billable_items`` reads that table. So the items
the real billing receiver (``billing.php`` on the same database) creates are the items the sandbox shows,
and a test sees one WHMCS whichever path billed. Without ``db`` nothing touches a database.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from sandboxes.plumbing import Handler, Response, SandboxServer
from sandboxes.whmcs_envelope import ApiError
from sandboxes.whmcs_envelope import to_int as _to_int
from sandboxes.whmcs_invoices import Invoicing
from sandboxes.whmcs_module import ModuleActions

if TYPE_CHECKING:
    from sandboxes.whmcsdb import WhmcsDatabase

API_PATH = "/includes/api.php"
DEFAULT_IDENTIFIER = "sandbox-identifier-0123456789abcdef"
DEFAULT_SECRET = "sandbox-secret-fedcba9876543210"  # noqa: S105 - a fixed test credential
DEFAULT_ACCESS_KEY = "sandbox-access-key"
CENT = Decimal("0.01")

# Request fields that are credentials: never recorded in the request log.
_SECRET_FIELDS = frozenset({"identifier", "secret", "password", "accesskey"})
_MONEY_RE = re.compile(r"^\d+(\.\d{1,2})?$")  # AddCredit: "### or ###.##"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INVOICE_ACTIONS = ("noinvoice", "nextcron", "nextinvoice", "duedate", "recur")
_RECUR_CYCLES = ("days", "weeks", "months", "years")
# Actions that run the server module (an HTTP call to the backend): they take the lock themselves, around state only.
_UNLOCKED_ACTIONS = frozenset({"modulesuspend", "moduleunsuspend"})
_TRUE = ("1", "true", "on", "yes")


def _check_date(text: str, message: str) -> None:
    """``text`` must be a real ``YYYY-MM-DD`` date, else WHMCS's error ``message``."""
    try:
        if not _DATE_RE.match(text):
            raise ValueError(text)
        date.fromisoformat(text)
    except ValueError:
        raise ApiError(message) from None


class Dropped(Exception):
    """``drop_next``: ``handle`` raises it and the handler closes the connection without an answer."""


class Throttled(Exception):
    """``throttle_next``: a front end's 429 with ``Retry-After``; WHMCS never sees the request."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass
class _Fault:
    kind: str  # "fail" | "error" | "timeout" | "drop" | "throttle"
    remaining: int
    actions: frozenset[str] | None
    status: int = 500
    body: str = ""
    message: str = ""
    delay: float = 0.0
    applied: bool = False  # drop: the action is carried out before the connection is dropped

    def matches(self, action: str) -> bool:
        return self.remaining > 0 and (self.actions is None or action.lower() in self.actions)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3]) or (0,)


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ApiError(f"Invalid amount: {value}") from None


def _money(value: Decimal) -> str:
    return format(value.quantize(CENT, rounding=ROUND_HALF_UP), "f")


def _plain(value: Any) -> str:
    """A stored decimal without the column's trailing zeros (``720.0000`` -> ``720``), as it was sent."""
    text = str(value if value is not None else "0")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _stringify_numbers(value: Any) -> Any:
    """``numeric_strings`` mode: every JSON integer becomes a numeric string (as WHMCS often sends)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {k: _stringify_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_numbers(v) for v in value]
    return value


def parse_form(body: str) -> dict[str, Any]:
    """Parse a form body the way PHP fills ``$_POST``, minimally: ``a[b]=1`` -> dict, ``a[]=1`` -> list."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        m = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$", key)
        if not m:
            out[key] = value
            continue
        name, rest = m.group(1), re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node: Any = out.setdefault(name, [] if rest[0] == "" else {})
        for i, part in enumerate(rest):
            last = i == len(rest) - 1
            if isinstance(node, list):
                if last:
                    node.append(value)
                else:
                    child: Any = [] if rest[i + 1] == "" else {}
                    node.append(child)
                    node = child
            elif isinstance(node, dict):
                part = part if part != "" else str(len(node))
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if rest[i + 1] == "" else {})
            else:  # a scalar already sits at this name; PHP would overwrite, keep the first
                break
    return out


class _Handler(Handler["WhmcsSandbox"]):
    def answer(self, body: bytes) -> None:
        raw = body.decode("utf-8", errors="replace")
        if self.path.split("?", 1)[0] != API_PATH:
            self.send(Response(404, b"<html><body>404 Not Found</body></html>", "text/html"))
            return
        sandbox = self.owner
        if not sandbox.hang_gate.wait():  # the sandbox is stopping
            self.hang_up()
            return
        throttled = sandbox.throttled_answer()
        if throttled is not None:
            status, ctype, page, headers = throttled
            self.send(Response(status, page, ctype, headers))
            return
        try:
            status, ctype, reply, delay = sandbox.handle(raw, self.client_address[0])
        except Dropped:
            self.hang_up()
            return
        except Throttled as exc:
            self.send(Response(429, b"<html><body><h1>429 Too Many Requests</h1></body></html>", "text/html",
                               [("Retry-After", str(max(0, math.ceil(exc.retry_after))))]))
            return
        if delay > 0:
            sandbox.stopping.wait(delay)
        self.send(Response(status, reply, ctype))

    do_POST = Handler.respond

    def do_GET(self) -> None:
        # WHMCS reads $_REQUEST, but the client must POST; keep the fake strict.
        self.send(Response(405, b"<html><body>405 Method Not Allowed</body></html>", "text/html"))


class _Copies:
    """A read-only attribute of the sandbox: copies of the records of its list or table ``name``, read under
    the sandbox's lock (what a ``@property`` returning ``self._copies(...)`` would be)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, sandbox: WhmcsSandbox, owner: type | None = None) -> list[dict[str, Any]]:
        records = getattr(sandbox, self.name)
        return sandbox._copies(records.values() if isinstance(records, dict) else records)

    def __set__(self, sandbox: WhmcsSandbox, value: object) -> None:
        raise AttributeError(f"{self.name[1:]} is read-only")


class WhmcsSandbox(Invoicing, ModuleActions, SandboxServer):
    """The fake WHMCS. All state and knobs are guarded by one lock; safe to poke from tests."""

    handler = _Handler
    thread_name = "whmcs-sandbox"
    url_path = API_PATH

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "8.10.1",
        *,
        identifier: str = DEFAULT_IDENTIFIER,
        secret: str = DEFAULT_SECRET,
        access_key: str | None = DEFAULT_ACCESS_KEY,
        deny_actions: Iterable[str] = (),
        allowed_ips: Iterable[str] | None = None,
        auth_error_status: int = 403,
        db: WhmcsDatabase | None = None,
    ) -> None:
        SandboxServer.__init__(self, host, port)
        Invoicing.__init__(self)
        ModuleActions.__init__(self)
        self.identifier = identifier
        self.secret = secret
        self.access_key = access_key
        self.auth_error_status = auth_error_status
        self._lock = threading.RLock()

        # knobs
        self.version = version
        self.latency = 0.0
        self.numeric_strings = False
        self._deny_actions: frozenset[str] = frozenset(a.lower() for a in deny_actions)
        self._allowed_ips: frozenset[str] | None = frozenset(allowed_ips) if allowed_ips is not None else None
        self._faults: list[_Fault] = []
        self._throttle_all: float | None = None
        # identifier -> {"secret", "allowed" (lower-case set or None = every action), "deny"}
        self._credentials: dict[str, dict[str, Any]] = {}

        # state; with a database, currencies and clients are written through to it and billable items live in it
        self._db = db
        if db is not None:
            db.create_schema()
        self._currencies: dict[int, dict[str, Any]] = {}
        self._clients: dict[int, dict[str, Any]] = {}
        self._products: dict[int, dict[str, Any]] = {}
        self._services: dict[int, dict[str, Any]] = {}
        self._orders: dict[int, dict[str, Any]] = {}
        self._invoices: dict[int, dict[str, Any]] = {}
        self._billable_items: list[dict[str, Any]] = []
        self._credits: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._next = {"currency": 1, "client": 1, "product": 1, "service": 1, "order": 1, "invoice": 1,
                      "invoiceitem": 1, "billable": 1, "credit": 1}

        self.add_currency("USD", "$", " USD", "1.00000")
        self.add_currency("EUR", "€", " EUR", "0.92000")
        self.add_currency("GBP", "£", " GBP", "0.79000")

        self._actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "gethealthstatus": self._get_health_status,
            "whmcsdetails": self._whmcs_details,
            "getcurrencies": self._get_currencies,
            "getclientsdetails": self._get_clients_details,
            "getclients": self._get_clients,
            "getclientsproducts": self._get_clients_products,
            "getproducts": self._get_products,
            "updateclientproduct": self._update_client_product,
            "getinvoice": self._get_invoice,
            "getinvoices": self._get_invoices,
            "addcredit": self._add_credit,
            "getcredits": self._get_credits,
            "addbillableitem": self._add_billable_item,
            "modulesuspend": self._module_suspend,
            "moduleunsuspend": self._module_unsuspend,
        }
        self._canonical = {
            "gethealthstatus": "GetHealthStatus", "whmcsdetails": "WhmcsDetails",
            "getcurrencies": "GetCurrencies", "getclientsdetails": "GetClientsDetails",
            "getclients": "GetClients", "getclientsproducts": "GetClientsProducts",
            "getproducts": "GetProducts", "updateclientproduct": "UpdateClientProduct",
            "getinvoice": "GetInvoice", "getinvoices": "GetInvoices", "addcredit": "AddCredit",
            "getcredits": "GetCredits", "addbillableitem": "AddBillableItem",
            "modulesuspend": "ModuleSuspend", "moduleunsuspend": "ModuleUnsuspend",
        }

    # ------------------------------------------------------------------ knobs

    @property
    def deny_actions(self) -> frozenset[str]:
        return self._deny_actions

    @deny_actions.setter
    def deny_actions(self, actions: Iterable[str]) -> None:
        with self._lock:
            self._deny_actions = frozenset(a.lower() for a in actions)

    @property
    def allowed_ips(self) -> frozenset[str] | None:
        return self._allowed_ips

    @allowed_ips.setter
    def allowed_ips(self, ips: Iterable[str] | None) -> None:
        with self._lock:
            self._allowed_ips = frozenset(ips) if ips is not None else None

    def add_credential(self, identifier: str, secret: str, *, allowed_actions: Iterable[str] | None = None,
                       deny_actions: Iterable[str] = ()) -> None:
        """Another API credential, optionally with its own role (allow-list of actions)."""
        with self._lock:
            self._credentials[identifier] = {
                "secret": secret,
                "allowed": self._action_set(allowed_actions),
                "deny": frozenset(a.lower() for a in deny_actions),
            }

    @staticmethod
    def _action_set(actions: Iterable[str] | None) -> frozenset[str] | None:
        return frozenset(a.lower() for a in actions) if actions is not None else None

    def fail_next(self, n: int = 1, status: int = 500, body: str = "<html>Internal Server Error</html>",
                  actions: Iterable[str] | None = None) -> None:
        """The next ``n`` matching requests get ``status`` with ``body`` (HTML); nothing is applied."""
        with self._lock:
            self._faults.append(_Fault("fail", n, self._action_set(actions), status=status, body=body))

    def error_next(self, n: int, message: str, actions: Iterable[str] | None = None) -> None:
        """The next ``n`` matching requests answer 200 ``result: error`` with ``message``; nothing applied."""
        with self._lock:
            self._faults.append(_Fault("error", n, self._action_set(actions), message=message))

    def drop_next(self, n: int = 1, actions: Iterable[str] | None = None, *, applied: bool = False) -> None:
        """The next ``n`` matching requests get no answer: the connection is closed. ``applied``: the action
        is carried out first (PHP ran, the answer was lost); else nothing is applied."""
        with self._lock:
            self._faults.append(_Fault("drop", n, self._action_set(actions), applied=applied))

    def throttle_next(self, n: int = 1, retry_after: float = 1, actions: Iterable[str] | None = None) -> None:
        """The next ``n`` matching requests get a front end's 429 with ``Retry-After``; nothing is applied."""
        with self._lock:
            self._faults.append(_Fault("throttle", n, self._action_set(actions), delay=retry_after))

    def timeout_after_commit_next(self, n: int, delay: float, actions: Iterable[str] | None = None) -> None:
        """The next ``n`` matching requests ARE applied, then the answer is held ``delay`` seconds."""
        with self._lock:
            self._faults.append(_Fault("timeout", n, self._action_set(actions), delay=delay))

    def throttle_all(self, retry_after: float | None) -> None:
        """Every request gets a front end's 429 (HTML, ``Retry-After``) and never reaches WHMCS; None: off."""
        with self._lock:
            self._throttle_all = None if retry_after is None else max(0.0, float(retry_after))

    def throttled_answer(self) -> tuple[int, str, bytes, list[tuple[str, str]]] | None:
        with self._lock:
            wait = self._throttle_all
        if wait is None:
            return None
        page = (b"<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n"
                b"<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n"
                b"</body>\r\n</html>\r\n")
        return 429, "text/html", page, [("Retry-After", str(max(1, math.ceil(wait))))]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._throttle_all = None
        self.hang_gate.set(0)

    def _take_fault(self, kind: str, action: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(action):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @property
    def is_82_or_later(self) -> bool:
        """AddBillableItem takes ``unit`` + ``quantity`` from 8.2; before that, ``hours``."""
        return _version_tuple(self.version) >= (8, 2, 0)

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r, params=dict(r["params"])) for r in self._requests]

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def actions_called(self) -> list[str]:
        with self._lock:
            return [r["action"] for r in self._requests]

    @property
    def billable_items(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._db is not None:
                return [self._item_from_row(row) for row in self._db.billable_items()]
            return [dict(i) for i in self._billable_items]

    @property
    def db(self) -> WhmcsDatabase | None:
        """The WHMCS database this sandbox writes through to (None: in-memory only)."""
        return self._db

    def set_receiver_servers(self, access_hashes: list[str]) -> None:
        """The ComputeStacks server records (their Access Hashes) the billing receiver verifies signatures with."""
        if self._db is None:
            raise RuntimeError("set_receiver_servers needs a DB-backed sandbox: WhmcsSandbox(db=WhmcsDatabase...)")
        self._db.set_servers(access_hashes)

    def _item_from_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A ``tblbillableitems`` row as the in-memory mode's item dict (same keys; the quantity is ``hours``)."""
        quantity = _plain(row.get("hours"))
        return {
            "id": int(row["id"]), "clientid": int(row["userid"]), "description": row["description"],
            "amount": str(row["amount"]), "unit": row["unit"], "quantity": quantity,
            "hours": quantity if not self.is_82_or_later else None, "invoiceaction": row["invoiceaction"],
            "duedate": str(row["duedate"]) if row.get("duedate") not in (None, "", "0000-00-00") else None,
            "recur": int(row.get("recur") or 0), "recurcycle": row.get("recurcycle") or "",
            "recurfor": int(row.get("recurfor") or 0), "invoicecount": int(row.get("invoicecount") or 0),
            "version": self.version,
        }

    def _copies(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of ``records`` (a list, or a table's ``values()``), read under the lock."""
        with self._lock:
            return [dict(r) for r in records]

    def _copy(self, table: Mapping[int, dict[str, Any]], key: int) -> dict[str, Any]:
        """A copy of one record of ``table`` (KeyError: none), read under the lock."""
        with self._lock:
            return dict(table[key])

    # Read-only snapshots of the records (copies, read under the lock).
    credits = _Copies("_credits")
    clients = _Copies("_clients")
    products = _Copies("_products")
    services = _Copies("_services")
    currencies = _Copies("_currencies")

    def client(self, client_id: int) -> dict[str, Any]:
        return self._copy(self._clients, client_id)

    def service(self, service_id: int) -> dict[str, Any]:
        return self._copy(self._services, service_id)

    def product(self, pid: int) -> dict[str, Any]:
        return self._copy(self._products, pid)

    # ------------------------------------------------------------------ seeding

    def _id(self, kind: str) -> int:
        n = self._next[kind]
        self._next[kind] = n + 1
        return n

    def _currency_by_code(self, code: str) -> dict[str, Any]:
        for cur in self._currencies.values():
            if cur["code"] == code.upper():
                return cur
        raise ValueError(f"unknown currency {code!r}; add it with add_currency first")

    def add_currency(self, code: str, prefix: str, suffix: str, rate: str | Decimal, *,
                     format: int = 1) -> dict[str, Any]:
        with self._lock:
            cid = self._id("currency")
            cur: dict[str, Any] = {"id": cid, "code": code.upper(), "prefix": prefix, "suffix": suffix,
                                   "format": str(format), "rate": format_rate(rate)}
            self._currencies[cid] = cur
            self._store_currency(cur)
            return dict(cur)

    def set_currency_rate(self, code: str, rate: str | Decimal) -> None:
        with self._lock:
            cur = self._currency_by_code(code)
            cur["rate"] = format_rate(rate)
            self._store_currency(cur)

    def set_client_currency(self, client_id: int, currency_code: str) -> None:
        """Change a client's currency (as an admin can while the client has no invoices)."""
        with self._lock:
            cur = self._currency_by_code(currency_code)
            client = self._clients[client_id]
            client["currency"], client["currency_code"] = cur["id"], cur["code"]
            self._store_client(client)

    def set_client_status(self, client_id: int, status: str) -> None:
        """``Active`` | ``Inactive`` | ``Closed``."""
        with self._lock:
            client = self._clients[client_id]
            client["status"] = status
            self._store_client(client)

    def _store_currency(self, cur: Mapping[str, Any]) -> None:
        if self._db is not None:
            self._db.put_currency(id=cur["id"], code=cur["code"], prefix=cur["prefix"], suffix=cur["suffix"],
                                  format=int(cur["format"]), rate=cur["rate"],
                                  default=cur["id"] == min(self._currencies))

    def _store_client(self, client: Mapping[str, Any]) -> None:
        if self._db is not None:
            self._db.put_client(id=client["id"], firstname=client["firstname"], lastname=client["lastname"],
                                email=client["email"], currency=client["currency"], credit=client["credit"],
                                status=client["status"], companyname=client["companyname"],
                                country=client["country"])

    def add_client(self, firstname: str, lastname: str, email: str, *, currency_code: str = "USD",
                   credit: str | Decimal = "0.00", status: str = "Active", companyname: str = "",
                   country: str = "US") -> dict[str, Any]:
        with self._lock:
            cur = self._currency_by_code(currency_code)
            cid = self._id("client")
            client = {
                "id": cid, "firstname": firstname, "lastname": lastname, "companyname": companyname,
                "email": email, "currency": cur["id"], "currency_code": cur["code"],
                "credit": _money(_dec(credit)), "status": status, "country": country,
                "datecreated": date.today().isoformat(), "groupid": 0,
            }
            self._clients[cid] = client
            self._store_client(client)
            return dict(client)

    def add_product(self, name: str, *, module: str = "computestacks", gid: int = 1, configoption1: str = "",
                    configoption2: str = "on", groupname: str = "Cloud", monthly: str = "0.00",
                    **configoptions: str) -> dict[str, Any]:
        """A product. Its ``configoptionN`` module settings are stored for tests; the API never shows them."""
        with self._lock:
            pid = self._id("product")
            product = {"pid": pid, "id": pid, "gid": gid, "name": name, "module": module,
                       "groupname": groupname, "monthly": monthly,
                       "configoption1": configoption1, "configoption2": configoption2, **configoptions}
            self._products[pid] = product
            return dict(product)

    def add_service(self, client_id: int, pid: int, *, username: str = "", domain: str = "",
                    status: str = "Active", orderid: int | None = None, password: str = "",
                    recurringamount: str = "0.00", billingcycle: str = "Monthly", serverid: int = 1,
                    overideautosuspend: bool = False, overidesuspenduntil: str = "0000-00-00") -> dict[str, Any]:
        """A service (``tblhosting``) on server record ``serverid`` (see ``set_server``)."""
        with self._lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown client {client_id}")
            if pid not in self._products:
                raise ValueError(f"unknown product {pid}")
            sid = self._id("service")
            service = {
                "id": sid, "clientid": client_id, "pid": pid, "orderid": orderid or 0, "username": username,
                "password": password, "domain": domain, "status": status,
                "regdate": date.today().isoformat(), "nextduedate": date.today().isoformat(),
                "firstpaymentamount": recurringamount, "recurringamount": recurringamount,
                "billingcycle": billingcycle, "paymentmethod": "mailin", "serverid": serverid, "notes": "",
                "dedicatedip": "", "assignedips": "", "subscriptionid": "", "promoid": 0,
                "suspensionreason": "", "overideautosuspend": 1 if overideautosuspend else 0,
                "overidesuspenduntil": overidesuspenduntil,
                "ns1": "", "ns2": "", "diskusage": 0, "disklimit": 0, "bwusage": 0, "bwlimit": 0,
            }
            self._services[sid] = service
            return dict(service)

    def set_service(self, service_id: int, **fields: Any) -> dict[str, Any]:
        """Change a service as an admin's edit does, without running any module (e.g. ``status="Suspended"``,
        ``suspensionreason=...``, ``overideautosuspend=1``, ``username=...``); keys as ``service()`` shows."""
        with self._lock:
            service = self._services[service_id]
            unknown = set(fields) - set(service)
            if unknown:
                raise TypeError(f"unknown service fields: {sorted(unknown)}")
            service.update(fields)
            return dict(service)

    def add_order(self, client_id: int, service_ids: Iterable[int], *, amounts: Iterable[str | Decimal],
                  status: str = "Paid", extra_items: Iterable[Mapping[str, Any]] = ()) -> tuple[int, int]:
        """An order whose invoice has one ``Hosting`` line per service (relid = service id)."""
        with self._lock:
            sids = list(service_ids)
            amts = list(amounts)
            if len(sids) != len(amts):
                raise ValueError("one amount per service")
            oid = self._id("order")
            items: list[Mapping[str, Any]] = []
            for sid, amount in zip(sids, amts, strict=True):
                service = self._services[sid]
                service["orderid"] = oid
                name = self._products[service["pid"]]["name"]
                desc = f"{name}{' - ' + service['domain'] if service['domain'] else ''}"
                items.append({"type": "Hosting", "relid": sid, "description": desc, "amount": amount})
            items.extend(extra_items)
            invoice = self.add_invoice(client_id, items, status=status)
            self._orders[oid] = {"id": oid, "userid": client_id, "invoiceid": invoice["invoiceid"],
                                 "status": "Active" if status == "Paid" else "Pending"}
            return oid, int(invoice["invoiceid"])

    # ------------------------------------------------------------------ request handling

    def handle(self, raw_body: str, client_ip: str) -> tuple[int, str, bytes, float]:
        """One HTTP request: returns (status, content type, body, delay before sending)."""
        if self.latency > 0:
            self.stopping.wait(self.latency)
        params = parse_form(raw_body)
        action_raw = str(params.pop("action", "") or "")
        action = action_raw.lower()
        fmt = str(params.get("responsetype", "") or "").lower()
        alias = "identifier" not in params and "password" in params
        logged = {k: v for k, v in params.items()
                  if k not in _SECRET_FIELDS and not (alias and k == "username")}
        with self._lock:
            self._requests.append({"action": self._canonical.get(action, action_raw), "params": logged})

        drop = self._take_fault("drop", action)
        if drop is not None and not drop.applied:
            raise Dropped()
        throttle = self._take_fault("throttle", action)
        if throttle is not None:
            raise Throttled(throttle.delay)
        fault = self._take_fault("fail", action)
        if fault is not None:
            return fault.status, "text/html; charset=utf-8", fault.body.encode(), 0.0

        try:
            self._authorize(params, action, action_raw, client_ip)
            fault = self._take_fault("error", action)
            if fault is not None:
                raise ApiError(fault.message)
            if action in _UNLOCKED_ACTIONS:  # they call the backend, which may call this WHMCS back
                reply = self._actions[action](params)
            else:
                with self._lock:
                    reply = self._actions[action](params)
            if self.numeric_strings:
                reply = _stringify_numbers(reply)
            status = 200
        except ApiError as exc:
            reply, status = {"result": "error", "message": exc.message}, exc.status
        delay = 0.0
        if status == 200 and reply.get("result", reply.get("status")) == "success":
            fault = self._take_fault("timeout", action)
            delay = fault.delay if fault is not None else 0.0
        if drop is not None:  # carried out; the connection breaks before the answer
            raise Dropped()
        ctype, body = render(reply, fmt)
        return status, ctype, body, delay

    def _authorize(self, params: dict[str, Any], action: str, action_raw: str, client_ip: str) -> None:
        deny = self.auth_error_status
        with self._lock:
            if self._allowed_ips is not None and client_ip not in self._allowed_ips:
                if not (self.access_key and params.get("accesskey") == self.access_key):
                    raise ApiError(f"Invalid IP {client_ip}", deny)
            ident = params.get("identifier", params.get("username"))
            secret = params.get("secret", params.get("password"))
            if not ident or not secret:
                raise ApiError("Authentication Failed", deny)
            if ident == self.identifier:
                cred: dict[str, Any] = {"secret": self.secret, "allowed": None, "deny": self._deny_actions}
            elif ident in self._credentials:
                cred = self._credentials[ident]
            else:
                raise ApiError("Invalid or missing credentials", deny)
            if secret != cred["secret"]:
                raise ApiError("Authentication Failed", deny)
            if action not in self._actions:
                raise ApiError(f'Invalid API Action: "{action}" is not a valid API action', deny)
            allowed = cred["allowed"]
            if action in cred["deny"] or (allowed is not None and action not in allowed):
                raise ApiError(f'Invalid Permissions: API action "{action}" is not allowed', deny)

    # ------------------------------------------------------------------ actions (called under the lock)

    @staticmethod
    def _paging(params: Mapping[str, Any]) -> tuple[int, int]:
        start = _to_int(params.get("limitstart")) or 0
        num = _to_int(params.get("limitnum"))
        return max(start, 0), 25 if num is None or num <= 0 else num

    def _get_health_status(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "result": "success",
            "checks": {
                "success": [{"name": "PhpVersion", "type": "success", "severityLevel": "success",
                             "body": "Your PHP version is supported."},
                            {"name": "CronStatus", "type": "success", "severityLevel": "success",
                             "body": "The cron is running."}],
                "warning": [{"name": "SslCheck", "type": "warning", "severityLevel": "warning",
                             "body": "Sandbox: no SSL certificate."}],
                "danger": None,
            },
        }

    def _whmcs_details(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"result": "success",
                "whmcs": {"version": self.version, "canonicalversion": f"{self.version}-release.1"}}

    def _get_currencies(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = [dict(c) for c in self._currencies.values()]
        return {"result": "success", "totalresults": len(rows), "currencies": {"currency": rows}}

    def _client_record(self, c: dict[str, Any]) -> dict[str, Any]:
        cid = c["id"]
        return {
            "client_id": cid, "userid": cid, "id": cid, "owner_user_id": cid,
            "uuid": f"00000000-0000-4000-8000-{cid:012d}",
            "firstname": c["firstname"], "lastname": c["lastname"],
            "fullname": f"{c['firstname']} {c['lastname']}", "companyname": c["companyname"],
            "email": c["email"], "address1": "1 Main Street", "address2": "", "city": "Portland",
            "state": "Oregon", "fullstate": "Oregon", "statecode": "OR", "postcode": "97201",
            "country": c["country"], "countrycode": c["country"], "countryname": "United States",
            "phonecc": 1, "phonenumber": "5035550100", "phonenumberformatted": "+1.5035550100",
            "telephoneNumber": "+1.5035550100", "tax_id": "", "currency": c["currency"],
            "currency_code": c["currency_code"], "language": "", "status": c["status"],
            "credit": c["credit"], "groupid": c["groupid"], "customfields": [],
            "users": {"user": [{"id": cid, "name": f"{c['firstname']} {c['lastname']}", "email": c["email"],
                                "is_owner": True}]},
        }

    def _get_clients_details(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = _to_int(params.get("clientid"))
        email = str(params.get("email") or "").strip().lower()
        if cid is None and not email:
            raise ApiError("Either clientid Or email Is Required")
        client = None
        if cid is not None:
            client = self._clients.get(cid)
        else:
            client = next((c for c in self._clients.values() if c["email"].lower() == email), None)
        if client is None:
            raise ApiError("Client Not Found")
        record = self._client_record(client)
        reply: dict[str, Any] = {"result": "success", "userid": client["id"], "client": record}
        # Deprecated duplicate of the client fields at the top level, as WHMCS still sends.
        for key, value in record.items():
            reply.setdefault(key, value)
        if str(params.get("stats", "")).lower() in ("1", "true"):
            cur = self._currencies[client["currency"]]
            reply["stats"] = {"creditbalance": f"{cur['prefix']}{client['credit']}{cur['suffix']}",
                              "productsnumactive": sum(1 for s in self._services.values()
                                                       if s["clientid"] == client["id"]
                                                       and s["status"] == "Active")}
        return reply

    def _get_clients(self, params: dict[str, Any]) -> dict[str, Any]:
        start, num = self._paging(params)
        rows = list(self._clients.values())
        status = str(params.get("status") or "")
        if status:
            rows = [c for c in rows if c["status"].lower() == status.lower()]
        search = str(params.get("search") or "").lower()
        if search:
            rows = [c for c in rows if any(str(c[k]).lower().startswith(search)
                                           for k in ("email", "firstname", "lastname", "companyname"))]
        if str(params.get("sorting") or "ASC").upper() == "DESC":
            rows.reverse()
        page = rows[start:start + num]
        return {
            "result": "success", "totalresults": len(rows), "startnumber": start, "numreturned": len(page),
            "clients": {"client": [{k: c[k] for k in ("id", "firstname", "lastname", "companyname", "email",
                                                      "datecreated", "groupid", "status")} for c in page]},
        }

    def _product_row(self, s: dict[str, Any]) -> dict[str, Any]:
        p = self._products[s["pid"]]
        server = self._servers.get(int(s["serverid"] or 0))
        return {
            "id": s["id"], "qty": 1, "clientid": s["clientid"], "orderid": s["orderid"],
            "ordernumber": str(s["orderid"] * 1000 + 7) if s["orderid"] else "", "pid": s["pid"],
            "regdate": s["regdate"], "name": p["name"], "translated_name": p["name"],
            "groupname": p["groupname"], "translated_groupname": p["groupname"], "domain": s["domain"],
            "dedicatedip": s["dedicatedip"], "serverid": s["serverid"],
            "servername": server.name if server else "", "serverip": server.ipaddress if server else "",
            "serverhostname": server.hostname if server else "", "suspensionreason": s["suspensionreason"],
            "firstpaymentamount": s["firstpaymentamount"], "recurringamount": s["recurringamount"],
            "paymentmethod": s["paymentmethod"], "paymentmethodname": "Mail In Payment",
            "billingcycle": s["billingcycle"], "nextduedate": s["nextduedate"], "status": s["status"],
            "username": s["username"], "password": s["password"], "subscriptionid": s["subscriptionid"],
            "promoid": s["promoid"], "overideautosuspend": s["overideautosuspend"],
            "overidesuspenduntil": s["overidesuspenduntil"], "ns1": s["ns1"], "ns2": s["ns2"],
            "assignedips": s["assignedips"], "notes": s["notes"], "diskusage": s["diskusage"],
            "disklimit": s["disklimit"], "bwusage": s["bwusage"], "bwlimit": s["bwlimit"],
            "lastupdate": "0000-00-00 00:00:00",
            "customfields": {"customfield": []}, "configoptions": {"configoption": []},
        }

    def _get_clients_products(self, params: dict[str, Any]) -> dict[str, Any]:
        start, num = self._paging(params)
        rows = list(self._services.values())
        echo: dict[str, Any] = {"clientid": None, "serviceid": None, "pid": None, "domain": None}
        for field, key in (("serviceid", "id"), ("clientid", "clientid"), ("pid", "pid")):
            raw = params.get(field)
            if raw not in (None, ""):
                wanted = _to_int(raw)
                echo[field] = wanted if wanted is not None else raw
                rows = [s for s in rows if s[key] == wanted]
        if params.get("domain") not in (None, ""):
            echo["domain"] = params["domain"]
            rows = [s for s in rows if s["domain"] == params["domain"]]
        if params.get("username2") not in (None, ""):
            rows = [s for s in rows if s["username"] == params["username2"]]
        page = rows[start:start + num]
        return {
            "result": "success", **echo, "totalresults": len(rows), "startnumber": start,
            "numreturned": len(page),
            # An empty result is undocumented; WHMCS habitually sends "" for empty collections.
            "products": {"product": [self._product_row(s) for s in page]} if page else "",
        }

    def _get_products(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = list(self._products.values())
        if params.get("pid") not in (None, ""):
            wanted = {_to_int(p) for p in str(params["pid"]).split(",")}
            rows = [p for p in rows if p["pid"] in wanted]
        if params.get("gid") not in (None, ""):
            gid = _to_int(params["gid"])
            rows = [p for p in rows if p["gid"] == gid]
        if params.get("module") not in (None, ""):
            rows = [p for p in rows if p["module"] == str(params["module"])]
        products = []
        for p in rows:
            pricing = {cur["code"]: {"prefix": cur["prefix"], "suffix": cur["suffix"], "msetupfee": "0.00",
                                     "qsetupfee": "0.00", "ssetupfee": "0.00", "asetupfee": "0.00",
                                     "bsetupfee": "0.00", "tsetupfee": "0.00", "monthly": p["monthly"],
                                     "quarterly": "-1.00", "semiannually": "-1.00", "annually": "-1.00",
                                     "biennially": "-1.00", "triennially": "-1.00"}
                       for cur in self._currencies.values()}
            products.append({
                "pid": p["pid"], "gid": p["gid"], "type": "other", "name": p["name"],
                "slug": re.sub(r"[^a-z0-9]+", "-", p["name"].lower()).strip("-"),
                "product-url": f"https://whmcs.example.net/store/{p['gid']}/{p['pid']}", "description": "",
                "module": p["module"], "paytype": "recurring", "allowqty": 0, "quantity_available": 0,
                "pricing": pricing, "customfields": {"customfield": []},
                "configoptions": {"configoption": []},
            })
        return {"result": "success", "totalresults": len(products), "startnumber": 0,
                "numreturned": len(products), "products": {"product": products}}

    _UPDATABLE = {
        "pid": "pid", "serverid": "serverid", "regdate": "regdate", "nextduedate": "nextduedate",
        "domain": "domain", "firstpaymentamount": "firstpaymentamount", "recurringamount": "recurringamount",
        "paymentmethod": "paymentmethod", "billingcycle": "billingcycle", "subscriptionid": "subscriptionid",
        "status": "status", "notes": "notes", "serviceusername": "username", "servicepassword": "password",
        "overideautosuspend": "overideautosuspend", "overidesuspenduntil": "overidesuspenduntil",
        "ns1": "ns1", "ns2": "ns2", "dedicatedip": "dedicatedip", "assignedips": "assignedips",
        "diskusage": "diskusage", "disklimit": "disklimit", "bwusage": "bwusage", "bwlimit": "bwlimit",
        "suspendreason": "suspensionreason", "promoid": "promoid",
    }

    def _update_client_product(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = _to_int(params.get("serviceid"))
        service = self._services.get(sid) if sid is not None else None
        if service is None:
            raise ApiError("Service ID Not Found")
        for field, key in self._UPDATABLE.items():
            if field in params:
                value = params[field]
                numeric = key in ("pid", "serverid", "promoid") and _to_int(value) is not None
                if key == "overideautosuspend":  # a yes/no box: stored 0/1 whatever was sent
                    value = 1 if str(value).strip().lower() in _TRUE else 0
                service[key] = _to_int(value) if numeric else value
        unset = params.get("unset") or []
        for field in unset.values() if isinstance(unset, dict) else unset:
            key = self._UPDATABLE.get(str(field), str(field))
            if key in service:
                service[key] = ""
        return {"result": "success", "serviceid": service["id"]}

    def _add_credit(self, params: dict[str, Any]) -> dict[str, Any]:
        kind = str(params.get("type") or "add").lower()
        if kind not in ("add", "remove"):
            raise ApiError("Type can only be add or remove")
        cid = _to_int(params.get("clientid"))
        client = self._clients.get(cid) if cid is not None else None
        if client is None:
            raise ApiError("Client ID Not Found")
        if params.get("adminid") not in (None, "") and _to_int(params["adminid"]) != 1:
            raise ApiError("Admin ID Not Found")
        raw = str(params.get("amount") or "").strip()
        if not raw:
            raise ApiError("No Amount Provided")
        if not _MONEY_RE.match(raw) or Decimal(raw) <= 0:
            raise ApiError("Amount must be in decimal format: ### or ###.##")
        when = str(params.get("date") or "")
        if when:
            _check_date(when, "Date Format is not Valid")
        amount = Decimal(raw)
        balance = Decimal(client["credit"]) + (amount if kind == "add" else -amount)
        client["credit"] = _money(balance)
        self._store_client(client)
        self._credits.append({
            "id": self._id("credit"), "clientid": client["id"], "date": when or date.today().isoformat(),
            "description": str(params.get("description") or ""),
            "amount": raw if kind == "add" else f"-{raw}", "relid": 0, "type": kind,
            "adminid": _to_int(params.get("adminid")) or 1,
        })
        return {"result": "success", "newbalance": client["credit"]}

    def _get_credits(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = _to_int(params.get("clientid"))
        if cid is None or cid not in self._clients:
            raise ApiError("Client ID Not Found")
        rows = [{k: c[k] for k in ("id", "date", "description", "amount", "relid")}
                for c in self._credits if c["clientid"] == cid]
        return {"result": "success", "totalresults": len(rows), "clientid": cid, "credits": {"credit": rows}}

    def _add_billable_item(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = _to_int(params.get("clientid"))
        if cid is None or cid not in self._clients:
            raise ApiError("Client ID not Found")
        description = str(params.get("description") or "").strip()
        if not description:
            raise ApiError("You must provide a description")
        action = str(params.get("invoiceaction") or "noinvoice").lower()
        if action not in _INVOICE_ACTIONS:
            raise ApiError("Invalid Invoice Action")
        recur = _to_int(params.get("recur"))
        cycle = str(params.get("recurcycle") or "")
        recurfor = _to_int(params.get("recurfor"))
        if action == "recur" and (not recur or cycle.lower() not in _RECUR_CYCLES or not recurfor):
            raise ApiError("Recurring must have a unit, cycle and limit")
        duedate = str(params.get("duedate") or "")
        if action in ("duedate", "recur") and not duedate:
            raise ApiError("Due date is required")
        modern = self.is_82_or_later
        if modern:
            unit = str(params.get("unit") or "").lower()
            if unit not in ("hours", "quantity"):
                raise ApiError("Invalid Unit, please specify either 'hours' or 'quantity'")
            quantity = str(params.get("quantity") or "0")  # 8.2+: `hours` is no longer read
        else:
            unit = "hours"
            quantity = str(params.get("hours") or "0")  # pre-8.2: no `unit`, no `quantity`
        if duedate:
            _check_date(duedate, "Invalid Date Format - Expected: 'YYYY-mm-dd'")
        raw_amount = str(params.get("amount") if params.get("amount") not in (None, "") else "0.00")
        _dec(raw_amount)  # must at least be a number; stored verbatim
        _dec(quantity)
        if self._db is not None:  # the item lives in tblbillableitems, beside the receiver's
            billable_id = self._db.add_billable_item(
                userid=cid, description=description, hours=quantity, amount=raw_amount, unit=unit,
                recur=recur or 0, recurcycle=cycle, recurfor=recurfor or 0, invoiceaction=action,
                duedate=duedate or None, invoicecount=0)
            return {"result": "success", "billableid": billable_id}
        item = {
            "id": self._id("billable"), "clientid": cid, "description": description, "amount": raw_amount,
            "unit": unit, "quantity": quantity, "hours": quantity if not modern else None,
            "invoiceaction": action, "duedate": duedate or None, "recur": recur or 0, "recurcycle": cycle,
            "recurfor": recurfor or 0, "invoicecount": 0, "version": self.version,
        }
        self._billable_items.append(item)
        return {"result": "success", "billableid": item["id"]}


def format_rate(rate: str | Decimal) -> str:
    return format(Decimal(str(rate)).quantize(Decimal("0.00001")), "f")


def render(reply: Mapping[str, Any], fmt: str) -> tuple[str, bytes]:
    """JSON only when asked (``responsetype=json``); otherwise XML or the old NVP text."""
    if fmt == "json":
        return "application/json", json.dumps(reply, ensure_ascii=False).encode()
    if fmt == "xml":
        parts = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in reply.items()
                        if not isinstance(v, dict | list))
        return "text/xml", f'<?xml version="1.0" encoding="utf-8"?><whmcsapi>{parts}</whmcsapi>'.encode()
    text = ";".join(f"{k}={v}" for k, v in reply.items() if not isinstance(v, dict | list))
    return "text/plain; charset=utf-8", text.encode()


def seed_demo(sb: WhmcsSandbox) -> dict[str, Any]:
    """Demo data: a USD and an EUR client, the "Cloud Account" product (module computestacks), services."""
    ann = sb.add_client("Ann", "Lee", "ann@example.org", currency_code="USD")
    jan = sb.add_client("Jan", "Berg", "jan@example.de", currency_code="EUR", credit="5.00")
    product = sb.add_product("Cloud Account", module="computestacks", configoption1="1", configoption2="on")
    other = sb.add_product("Shared Hosting", module="cpanel", gid=2, groupname="Hosting")
    s1 = sb.add_service(ann["id"], product["pid"], username="ann@example.org", status="Active")
    s2 = sb.add_service(jan["id"], product["pid"], username="jan@example.de", status="Active")
    s3 = sb.add_service(ann["id"], other["pid"], domain="ann.example.org", username="annlee")
    order_id, invoice_id = sb.add_order(jan["id"], [s2["id"]], amounts=["25.00"], status="Paid")
    return {"clients": [ann, jan], "products": [product, other], "services": [s1, s2, s3],
            "orders": [{"orderid": order_id, "invoiceid": invoice_id}]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.whmcs",
                                     description="Fake WHMCS API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--version", default="8.10.1",
                        help="WHMCS version reported (8.2+ takes unit/quantity)")
    parser.add_argument("--identifier", default=DEFAULT_IDENTIFIER)
    parser.add_argument("--secret", default=DEFAULT_SECRET)
    parser.add_argument("--seed-demo", action="store_true", help="add demo clients, product and services")
    parser.add_argument("--server-hostname", default="",
                        help="backend host[:port] of server record 1 (ModuleSuspend/ModuleUnsuspend call it)")
    parser.add_argument("--server-access-hash", default="", help="the backend signing secret of server record 1")
    parser.add_argument("--invoice-paid-hook", action="store_true",
                        help="run the InvoicePaid hook stand-in when an invoice is paid")
    args = parser.parse_args(argv)
    sb = WhmcsSandbox(args.host, args.port, args.version, identifier=args.identifier, secret=args.secret)
    if args.server_hostname:
        sb.set_server(args.server_hostname, args.server_access_hash)
    sb.invoice_paid_hook = args.invoice_paid_hook
    if args.seed_demo:
        seed_demo(sb)
    sb.start()
    print(f"WHMCS sandbox {sb.version} on {sb.url} (identifier {sb.identifier})", flush=True)
    try:
        sb.stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
