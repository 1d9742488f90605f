"""A faithful fake of the ComputeStacks admin API: a real HTTP server on loopback.

Standard library only: a ``ThreadingHTTPServer`` in a daemon thread, one lock around all state.
It reproduces what reference/computestacks-api.md documents (sections 1, 2 and 6), checked against
the ComputeStacks controller source (``ComputeStacks/controller`` 9.3.1) where the two disagree:

* transport: ``Accept`` must ask for JSON (else 406 plain text), ``api_version=NN`` in the Accept
  header (40/50/unknown: 422; 51..71: works with ``API-Deprecated: true``; missing: 80), a ``.json``
  path suffix also selects JSON, any other suffix gives 406;
* auth: HTTP Basic ``key:secret`` of an admin's API credential, else 401 ``{"errors":["Not Authorized"]}``
  (a valid non-admin credential too); each wrong secret counts against the owner, who is locked
  after 5 (then even the right secret is refused), as ``User::ApiCredential#valid_password?`` does;
* users: create (Rails ParamsWrapper, permit list, Devise + model validations in Rails' order,
  generated password, currency coercion, default-group fallback, shallow ``merge_labels``), show,
  update, delete, the four lookups with their precedence, list, SSO tokens, suspension;
* user groups, locations, billing usages (newest first), pagination headers exactly as
  api-pagination + will_paginate build them, 404 shapes, Rack::Attack's 429.

Knobs for tests: ``latency``, ``fail_next``, ``timeout_after_commit_next``, ``hang``, ``throttle_all``,
``drop_next``, ``slow_next``, ``throttle_next``;
``requests`` records
every request (passwords included: it is a sandbox; the ``Authorization`` header is left out).

Run it: ``python -m sandboxes.computestacks --port 8081 --seed-demo``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import math
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus, urlsplit

from sandboxes.hang import Hang

CS_VERSION = "9.3.1"
MISSING_VERSION = 80
SUPPORTED_VERSIONS = frozenset({80})
DEPRECATED_VERSIONS = frozenset({51, 52, 53, 54, 60, 61, 62, 65, 70, 71})
DEFAULT_PER_PAGE = 30  # will_paginate's default; api-pagination sets no maximum
SUPPORT_EMAILS = frozenset({"hello@computestacks.com", "kris@computestacks.com"})
MAX_FAILED_ATTEMPTS = 5
UNLOCK_IN = timedelta(hours=4)
SSO_TOKEN_TTL = timedelta(minutes=1)
CREATE_TOKEN_TTL = timedelta(minutes=10)

NOT_AUTHORIZED = "Not Authorized"
UNKNOWN_ROUTE = "Unknown API Call. Please check the documentation."
UNKNOWN_FORMAT = "Unknown format. Only JSON and XML are permitted."
BAD_REQUEST = "Bad Request. Please check the documentation."

EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\Z")  # Devise.email_regexp
_BROWSER_LIKE_ACCEPT = re.compile(r",\s*\*/\*|\*/\*\s*,")  # Rails ignores such Accept headers
_JSON_TYPES = frozenset({"application/json", "text/x-json", "application/jsonrequest"})
_VERSION_RE = re.compile(r"api_version=([0-9]+)")
_RUBY_INT_RE = re.compile(r"\s*([+-]?\d+)")
_FALSE_VALUES = frozenset({"0", "f", "F", "false", "FALSE", "off", "OFF"})
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_BODY = 10 * 1024 * 1024

CURRENCY_SYMBOLS = {
    "USD": "$", "EUR": "€", "GBP": "£", "CAD": "$", "AUD": "$", "NZD": "$", "SGD": "$", "HKD": "$",
    "MXN": "$", "JPY": "¥", "CNY": "¥", "CHF": "CHF", "SEK": "kr", "NOK": "kr", "DKK": "kr.",
    "PLN": "zł", "CZK": "Kč", "INR": "₹", "BRL": "R$", "ZAR": "R",
}

# Columns of the users table (CTL db/schema.rb): what Rails' ParamsWrapper copies into ``user``
# from a flat JSON body. ``password``, ``merge_labels`` and ``skip_email_confirm`` are not columns.
USER_COLUMNS = frozenset({
    "id", "fname", "lname", "timezone", "lang", "active", "created_at", "updated_at", "last_request_at",
    "token", "locale", "email", "encrypted_password", "reset_password_token", "reset_password_sent_at",
    "remember_created_at", "sign_in_count", "current_sign_in_at", "last_sign_in_at", "current_sign_in_ip",
    "last_sign_in_ip", "confirmation_token", "confirmed_at", "confirmation_sent_at", "failed_attempts",
    "unlock_token", "locked_at", "is_admin", "currency", "api_key", "api_secret", "api_version",
    "external_id", "auth_token", "auth_token_exp", "country", "bypass_billing", "city", "state", "address1",
    "address2", "zip", "req_second_factor", "last_second_factor_auth", "bypass_second_factor", "vat",
    "phase_started", "user_group_id", "comments", "last_request_ip", "company_name", "phone", "labels",
    "otp_secret_enc", "last_otp_at", "webauthn_id", "c_sftp_pass",
})
# UsersController#user_params (scalars), plus ``merge_labels: {}`` (any JSON object).
_STRING_PARAMS = ("fname", "lname", "email", "currency", "external_id", "country", "city", "state", "address1",
                  "address2", "zip", "vat", "company_name", "phone", "locale")
_BOOL_PARAMS = ("active", "is_admin", "bypass_billing")
_PERMITTED = frozenset({*_STRING_PARAMS, *_BOOL_PARAMS, "password", "password_confirmation", "user_group_id",
                        "skip_email_confirm", "merge_labels"})
_NOT_NULL = ("active", "is_admin", "country", "locale", "currency")
_LOCALES = frozenset({"en", "de", "fr", "es", "it", "nl", "pt", "ja", "zh"})

_CREATE_FIELDS = (
    "id", "fname", "lname", "email", "active", "company_name", "is_admin", "api_key", "api_version",
    "external_id", "currency", "confirmed_at", "confirmation_sent_at", "last_request_at", "last_sign_in_at",
    "current_sign_in_at", "sign_in_count", "reset_password_sent_at", "locked_at", "failed_attempts",
    "address1", "address2", "city", "state", "zip", "country", "vat", "user_group_id", "created_at",
    "updated_at", "auth_token", "auth_token_exp", "labels",
)
_SHOW_FIELDS = (
    "id", "fname", "lname", "email", "phone", "active", "is_admin", "api_key", "api_version", "external_id",
    "currency", "confirmed_at", "confirmation_sent_at", "last_request_at", "last_sign_in_at",
    "current_sign_in_at", "sign_in_count", "reset_password_sent_at", "locked_at", "failed_attempts",
    "address1", "address2", "city", "state", "zip", "country", "vat", "company_name", "run_rate", "labels",
    "created_at", "updated_at",
)
_INDEX_FIELDS = (
    "id", "fname", "lname", "email", "active", "is_admin", "api_key", "api_version", "external_id", "currency",
    "confirmed_at", "confirmation_sent_at", "last_request_at", "last_sign_in_at", "current_sign_in_at",
    "sign_in_count", "reset_password_sent_at", "locked_at", "failed_attempts", "address1", "address2", "city",
    "state", "zip", "country", "vat", "labels", "created_at", "updated_at",
)
_SERVICE_KEYS = ("deployments", "containers", "container_services", "container_images", "container_registries",
                 "dns_zones")


# --------------------------------------------------------------------------- Ruby/Rails semantics


def _rb_to_i(value: Any) -> int:
    """Ruby ``to_i``: leading integer of a string (``"12abc"`` -> 12, ``"abc"`` -> 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        return int(value) if math.isfinite(value) else 0
    match = _RUBY_INT_RE.match(str(value))
    return int(match.group(1)) if match else 0


def _rb_blank(value: Any) -> bool:
    """ActiveSupport ``blank?``: nil, false, whitespace-only strings, empty collections."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, dict | list):
        return not value
    return False


def _rb_truthy(value: Any) -> bool:
    """Ruby truthiness: everything but nil and false (``0`` and ``""`` are true)."""
    return value is not None and value is not False


def _cast_string(value: Any) -> str | None:
    """ActiveModel::Type::String: true -> "t", false -> "f", numbers -> their text."""
    if value is None:
        return None
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cast_bool(value: Any) -> bool | None:
    """ActiveModel::Type::Boolean: "" -> nil; false, 0, "0", "f", "false", "off" ... -> false; else true."""
    if value is None or value == "":
        return None
    if value is False or (isinstance(value, int | float) and not isinstance(value, bool) and value == 0):
        return False
    if isinstance(value, str) and value in _FALSE_VALUES:
        return False
    return True


def _cast_int(value: Any) -> int | None:
    """ActiveModel::Type::Integer: blank -> nil; "12abc" -> 12; "abc" -> 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _rb_to_i(value)


def _b64decode_lenient(text: str) -> bytes:
    """Ruby ``Base64.decode64``: skips characters outside the alphabet, tolerates missing padding."""
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text.split("=", 1)[0])
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))


def _rb_decimal(value: Decimal) -> str:
    """Rails' JSON for a BigDecimal: ``to_s`` in plain notation, at least one decimal ("5.0", "0.02054795")."""
    if value == 0:
        return "0.0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text
    return text + ".0"


def _iso(value: datetime | None) -> str | None:
    """ActiveSupport's JSON time: UTC, milliseconds, ``Z`` ("2020-10-15T05:49:07.263Z")."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _to_datetime(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" UTC", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dec(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{name}: pass a str, int or Decimal, not {type(value).__name__}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name}: not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name}: not a finite number")
    return number


def _rb_split_last(text: str | None, sep: str) -> str | None:
    """``text.split(sep).last`` in Ruby (trailing empty fields dropped; nil when nothing is left)."""
    if text is None:
        return None
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts[-1] if parts else None


def _parse_query(raw: str) -> dict[str, str | None]:
    """Rack's query parsing for flat keys: ``a`` -> nil, ``a=`` -> "", the last value of a key wins."""
    out: dict[str, str | None] = {}
    for part in raw.split("&"):
        if not part:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
            out[unquote_plus(key)] = unquote_plus(value)
        else:
            out[unquote_plus(part)] = None
    return out


def _to_query(params: Mapping[str, Any]) -> str:
    """ActiveSupport ``Hash#to_query``: ``k=v`` pairs CGI-escaped, then sorted."""
    pairs = [f"{quote_plus(str(k), safe='')}={quote_plus('' if v is None else str(v), safe='')}"
             for k, v in params.items()]
    return "&".join(sorted(pairs))


class CaseInsensitiveHeaders(dict[str, str]):
    """Recorded request headers: keys lower-cased, looked up case-insensitively."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


# --------------------------------------------------------------------------- request / response


@dataclass
class _Request:
    method: str
    target: str
    headers: CaseInsensitiveHeaders
    body: bytes
    client_ip: str
    path: str = ""
    query: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.query = _parse_query(parts.query)

    @property
    def is_json_body(self) -> bool:
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        return ctype in _JSON_TYPES


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> _Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Response(status, body, "application/json; charset=utf-8", list(headers))


def _errors(status: int, *messages: str) -> _Response:
    return _json_response(status, {"errors": list(messages)})


def _head(status: int) -> _Response:
    """Rails ``head :not_found``: no body."""
    return _Response(status, b"", "application/json" if status != 204 else None)


def _plain(status: int, text: str, content_type: str = "text/html; charset=utf-8") -> _Response:
    return _Response(status, text.encode("utf-8"), content_type)


def _rails_error_page(status: int) -> _Response:
    """What Rails' public exceptions app renders for JSON requests (unrescued errors)."""
    names = {400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
    return _json_response(status, {"status": status, "error": names.get(status, "Error")})


class _Halt(Exception):
    """Stop the action with this response (a before_action that rendered)."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


# --------------------------------------------------------------------------- the sandbox


class ComputeStacksSandbox:
    """The fake ComputeStacks. ``start()`` binds (``port=0``: any free port), ``stop()`` shuts it down."""

    DEFAULT_API_KEY = "cs-sandbox-key"
    DEFAULT_API_SECRET = "cs-sandbox-secret-Qm2xW9pLk4vNb8cRt6yHs3dFg5jZa1eU7o"  # noqa: S105 - a sandbox value

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = DEFAULT_API_KEY,
                 api_secret: str = DEFAULT_API_SECRET, currencies: Iterable[str] = ("USD", "EUR", "GBP"),
                 default_currency: str = "USD", rate_limit: int = 2500, rate_period: float = 300.0,
                 lockout: bool = True, billing_address: bool = False, billing_phone: bool = False,
                 with_admin_user: bool = True, clock: Callable[[], float] = time.time,
                 verbose: bool = False) -> None:
        self.host = host
        self._port = port
        self.api_key = api_key
        self.api_secret = api_secret
        self.verbose = verbose
        self._clock = clock
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        # settings
        self._currencies = frozenset(currencies)
        self._default_currency = default_currency
        self._rate_limit = rate_limit
        self._rate_period = rate_period
        self._lockout = lockout
        self._billing_address = billing_address
        self._billing_phone = billing_phone
        # state
        self._seq: dict[str, int] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._plans: dict[int, dict[str, Any]] = {}
        self._groups: dict[int, dict[str, Any]] = {}
        self._locations: dict[int, dict[str, Any]] = {}
        self._products: dict[str, dict[str, Any]] = {}
        self._sub_products: dict[int, dict[str, Any]] = {}
        self._usages: dict[int, dict[str, Any]] = {}
        # the same rows per user, by id (a user's list reads its own rows, not every user's)
        self._usages_by_user: dict[int, dict[int, dict[str, Any]]] = {}
        self._credentials: dict[str, dict[str, Any]] = {}
        self._ghost_owner: dict[str, Any] = {"id": None, "is_admin": True, "failed_attempts": 0, "locked_at": None}
        self._requests: list[dict[str, Any]] = []
        self._sso_logins: list[dict[str, Any]] = []
        self._rate_counts: dict[tuple[str, int], int] = {}
        # knobs
        self._latency = 0.0
        self._faults: list[tuple[int, bytes, str]] = []
        self._tac_remaining = 0
        self._tac_delay = 0.0
        self._drops: list[bool] = []  # drop_next: per request, whether it is carried out before the drop
        self._slow: list[float] = []  # slow_next: extra seconds before each answer
        self._throttles: list[float] = []  # throttle_next: Retry-After of each 429
        self._hang = Hang()
        self._throttle_all: float | None = None

        plan = self.add_billing_plan("default")
        self.add_user_group("default", is_default=True, billing_plan_id=plan["id"])
        owner_id = None
        if with_admin_user:
            owner_id = self.add_user("admin@sandbox.computestacks.test", "Sandbox", "Admin", is_admin=True)["id"]
        self.add_credential(api_key, api_secret, user_id=owner_id)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ComputeStacksSandbox:
        if self._server is not None:
            return self
        self._stop_event.clear()
        self._hang.reopen()
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="computestacks-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop_event.set()
        self._hang.close()  # releases every hanging request
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise keep their threads waiting
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> ComputeStacksSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    # ------------------------------------------------------------------ knobs

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, n: int = 1, status: int = 500, body: str = "<html>oops</html>",
                  content_type: str = "text/html; charset=utf-8") -> None:
        """The next ``n`` requests get this answer and change nothing."""
        with self._lock:
            self._faults.extend([(status, body.encode("utf-8"), content_type)] * n)

    def timeout_after_commit_next(self, n: int, delay: float) -> None:
        """The next ``n`` mutating requests (POST/PUT/PATCH/DELETE) are carried out, then the answer waits
        ``delay`` seconds (longer than the client's timeout: "applied, but the client saw a timeout")."""
        with self._lock:
            self._tac_remaining = n
            self._tac_delay = max(0.0, float(delay))

    def hang(self, seconds: float) -> None:
        """Every request (arriving or waiting) waits ``seconds`` from now before it is even looked at, or
        until ``hang(0)``/``clear_faults()``/``stop()``; then it is served normally (the client may be gone)."""
        self._hang.set(seconds)

    def throttle_all(self, retry_after: float | None) -> None:
        """Every request answers Rack::Attack's 429 asking to wait ``retry_after`` s (None: back to normal)."""
        with self._lock:
            self._throttle_all = None if retry_after is None else max(0.0, float(retry_after))

    def drop_next(self, n: int = 1, *, applied: bool = False) -> None:
        """The next ``n`` requests get no answer: the connection is closed. ``applied``: each is carried
        out first (ComputeStacks did the work, then died or the connection broke); else nothing changes."""
        with self._lock:
            self._drops.extend([bool(applied)] * n)

    def slow_next(self, n: int, delay: float) -> None:
        """The next ``n`` requests (any method) are carried out and answered ``delay`` seconds late."""
        with self._lock:
            self._slow.extend([max(0.0, float(delay))] * n)

    def throttle_next(self, n: int = 1, retry_after: float = 1) -> None:
        """The next ``n`` requests get Rack::Attack's 429 with ``Retry-After``; nothing is done."""
        with self._lock:
            self._throttles.extend([max(0.0, float(retry_after))] * n)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._drops.clear()
            self._slow.clear()
            self._throttles.clear()
            self._tac_remaining = 0
            self._latency = 0.0
            self._throttle_all = None
        self._hang.set(0)

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received: method, path (raw), query, json, headers (no Authorization), status."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def users(self) -> dict[int, dict[str, Any]]:
        """A snapshot of every user record (internal form: datetimes, ``password`` in clear, ``services``)."""
        with self._lock:
            return copy.deepcopy(self._users)

    def user(self, user_id: int) -> dict[str, Any] | None:
        with self._lock:
            record = self._users.get(user_id)
            return copy.deepcopy(record) if record else None

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        with self._lock:
            for record in self._users.values():
                if record["email"] == email.strip().lower():
                    return copy.deepcopy(record)
            return None

    @property
    def user_groups(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._groups)

    @property
    def locations(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._locations)

    @property
    def usages(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._usages)

    @property
    def sso_logins(self) -> list[dict[str, Any]]:
        """Successful ``GET /?username=&token=`` logins: user_id, at."""
        with self._lock:
            return list(self._sso_logins)

    # ------------------------------------------------------------------ seeding

    def _next(self, kind: str) -> int:
        self._seq[kind] = self._seq.get(kind, 0) + 1
        return self._seq[kind]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def add_billing_plan(self, name: str) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            plan: dict[str, Any] = {"id": self._next("plan"), "name": name, "created_at": now, "updated_at": now}
            self._plans[plan["id"]] = plan
            return dict(plan)

    def add_user_group(self, name: str, is_default: bool = False, *, billing_plan_id: int | None = None,
                       location_ids: Iterable[int] = (), **attrs: Any) -> dict[str, Any]:
        with self._lock:
            if billing_plan_id is not None and billing_plan_id not in self._plans:
                raise ValueError(f"no billing plan {billing_plan_id}")
            now = self._now()
            group: dict[str, Any] = {
                "id": self._next("group"), "name": name, "is_default": bool(is_default),
                "billing_plan_id": billing_plan_id if billing_plan_id is not None else (min(self._plans) if
                                                                                        self._plans else None),
                "active": True, "q_containers": 250, "q_dns_zones": 250, "q_cr": 20, "allow_local_volume": False,
                "bill_offline": True, "bill_suspended": True, "remove_stopped": False,
                "created_at": now, "updated_at": now, "location_ids": list(location_ids),
            }
            unknown = set(attrs) - set(group)
            if unknown:
                raise TypeError(f"unknown user group attributes: {sorted(unknown)}")
            group.update(attrs)
            if group["is_default"]:
                for other in self._groups.values():
                    other["is_default"] = False
            self._groups[group["id"]] = group
            return copy.deepcopy(group)

    def add_location(self, name: str, **attrs: Any) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            location: dict[str, Any] = {
                "id": self._next("location"), "name": name, "active": True, "fill_strategy": "least",
                "fill_by_qty": True, "overcommit_memory": True, "overcommit_cpu": True,
                "created_at": now, "updated_at": now,
            }
            location.update(attrs)
            self._locations[location["id"]] = location
            return dict(location)

    def add_credential(self, api_key: str, api_secret: str, *, user_id: int | None) -> None:
        """An API credential pair owned by ``user_id`` (None: an admin that is not in the user list)."""
        with self._lock:
            if user_id is not None and user_id not in self._users:
                raise ValueError(f"no user {user_id}")
            self._credentials[api_key] = {"secret": api_secret, "user_id": user_id}

    def add_user(self, email: str, fname: str, lname: str, *, currency: str = "USD",
                 external_id: str | int | None = None, labels: Mapping[str, Any] | None = None,
                 user_group_id: int | None = None, active: bool = True, is_admin: bool = False,
                 run_rate: str | int | Decimal = "0.0", deployments: int = 0, container_services: int = 0,
                 password: str | None = None, created_at: datetime | str | None = None,
                 confirmed: bool = True, **attrs: Any) -> dict[str, Any]:
        """Seed a user directly (no API validation beyond a unique email). Returns the record."""
        with self._lock:
            normalized = email.strip().lower()
            if self._email_taken(normalized, None):
                raise ValueError(f"email already taken: {normalized}")
            if user_group_id is not None and user_group_id not in self._groups:
                raise ValueError(f"no user group {user_group_id}")
            when = _to_datetime(created_at) if created_at is not None else self._now()
            record = self._blank_user(when)
            record.update({
                "id": self._next("user"), "email": normalized, "fname": fname, "lname": lname,
                "currency": currency, "external_id": None if external_id is None else str(external_id),
                "labels": copy.deepcopy(dict(labels or {})), "user_group_id": user_group_id or self._default_group_id(),
                "active": active, "is_admin": is_admin, "run_rate": run_rate,
                "password": password or secrets.token_urlsafe(12), "confirmed_at": when if confirmed else None,
            })
            record["services"].update({"deployments": deployments, "container_services": container_services,
                                       "containers": container_services})
            unknown = set(attrs) - set(record)
            if unknown:
                raise TypeError(f"unknown user attributes: {sorted(unknown)}")
            record.update(attrs)
            self._users[record["id"]] = record
            return copy.deepcopy(record)

    def set_user_fields(self, user_id: int, **fields: Any) -> dict[str, Any]:
        """Change a user record behind the API's back (e.g. ``run_rate``, ``services``, ``locked_at``)."""
        with self._lock:
            record = self._users[user_id]
            unknown = set(fields) - set(record)
            if unknown:
                raise TypeError(f"unknown user attributes: {sorted(unknown)}")
            record.update(copy.deepcopy(fields))
            return copy.deepcopy(record)

    def add_usage(self, user_id: int, *, product_name: str, subscription_product_id: int, total: str | Decimal,
                  qty: str | Decimal, period_start: datetime | str, period_end: datetime | str,
                  rate: str | Decimal | None = None, rate_period: int = 1, qty_total: str | Decimal | None = None,
                  processed: bool = False, processed_on: datetime | str | None = None,
                  external_id: str | None = None, product_label: str | None = None,
                  created_at: datetime | str | None = None) -> dict[str, Any]:
        """Seed one BillingUsage row. ``created_at`` defaults to ``period_end`` (rows are written when a
        collection period ends); the API lists rows newest ``created_at`` first."""
        with self._lock:
            if user_id not in self._users:
                raise ValueError(f"no user {user_id}")
            total_d, qty_d = _dec(total, "total"), _dec(qty, "qty")
            if rate is None:
                rate_d = (total_d / qty_d).quantize(Decimal("1e-8")).normalize() if qty_d else Decimal(0)
            else:
                rate_d = _dec(rate, "rate")
            start, end = _to_datetime(period_start), _to_datetime(period_end)
            product = self._products.get(product_name)
            if product is None:
                product = {"id": self._next("product"), "name": product_name,
                           "label": product_label or product_name, "resource_kind": "package", "unit": 1,
                           "unit_type": "hour", "external_id": None, "group": None, "package": None}
                self._products[product_name] = product
            sub = self._sub_products.get(subscription_product_id)
            if sub is None:
                sub = {"id": subscription_product_id, "product_name": product_name, "user_id": user_id,
                       "external_id": None, "start_on": start, "active": True, "phase_type": "final",
                       "created_at": start, "updated_at": start}
                self._sub_products[subscription_product_id] = sub
            elif sub["product_name"] != product_name or sub["user_id"] != user_id:
                raise ValueError(f"subscription product {subscription_product_id} belongs to another "
                                 "product or user")
            made = _to_datetime(created_at) if created_at is not None else end
            row: dict[str, Any] = {
                "id": self._next("usage"), "user_id": user_id, "subscription_product_id": subscription_product_id,
                "period_start": start, "period_end": end, "external_id": external_id, "rate": rate_d,
                "rate_period": rate_period, "qty": qty_d,
                "qty_total": _dec(qty_total, "qty_total") if qty_total is not None else qty_d, "total": total_d,
                "processed": processed,
                "processed_on": (_to_datetime(processed_on) if processed_on is not None
                                 else (end if processed else None)),
                "created_at": made, "updated_at": made,
            }
            self._usages[row["id"]] = row
            self._usages_by_user.setdefault(user_id, {})[row["id"]] = row
            return copy.deepcopy(row)

    def mark_usage_processed(self, user_id: int | None = None) -> int:
        """What ComputeStacks' month-end job does to the rows it aggregated; returns how many changed."""
        with self._lock:
            now = self._now()
            changed = 0
            rows = self._usages if user_id is None else self._usages_by_user.get(user_id, {})
            for row in rows.values():
                if not row["processed"]:
                    row.update(processed=True, processed_on=now, updated_at=now)
                    changed += 1
            return changed

    def _blank_user(self, now: datetime) -> dict[str, Any]:
        return {
            "id": 0, "fname": None, "lname": None, "email": "", "phone": None, "active": True, "is_admin": False,
            "api_key": None, "api_version": 0, "external_id": None, "currency": "USD", "confirmed_at": None,
            "confirmation_sent_at": None, "last_request_at": None, "last_sign_in_at": None,
            "current_sign_in_at": None, "sign_in_count": 0, "reset_password_sent_at": None, "locked_at": None,
            "failed_attempts": 0, "address1": None, "address2": None, "city": None, "state": None, "zip": None,
            "country": "US", "vat": None, "company_name": None, "locale": "en", "labels": {},
            "user_group_id": None, "created_at": now, "updated_at": now, "auth_token": None,
            "auth_token_exp": None, "current_sign_in_ip": None, "last_sign_in_ip": None,
            "bypass_billing": False, "password": None, "run_rate": 0,
            "services": dict.fromkeys(_SERVICE_KEYS, 0),
        }

    def _default_group_id(self) -> int | None:
        for group in self._groups.values():
            if group["is_default"]:
                return int(group["id"])
        return None

    def _email_taken(self, email: str, except_id: int | None) -> bool:
        return any(u["email"] == email and u["id"] != except_id for u in self._users.values())

    # ------------------------------------------------------------------ HTTP entry

    def _conn_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _conn_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _serve(self, req: _Request) -> tuple[_Response, float, dict[str, Any]]:
        """Answer one request; returns the response, how long to wait before sending it, the record."""
        try:
            parsed_json = json.loads(req.body) if req.body.strip() else None
        except ValueError:
            parsed_json = None
        record = {
            "method": req.method, "path": req.path, "query": dict(req.query), "json": parsed_json,
            "headers": CaseInsensitiveHeaders((k, v) for k, v in req.headers.items() if k != "authorization"),
            "status": None, "at": self._clock(),
        }
        with self._lock:
            self._requests.append(record)
            delay = self._latency + (self._slow.pop(0) if self._slow else 0.0)
            drop = self._drops.pop(0) if self._drops else None
            record["dropped"] = drop is not None
            if drop is False:
                response = _Response(0, b"", "")
            elif self._throttles:
                response = self._throttled(self._throttles.pop(0))
            elif self._throttle_all is not None:
                response = self._throttled(self._throttle_all)
            elif self._faults:
                status, body, ctype = self._faults.pop(0)
                response = _Response(status, body, ctype)
            else:
                response = self._throttle(req) or self._app(req)
                if req.method in _MUTATING and self._tac_remaining > 0:
                    self._tac_remaining -= 1
                    delay += self._tac_delay
            record["status"] = response.status
        return response, delay, record

    def _throttle(self, req: _Request) -> _Response | None:
        """Rack::Attack ``req/ip``: fixed windows of ``rate_period`` s aligned to the epoch; every request counts."""
        now = self._clock()
        window = int(now // self._rate_period)
        key = (req.client_ip, window)
        count = self._rate_counts.get(key, 0) + 1
        self._rate_counts = {k: v for k, v in self._rate_counts.items() if k[1] == window}
        self._rate_counts[key] = count
        if count <= self._rate_limit:
            return None
        reset_at = (window + 1) * self._rate_period
        return self._throttled(reset_at - now)

    def _throttled(self, wait: float) -> _Response:
        """Rack::Attack's answer (reference section 1.2): plain ``Throttled``, RateLimit-* and Retry-After."""
        retry_after = max(1, math.ceil(wait))
        return _Response(429, b"Throttled\n", "text/plain", [
            ("RateLimit-Limit", str(self._rate_limit)), ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", str(math.ceil(self._clock() + retry_after))), ("Retry-After", str(retry_after)),
        ])

    # ------------------------------------------------------------------ Rails-like pipeline

    def _app(self, req: _Request) -> _Response:
        if req.path == "/api" or req.path.startswith("/api/"):
            try:
                return self._api(req)
            except _Halt as halt:
                return halt.response
        if req.path == "/" and req.method in ("GET", "HEAD"):
            return self._ui_root(req)
        return _plain(404, "<html><body>The page you were looking for doesn't exist.</body></html>")

    def _api(self, req: _Request) -> _Response:
        route, params, fmt = self._route(req)
        wants_json = fmt == "json" if fmt is not None else self._accepts_json(req.headers.get("accept"))

        # VersionCake's check_version! is prepended to every before_action.
        version = self._requested_version(req)
        if version not in SUPPORTED_VERSIONS and version not in DEPRECATED_VERSIONS:
            if not wants_json:
                raise _Halt(_plain(406, UNKNOWN_FORMAT))
            requested = _rb_split_last(_rb_split_last(req.headers.get("accept"), "; "), "=")
            message = (f"You requested an unsupported version ({requested})" if requested is not None
                       else "You requested an unsupported version")
            response = _errors(422, message)
            response.headers.append(("API-Version-Supported", "false"))
            return response

        if route == "auth":  # POST /api/auth: no auth_request!, always 400
            if not wants_json:
                return _plain(406, UNKNOWN_FORMAT)
            return _errors(400, "this authentication method has been replaced with oauth2.",
                           "Please see the api documentation: /documentation/api")

        if req.method == "OPTIONS":  # auth_request! answers CORS preflights itself
            return _plain(200, "", "text/plain")

        current_user = self._auth_request(req, wants_json)
        deprecated = version in DEPRECATED_VERSIONS

        if route is None:
            if not wants_json:
                return _plain(404, json.dumps([UNKNOWN_ROUTE]))
            return self._deprecation(_errors(404, UNKNOWN_ROUTE), deprecated)

        if route == "version":
            if current_user is None:
                return _head(401)  # doorkeeper_authorize! without a token
            if not wants_json:
                return _plain(406, UNKNOWN_FORMAT)
            return self._deprecation(_json_response(200, {
                "version": CS_VERSION, "api_latest_version": int("".join(CS_VERSION.split(".")[:2])),
                "api_available_versions": sorted(DEPRECATED_VERSIONS) + sorted(SUPPORTED_VERSIONS),
            }), deprecated)

        # Api::Admin::ApplicationController#ensure_admin!
        if current_user is None or not current_user.get("is_admin"):
            return self._deprecation(self._not_authorized(wants_json), deprecated)
        if not wants_json:
            return _plain(406, UNKNOWN_FORMAT)
        handler = getattr(self, f"_action_{route}")
        return self._deprecation(handler(req, params), deprecated)

    @staticmethod
    def _deprecation(response: _Response, deprecated: bool) -> _Response:
        if deprecated:
            response.headers.append(("API-Deprecated", "true"))
        return response

    @staticmethod
    def _not_authorized(wants_json: bool) -> _Response:
        return _errors(401, NOT_AUTHORIZED) if wants_json else _plain(406, UNKNOWN_FORMAT)

    @staticmethod
    def _accepts_json(accept: str | None) -> bool:
        """Rails format negotiation for respond_to json/xml: no Accept (or a browser-like one) means HTML."""
        if not accept or _BROWSER_LIKE_ACCEPT.search(accept):
            return False
        kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        return bool(kinds & _JSON_TYPES) or kinds == {"*/*"}

    @staticmethod
    def _requested_version(req: _Request) -> int:
        match = _VERSION_RE.search(req.headers.get("accept") or "")
        return int(match.group(1)) if match else MISSING_VERSION

    def _route(self, req: _Request) -> tuple[str | None, dict[str, str], str | None]:
        """Match ``config/routes/api*.rb`` for what the sandbox implements; ``:id`` is ``[^/.?]+``."""
        segments = req.path.split("/")[2:]  # after "/api"
        if segments and segments[-1] == "":
            segments.pop()
        fmt: str | None = None
        if segments and "." in segments[-1]:
            pieces = segments[-1].split(".")
            if len(pieces) != 2 or not pieces[0] or not pieces[1]:
                return None, {}, None
            segments[-1], fmt = pieces[0], pieces[1].lower()
        if any(not s or "." in s for s in segments):
            return None, {}, fmt
        m = req.method
        get = m in ("GET", "HEAD")
        n = len(segments)
        table: list[tuple[tuple[str, ...], Callable[[str], bool], str]] = [
            (("version",), lambda _: get, "version"),
            (("auth",), lambda x: x == "POST", "auth"),
            (("admin", "users"), lambda _: get, "users_index"),
            (("admin", "users"), lambda x: x == "POST", "users_create"),
            (("admin", "users", ":id"), lambda _: get, "users_show"),
            (("admin", "users", ":id"), lambda x: x in ("PATCH", "PUT"), "users_update"),
            (("admin", "users", ":id"), lambda x: x == "DELETE", "users_destroy"),
            (("admin", "users", ":id", "user_sso"), lambda x: x == "POST", "user_sso_create"),
            (("admin", "users", ":id", "suspension"), lambda x: x == "POST", "suspension_create"),
            (("admin", "users", ":id", "suspension"), lambda x: x == "DELETE", "suspension_destroy"),
            (("admin", "users", ":id", "billing_usages"), lambda _: get, "billing_usages_index"),
            (("admin", "user_groups"), lambda _: get, "user_groups_index"),
            (("admin", "user_groups", ":id"), lambda _: get, "user_groups_show"),
            (("admin", "locations"), lambda _: get, "locations_index"),
            (("admin", "locations", ":id"), lambda _: get, "locations_show"),
        ]
        for pattern, method_ok, name in table:
            if len(pattern) != n or not method_ok(m):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, segments, strict=True):
                if want.startswith(":"):
                    params[want[1:]] = unquote(got)
                elif want != got:
                    break
            else:
                return name, params, fmt
        return None, {}, fmt

    def _auth_request(self, req: _Request, wants_json: bool) -> dict[str, Any] | None:
        """ApiAuth#auth_request!: only acts on ``Basic``; a bad pair halts with 401. Returns the owner."""
        header = req.headers.get("authorization") or ""
        if "Basic" not in header:
            return None
        try:
            scheme, _, encoded = header.strip().partition(" ")
            if scheme != "Basic":
                raise ValueError("not basic")
            username, sep, password = _b64decode_lenient(encoded.strip()).decode("utf-8").partition(":")
            if not sep:
                raise ValueError("no colon")
            owner = self._check_credential(username, password)
        except (ValueError, UnicodeDecodeError):
            owner = None
        if owner is None:
            raise _Halt(self._not_authorized(wants_json))
        return owner

    def _check_credential(self, username: str, password: str) -> dict[str, Any] | None:
        """User::ApiCredential#valid_password? with Devise lockable (maximum_attempts = 5)."""
        credential = self._credentials.get(username)
        if credential is None:
            return None
        owner = self._ghost_owner if credential["user_id"] is None else self._users.get(credential["user_id"])
        if owner is None:
            return None
        now = self._now()
        if self._lockout:
            locked_at = owner.get("locked_at")
            if locked_at is not None and locked_at > now - UNLOCK_IN:
                return None
            if owner["failed_attempts"] >= MAX_FAILED_ATTEMPTS:
                owner["locked_at"] = now
                return None
        if secrets.compare_digest(password.encode(), str(credential["secret"]).encode()):
            owner["failed_attempts"] = 0
            owner["locked_at"] = None
            return owner
        owner["failed_attempts"] += 1
        return None

    # ------------------------------------------------------------------ users

    def _locate_user(self, req: _Request, pid: str) -> dict[str, Any]:
        """ApiAdminFindUser#locate_user; halts with ``head :not_found`` on a miss."""
        found: dict[str, Any] | None = None
        label = req.query.get("find_by_label")
        number = _rb_to_i(pid)
        ordered = [self._users[k] for k in sorted(self._users)]
        if label in ("whmcs_service_id", "whmcs_client_id") and number != 0:
            key = "service_id" if label == "whmcs_service_id" else "client_id"
            for user in ordered:
                whmcs = user["labels"].get("whmcs") if isinstance(user["labels"], dict) else None
                value = whmcs.get(key) if isinstance(whmcs, dict) else None
                # jsonb containment: numbers compare by value, a string "10" does not match 10
                if isinstance(value, int | float) and not isinstance(value, bool) and value == number:
                    found = user
                    break
        elif req.query.get("find_by_external_id") is not None:
            found = next((u for u in ordered if u["external_id"] == pid), None)
        elif req.query.get("find_by_email") is not None:
            try:
                wanted = _b64decode_lenient(pid)
            except ValueError:
                wanted = b""
            found = next((u for u in ordered if u["email"].encode("utf-8") == wanted), None)
        else:
            found = self._users.get(number) if number else None
        if found is None or found["email"] in SUPPORT_EMAILS:
            raise _Halt(_head(404))
        return found

    def _user_params(self, req: _Request) -> tuple[bool, Any]:
        """``params[:user]`` after Rails' JSON parsing and ParamsWrapper. (present?, value)."""
        body: Any = None
        if req.is_json_body and req.body.strip():
            try:
                body = json.loads(req.body)
            except ValueError:
                raise _Halt(_rails_error_page(400)) from None  # ActionDispatch ParseError
            if not isinstance(body, dict):
                body = {"_json": body}
        if not req.is_json_body:
            return False, None
        body = body or {}
        if "user" in body:
            return True, body["user"]
        # wrap_parameters format: [:json] copies the keys that are User columns into params[:user].
        return True, {k: v for k, v in body.items() if k in USER_COLUMNS}

    @staticmethod
    def _permit(user_params: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in user_params.items():
            if key not in _PERMITTED:
                continue
            if key == "merge_labels":
                if isinstance(value, dict):
                    out[key] = copy.deepcopy(value)
            elif not isinstance(value, dict | list):
                out[key] = value
        return out

    def _assign(self, record: dict[str, Any], permitted: Mapping[str, Any]) -> None:
        for key in _STRING_PARAMS:
            if key in permitted:
                record[key] = _cast_string(permitted[key])
        for key in _BOOL_PARAMS:
            if key in permitted:
                record[key] = _cast_bool(permitted[key])
        if "user_group_id" in permitted:
            record["user_group_id"] = _cast_int(permitted["user_group_id"])

    def _before_validation(self, record: dict[str, Any]) -> None:
        if record.get("user_group_id") not in self._groups:  # set_user_group
            record["user_group_id"] = self._default_group_id()
        if isinstance(record.get("email"), str):  # Devise strip_whitespace_keys, case_insensitive_keys
            record["email"] = record["email"].strip().lower()
        if record.get("currency") not in self._currencies:  # set_currency: "eur" and nil included
            record["currency"] = self._default_currency
        if isinstance(record.get("currency"), str):
            record["currency"] = record["currency"].upper()

    def _validate(self, record: dict[str, Any], *, creating: bool, password: Any, confirmation: Any,
                  email_changed: bool) -> list[str]:
        """Errors in Rails' order: belongs_to, Devise validatable, the model's own, user_address."""
        errors: list[str] = []
        if record.get("user_group_id") is None:
            errors.append("User group must exist")
        raw_email = record.get("email")
        email = "" if raw_email is None else str(raw_email)
        if _rb_blank(email):
            errors.append("Email can't be blank")
        elif email_changed:
            if self._email_taken(email, record.get("id")):
                errors.append("Email has already been taken")
            if not EMAIL_RE.match(email):
                errors.append("Email is invalid")
        if creating or password is not None or confirmation is not None:  # Devise password_required?
            if _rb_blank(password):
                errors.append("Password can't be blank")
            if confirmation is not None and password != confirmation:
                errors.append("Password confirmation doesn't match Password")
        if not _rb_blank(password):
            length = len(str(password))
            if length < 8:
                errors.append("Password is too short (minimum is 8 characters)")
            elif length > 128:
                errors.append("Password is too long (maximum is 128 characters)")
        if _rb_blank(record.get("fname")):
            errors.append("Fname can't be blank")
        if _rb_blank(record.get("lname")):
            errors.append("Lname can't be blank")
        if _rb_blank(email):
            errors.append("Email can't be blank")
        elif self._email_taken(email, record.get("id")):
            errors.append("Email has already been taken")
        if creating and self._billing_address:
            if _rb_blank(record.get("country")):
                errors.append("Country must be present")
            if _rb_blank(record.get("state")) and record.get("country") in ("US", "CA"):
                errors.append("State must be present")
            if _rb_blank(record.get("address1")):
                errors.append("Address1 must be present")
            if _rb_blank(record.get("city")):
                errors.append("City must be present")
            if self._billing_phone:
                phone = record.get("phone")
                if _rb_blank(phone):
                    errors.append("Phone must be present")
                elif not 7 <= len(str(phone)) <= 16:
                    errors.append("Phone must be between 8 and 15 digits")
        elif creating and _rb_blank(record.get("country")):
            record["country"] = "US"
        return errors

    @staticmethod
    def _merge_labels(record: dict[str, Any], merge: Any) -> None:
        """User#combine_labels: each top-level key of merge_labels replaces that key (a shallow merge)."""
        if isinstance(merge, dict):
            labels = record["labels"] if isinstance(record["labels"], dict) else {}
            for key, value in merge.items():
                labels[key] = copy.deepcopy(value)
            record["labels"] = labels

    def _action_users_create(self, req: _Request, params: dict[str, str]) -> _Response:
        present, user_params = self._user_params(req)
        if not present or user_params is None:
            return _errors(422, "Missing User Object")
        if not isinstance(user_params, dict):
            return _errors(500, f"undefined method `dig' for an instance of {_ruby_class(user_params)}")
        user_params = dict(user_params)
        if _rb_blank(user_params.get("password")):
            generated = base64.b64encode(secrets.token_bytes(12)).decode().replace("=", "")
            user_params["password"] = user_params["password_confirmation"] = generated
        elif user_params.get("password_confirmation") is None:
            user_params["password_confirmation"] = user_params["password"]
        permitted = self._permit(user_params)
        now = self._now()
        record = self._blank_user(now)
        record["id"] = None
        self._assign(record, permitted)
        if _rb_blank(record.get("locale")) or record.get("locale") not in _LOCALES:
            record["locale"] = "en"
        password, confirmation = permitted.get("password"), permitted.get("password_confirmation")
        self._before_validation(record)
        errors = self._validate(record, creating=True, password=password, confirmation=confirmation,
                                email_changed=True)
        if errors:
            return _errors(422, *errors)
        for column in _NOT_NULL:
            if record.get(column) is None:
                return _errors(500, f'PG::NotNullViolation: ERROR:  null value in column "{column}" of '
                                    'relation "users" violates not-null constraint')
        self._merge_labels(record, permitted.get("merge_labels"))
        record.update({
            "id": self._next("user"), "password": str(password), "run_rate": 0,
            "auth_token": secrets.token_urlsafe(24), "auth_token_exp": now + CREATE_TOKEN_TTL,
            "created_at": now, "updated_at": now,
        })
        if _rb_truthy(user_params.get("skip_email_confirm")):
            record["confirmed_at"] = now
        else:
            record["confirmation_sent_at"] = now
        self._users[record["id"]] = record
        return _json_response(201, {"user": self._user_json(record, "create")})

    def _action_users_show(self, req: _Request, params: dict[str, str]) -> _Response:
        user = self._locate_user(req, params["id"])
        include_usage = req.query.get("include") == "balance"
        return _json_response(200, {"user": self._user_json(user, "show", include_usage=include_usage)})

    def _action_users_update(self, req: _Request, params: dict[str, str]) -> _Response:
        user = self._locate_user(req, params["id"])
        present, user_params = self._user_params(req)
        if present and user_params is not None and not isinstance(user_params, dict):
            return _rails_error_page(500)
        user_params = dict(user_params) if isinstance(user_params, dict) else None
        if user_params is not None and _rb_truthy(user_params.get("password")):
            if _rb_blank(user_params["password"]):
                user_params.pop("password", None)
                user_params.pop("password_confirmation", None)
            elif user_params.get("password_confirmation") is None:
                user_params["password_confirmation"] = user_params["password"]
        if _rb_blank(user_params):  # params.require(:user) -> ParameterMissing, rendered by Rails as 400
            return _rails_error_page(400)
        assert user_params is not None
        permitted = self._permit(user_params)
        candidate = copy.deepcopy(user)
        self._assign(candidate, permitted)
        if "locale" in permitted and candidate.get("locale") is None:
            return _rails_error_page(500)
        password, confirmation = permitted.get("password"), permitted.get("password_confirmation")
        self._before_validation(candidate)
        errors = self._validate(candidate, creating=False, password=password, confirmation=confirmation,
                                email_changed=candidate.get("email") != user["email"])
        if errors:
            return _errors(422, *errors)
        if any(candidate.get(column) is None for column in _NOT_NULL):
            return _rails_error_page(500)
        self._merge_labels(candidate, permitted.get("merge_labels"))
        if password is not None:
            candidate["password"] = str(password)
        if candidate != user:
            candidate["updated_at"] = self._now()
        user.clear()
        user.update(candidate)
        return _json_response(200, {"user": self._user_json(user, "show")})

    def _action_users_destroy(self, req: _Request, params: dict[str, str]) -> _Response:
        user = self._locate_user(req, params["id"])
        del self._users[user["id"]]
        for usage_id in self._usages_by_user.pop(user["id"], {}):
            del self._usages[usage_id]
        self._credentials = {k: v for k, v in self._credentials.items() if v["user_id"] != user["id"]}
        return _head(204)

    def _action_users_index(self, req: _Request, params: dict[str, str]) -> _Response:
        ordered = sorted(self._users.values(),
                         key=lambda u: ((u["lname"] or "").lower(), (u["fname"] or "").lower(), u["id"]))
        rows, headers = self._paginate(req, ordered)
        include_usage = req.query.get("include") == "balance"
        return _json_response(200, {"users": [self._user_json(u, "index", include_usage=include_usage)
                                              for u in rows]}, headers)

    def _action_user_sso_create(self, req: _Request, params: dict[str, str]) -> _Response:
        user = self._locate_user(req, params["id"])
        now = self._now()
        user.update(auth_token=secrets.token_urlsafe(24), auth_token_exp=now + SSO_TOKEN_TTL, updated_at=now)
        return _json_response(201, {"username": user["email"], "token": user["auth_token"],
                                    "expires": _iso(user["auth_token_exp"])})

    def _action_suspension_create(self, req: _Request, params: dict[str, str]) -> _Response:
        return self._set_active(req, params, False)

    def _action_suspension_destroy(self, req: _Request, params: dict[str, str]) -> _Response:
        return self._set_active(req, params, True)

    def _set_active(self, req: _Request, params: dict[str, str], active: bool) -> _Response:
        user = self._locate_user(req, params["id"])
        if user["active"] != active:
            user.update(active=active, updated_at=self._now())
        return _json_response(202, {})

    def _action_billing_usages_index(self, req: _Request, params: dict[str, str]) -> _Response:
        # Subscriptions::BaseController#load_parent: numeric id only, no find_by_* flags.
        number = _rb_to_i(params["id"])
        user = self._users.get(number) if number else None
        if user is None:
            return _errors(404, "Unknown User")
        rows = sorted(self._usages_by_user.get(user["id"], {}).values(),
                      key=lambda r: (r["created_at"], r["id"]), reverse=True)  # default_scope created_at desc
        page, headers = self._paginate(req, rows)
        return _json_response(200, {"billing_usages": [self._usage_json(r) for r in page]}, headers)

    # ------------------------------------------------------------------ groups, locations

    def _action_user_groups_index(self, req: _Request, params: dict[str, str]) -> _Response:
        ordered = sorted(self._groups.values(), key=lambda g: (str(g["name"]).lower(), g["id"]))
        rows, headers = self._paginate(req, ordered)
        return _json_response(200, {"user_groups": [self._group_json(g) for g in rows]}, headers)

    def _action_user_groups_show(self, req: _Request, params: dict[str, str]) -> _Response:
        group = self._groups.get(_rb_to_i(params["id"]))
        if group is None:
            return _head(404)
        return _json_response(200, {"user_group": self._group_json(group)})

    def _action_locations_index(self, req: _Request, params: dict[str, str]) -> _Response:
        ordered = sorted(self._locations.values(), key=lambda loc: (str(loc["name"]).lower(), loc["id"]))
        return _json_response(200, {"locations": [self._location_json(loc) for loc in ordered]})

    def _action_locations_show(self, req: _Request, params: dict[str, str]) -> _Response:
        location = self._locations.get(_rb_to_i(params["id"]))
        if location is None:
            return _head(404)
        return _json_response(200, {"location": self._location_json(location)})

    # ------------------------------------------------------------------ pagination

    def _paginate(self, req: _Request, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                            list[tuple[str, str]]]:
        """api-pagination 5 over will_paginate: Link (first, prev, last, next), Per-Page, Total."""
        page = _rb_to_i(req.query.get("page"))
        page = page if page > 0 else 1
        per_page = _rb_to_i(req.query.get("per_page"))
        per_page = per_page if per_page > 0 else DEFAULT_PER_PAGE
        total = len(rows)
        total_pages = max(1, math.ceil(total / per_page))
        links: list[tuple[str, int]] = []
        if page != 1:
            links += [("first", 1), ("prev", page - 1)]
        if page < total_pages:
            links += [("last", total_pages), ("next", page + 1)]
        host = req.headers.get("host") or f"{self.host}:{self._port}"
        base = f"http://{host}{req.path}"
        headers: list[tuple[str, str]] = []
        if links:
            headers.append(("Link", ", ".join(
                f'<{base}?{_to_query({**req.query, "page": number})}>; rel="{rel}"' for rel, number in links)))
        headers += [("Per-Page", str(per_page)), ("Total", str(total))]
        start = (page - 1) * per_page
        return rows[start:start + per_page], headers

    # ------------------------------------------------------------------ views (RABL)

    def _user_json(self, user: dict[str, Any], view: str, *, include_usage: bool = False) -> dict[str, Any]:
        names = {"create": _CREATE_FIELDS, "show": _SHOW_FIELDS, "index": _INDEX_FIELDS}[view]
        out: dict[str, Any] = {}
        for name in names:
            value = user.get(name)
            if isinstance(value, datetime):
                value = _iso(value)
            elif isinstance(value, Decimal):
                value = _rb_decimal(value)
            out[name] = copy.deepcopy(value)
        out["currency_symbol"] = CURRENCY_SYMBOLS.get(str(user["currency"]), str(user["currency"]))
        out["current_sign_in_ip"] = user.get("current_sign_in_ip") or ""
        out["last_sign_in_ip"] = user.get("last_sign_in_ip") or ""
        if view == "create":
            return out
        if include_usage:
            total = sum((r["total"] for r in self._usages_by_user.get(user["id"], {}).values()
                         if not r["processed"]), Decimal(0))
            out["unprocessed_usage"] = _rb_decimal(total)
        group = self._groups.get(user.get("user_group_id") or 0)
        plan = self._plans.get(group["billing_plan_id"]) if group and group.get("billing_plan_id") else None
        out["security_keys"] = []
        out["billing_plan"] = {"id": plan["id"], "name": plan["name"]} if plan else None
        out["user_group"] = {"id": group["id"], "name": group["name"]} if group else None
        out["external_integrations"] = []
        if view == "show":
            out["services"] = {key: int(user["services"].get(key, 0)) for key in _SERVICE_KEYS}
        return out

    def _usage_json(self, row: dict[str, Any]) -> dict[str, Any]:
        sub = self._sub_products[row["subscription_product_id"]]
        product = self._products[sub["product_name"]]
        user = self._users.get(row["user_id"])
        return {
            "id": row["id"], "period_start": _iso(row["period_start"]), "period_end": _iso(row["period_end"]),
            "external_id": row["external_id"], "rate": _rb_decimal(row["rate"]), "rate_period": row["rate_period"],
            "qty": _rb_decimal(row["qty"]), "qty_total": _rb_decimal(row["qty_total"]),
            "total": _rb_decimal(row["total"]), "processed": row["processed"],
            "processed_on": _iso(row["processed_on"]), "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
            "subscription_product": {
                "id": sub["id"], "external_id": sub["external_id"], "start_on": _iso(sub["start_on"]),
                "active": sub["active"], "phase_type": sub["phase_type"], "created_at": _iso(sub["created_at"]),
                "updated_at": _iso(sub["updated_at"]),
                # products/_product.rabl: ``label``, no ``name`` (only the month-end webhook has ``name``)
                "product": {k: product[k] for k in ("id", "label", "resource_kind", "unit", "unit_type",
                                                     "external_id", "group", "package")},
            },
            "user": None if user is None else {
                "id": user["id"], "full_name": f"{user['fname'] or ''} {user['lname'] or ''}",
                "email": user["email"], "external_id": user["external_id"], "labels": copy.deepcopy(user["labels"]),
            },
        }

    def _group_json(self, group: dict[str, Any]) -> dict[str, Any]:
        out = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in group.items() if k != "location_ids"}
        out["locations"] = [{"id": self._locations[i]["id"], "name": self._locations[i]["name"]}
                            for i in group["location_ids"] if i in self._locations]
        out["regions"] = []
        return out

    @staticmethod
    def _location_json(location: dict[str, Any]) -> dict[str, Any]:
        out = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in location.items() if k != "active"}
        out["links"] = {"regions": f"/api/admin/locations/{location['id']}/regions"}
        return out

    # ------------------------------------------------------------------ the UI's token login

    def _ui_root(self, req: _Request) -> _Response:
        """ApplicationController#auth_from_token!: ``/?username=<email>&token=<token>``."""
        host = req.headers.get("host") or f"{self.host}:{self._port}"
        username, token = req.query.get("username"), req.query.get("token")
        target = "/login"
        if username is not None and token is not None:
            user = next((u for u in self._users.values() if u["email"] == username), None)
            if user is not None and user["auth_token"] and user["auth_token_exp"]:
                valid = (user["auth_token_exp"] > self._now()
                         and secrets.compare_digest(token.encode(), str(user["auth_token"]).encode()))
                locked = user["locked_at"] is not None and user["locked_at"] > self._now() - UNLOCK_IN
                if valid and user["confirmed_at"] is not None and not locked:
                    has_subscriptions = any(s["user_id"] == user["id"] for s in self._sub_products.values())
                    target = ("/deployments" if req.query.get("from_admin") is not None or has_subscriptions
                              else "/deployments/orders")
                    now = self._now()
                    user.update(sign_in_count=user["sign_in_count"] + 1, last_sign_in_at=user["current_sign_in_at"],
                                current_sign_in_at=now, last_sign_in_ip=user["current_sign_in_ip"],
                                current_sign_in_ip=req.client_ip)
                    self._sso_logins.append({"user_id": user["id"], "at": now})
        return _Response(302, b"", "text/html; charset=utf-8", [("Location", f"http://{host}{target}")])


def _ruby_class(value: Any) -> str:
    return {str: "String", int: "Integer", float: "Float", bool: "TrueClass", list: "Array"}.get(type(value),
                                                                                                "Object")


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], sandbox: ComputeStacksSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.sandbox.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall per request
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._conn_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._conn_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            sys.stderr.write(f"[computestacks-sandbox] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > _MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(length))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > _MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        sandbox = self.server.sandbox
        try:
            body = self._read_body()
        except ValueError:
            self._send(_plain(400, "Bad Request", "text/plain"))
            self.close_connection = True
            return
        req = _Request(method=self.command, target=self.path,
                       headers=CaseInsensitiveHeaders(self.headers.items()), body=body,
                       client_ip=self.client_address[0])
        if not sandbox._hang.wait():  # the sandbox is stopping
            self.close_connection = True
            return
        response, delay, record = sandbox._serve(req)
        if delay > 0 and sandbox._stop_event.wait(delay):
            self.close_connection = True
            return
        if record.get("dropped"):  # drop_next: the connection closes without an answer
            self.close_connection = True
            return
        try:
            self._send(response)
        except OSError:  # the client gave up (e.g. its read timeout), nothing to do
            self.close_connection = True

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.status not in (204, 304):
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body and response.status not in (204, 304):
            self.wfile.write(response.body)
        self.wfile.flush()


# --------------------------------------------------------------------------- demo data and CLI


def seed_demo(sandbox: ComputeStacksSandbox) -> dict[str, Any]:
    """A small, believable installation for ``make dev``: groups, a location, linked users in USD and EUR
    (``whmcs`` labels with integer ids), one unlinked user, and usage in the previous and current month."""
    location = sandbox.add_location("Frankfurt")
    plan = sandbox.add_billing_plan("Standard")
    starter = sandbox.add_user_group("starter", billing_plan_id=plan["id"], location_ids=[location["id"]])
    pro = sandbox.add_user_group("pro", billing_plan_id=plan["id"], location_ids=[location["id"]])
    now = datetime.fromtimestamp(sandbox._clock(), UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    jane = sandbox.add_user("jane.doe1-1@demo.computestacks.test", "Jane", "Doe", currency="USD",
                            external_id="1", labels={"whmcs": {"client_id": 1, "service_id": 1}},
                            user_group_id=starter["id"], run_rate="14.6", deployments=2, container_services=3)
    max_ = sandbox.add_user("max.muster2-2@demo.computestacks.test", "Max", "Mustermann", currency="EUR",
                            external_id="2", labels={"whmcs": {"client_id": 2, "service_id": 2}},
                            user_group_id=pro["id"], run_rate="36.5", deployments=1, container_services=1)
    sandbox.add_user("walk.in@demo.computestacks.test", "Walk", "In", currency="GBP")
    usage: list[dict[str, Any]] = []
    for user, sub_id, product, rate in ((jane, 101, "small", "0.02"), (jane, 102, "storage", "0.0001"),
                                        (max_, 201, "medium", "0.05")):
        for month_start in (last_month, this_month):
            start = month_start
            while start < min(now, (month_start + timedelta(days=32)).replace(day=1)) and start < now:
                end = start + timedelta(hours=3)
                usage.append(sandbox.add_usage(user["id"], product_name=product, subscription_product_id=sub_id,
                                               rate=rate, qty="3", total=str(Decimal(rate) * 3),
                                               period_start=start, period_end=end,
                                               processed=month_start == last_month and product == "storage"))
                start = end + timedelta(days=2)  # a sparse sample, not every 3 hours
    return {"users": [jane, max_], "groups": [starter, pro], "location": location, "usage_rows": len(usage)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.computestacks",
                                     description="Run the ComputeStacks admin API sandbox in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--api-key", default=ComputeStacksSandbox.DEFAULT_API_KEY)
    parser.add_argument("--api-secret", default=ComputeStacksSandbox.DEFAULT_API_SECRET)
    parser.add_argument("--currencies", default="USD,EUR,GBP", help="comma-separated price currencies")
    parser.add_argument("--seed-demo", action="store_true", help="add demo groups, users and usage")
    parser.add_argument("--verbose", action="store_true", help="log one line per request")
    args = parser.parse_args(argv)
    sandbox = ComputeStacksSandbox(args.host, args.port, api_key=args.api_key, api_secret=args.api_secret,
                                   currencies=[c.strip().upper() for c in args.currencies.split(",") if c.strip()],
                                   verbose=args.verbose)
    if args.seed_demo:
        seed_demo(sandbox)
    sandbox.start()
    print(f"ComputeStacks sandbox on {sandbox.url} (API under /api/), key {sandbox.api_key!r}, "
          f"secret {sandbox.api_secret!r}", flush=True)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
