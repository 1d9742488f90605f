"""httpx client for the WHMCS external API (``POST includes/api.php``, form-encoded, JSON answers).

What it guarantees (docs/architecture.md, reference/whmcs-contract.md section 3):

* Every answer is checked: ``result`` must be ``"success"`` (the documented ``"status": "success"``
  variant of AddBillableItem is accepted too). Errors become ``cswhmcs.errors`` types with
  ``upstream="WHMCS"``; no message ever contains the identifier, secret or access key.
* WHMCS mixes numbers and numeric strings: ids and paging fields come back as ``int``, money as
  ``Decimal`` (JSON floats are parsed as ``Decimal`` too), whichever form WHMCS chose.
* Retries cannot double an effect (``cswhmcs.adapters.retry`` runs them, inside the request's
  deadline): read actions (``Get*``, ``WhmcsDetails``) are retried on timeouts, 5xx and garbage, and
  after a 429 once its ``Retry-After`` has passed (when that fits); any action is retried when the
  connection could not even be made (nothing was sent). ``AddCredit``, ``AddBillableItem``,
  ``UpdateClientProduct``, ``ModuleSuspend`` and ``ModuleUnsuspend`` are never re-sent once sent: a read
  timeout there raises ``UpstreamTimeout(maybe_applied=True)``; a 429 raises ``RateLimited`` (nothing was applied).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import httpx

from cswhmcs.adapters import bounded
from cswhmcs.adapters.pacing import Pacer
from cswhmcs.adapters.retry import Failure, Retrier, RetryingClient, RetryPolicy, Throttled, retry_after
from cswhmcs.errors import (
    InvalidInput,
    RateLimited,
    UpstreamApiError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
)

UPSTREAM = "WHMCS"
CENT = Decimal("0.01")
_RESERVED = frozenset({"action", "identifier", "secret", "username", "password", "accesskey", "responsetype"})
# Messages WHMCS gives when the credential itself (or the caller's IP) is refused.
_AUTH_MESSAGES = ("authentication failed", "invalid or missing credentials", "invalid ip", "ip banned")


class WhmcsApiError(UpstreamApiError):
    """WHMCS answered ``result: error``; ``whmcs_message`` is its own text, ``action`` what we called.

    Logic outside the adapter catches the port-level ``cswhmcs.errors.UpstreamApiError`` (a definite
    refusal: nothing was applied) and reads ``upstream_message``, the same text as ``whmcs_message``."""

    def __init__(self, message: str, *, action: str, whmcs_message: str, http_status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, upstream=UPSTREAM, action=action, upstream_message=whmcs_message,
                         http_status=http_status, code=code)
        self.whmcs_message = whmcs_message


class WhmcsPermissionDenied(UpstreamAuthFailed):
    """The API credential's role does not allow ``action`` ("Invalid Permissions: ...")."""

    def __init__(self, message: str, *, action: str, http_status: int | None = None) -> None:
        super().__init__(message, upstream=UPSTREAM, http_status=http_status)
        self.action = action


@dataclass(frozen=True)
class Currency:
    id: int
    code: str
    prefix: str
    suffix: str
    rate: Decimal


def is_read_action(action: str) -> bool:
    """Actions that change nothing, hence safe to send twice."""
    name = action.lower()
    return name.startswith("get") or name == "whmcsdetails"


# ---------------------------------------------------------------------- coercion helpers


def as_int(value: Any) -> int | None:
    """``7``, ``"7"``, ``"7.0"`` -> 7; ``None``, ``""`` or garbage -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or number != number.to_integral_value():
        return None
    return int(number)


def as_decimal(value: Any) -> Decimal | None:
    """``"15.95"``, ``15.95`` (already Decimal from the parser), ``15`` -> Decimal; else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _coerce(row: Mapping[str, Any], ints: Iterable[str] = (), decimals: Iterable[str] = ()) -> dict[str, Any]:
    out = dict(row)
    for key in ints:
        if key in out:
            number = as_int(out[key])
            if number is not None:
                out[key] = number
    for key in decimals:
        if key in out:
            amount = as_decimal(out[key])
            if amount is not None:
                out[key] = amount
    return out


def _rows(container: Any, key: str) -> list[dict[str, Any]]:
    """``{"product": [..]}`` / ``{"product": {..}}`` / ``[..]`` / ``""`` / None -> a list of dicts."""
    if isinstance(container, Mapping):
        container = container.get(key, [])
    if isinstance(container, Mapping):
        container = [container]
    if not isinstance(container, list):
        return []
    return [dict(r) for r in container if isinstance(r, Mapping)]


def format_money(amount: Decimal, *, field: str = "amount") -> str:
    """A plain string with exactly two decimals. Never rounds: the caller owns rounding."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidInput(f"The {field} must be a decimal number.", field=field)
    cents = amount.quantize(CENT)
    if cents != amount:
        raise InvalidInput(f"The {field} has more than two decimal places.", field=field)
    return format(cents, "f")


def _plain(value: Decimal) -> str:
    """Decimal without exponent notation: Decimal("1E+2") -> "100"."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return _plain(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _flatten(key: str, value: Any, out: list[tuple[str, str]]) -> None:
    """PHP ``http_build_query`` bracket notation for nested values."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _flatten(f"{key}[{sub}]", item, out)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _flatten(f"{key}[{i}]", item, out)
    else:
        out.append((key, _form_value(value)))


# ---------------------------------------------------------------------- the client


class WhmcsClient(RetryingClient):
    """One WHMCS API credential. Thread-safe (httpx.Client is); reuse one per execution environment."""

    page_size = 100

    def __init__(
        self,
        url: str,
        identifier: str,
        secret: str,
        access_key: str | None = None,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
        pacer: Pacer | Callable[[], object] | None = None,
        max_retries: int = 2,
        sleep: Callable[[float], object] = time.sleep,
        backoff: float = 0.25,
        max_rate_limit_wait: float = 30.0,
    ) -> None:
        """``pacer``: a ``cswhmcs.adapters.pacing.Pacer`` (its ``acquire()``) or a plain callable, called
        before every HTTP attempt, retries included (billing uses it to stay under upstream limits)."""
        self._url = url
        self._identifier = identifier
        self._secret = secret
        self._access_key = access_key or None
        self._retrier = Retrier(UPSTREAM, timeout=timeout, connect_timeout=connect_timeout, sleep=sleep, pacer=pacer,
                                policy=RetryPolicy(max_retries=max(0, max_retries), backoff=backoff,
                                                   max_backoff=max(backoff, 2.0),
                                                   max_throttle_wait=max_rate_limit_wait),
                                dropped_message="The connection to WHMCS broke before it answered.")
        # each attempt bounded in total time, one TLS context per process (adapters.bounded)
        self._http = bounded.upstream_client(timeout, connect_timeout, transport)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> WhmcsClient:
        settings.require("WHMCS_API_URL", "WHMCS_API_IDENTIFIER", "WHMCS_API_SECRET")
        return cls(
            settings.WHMCS_API_URL,
            settings.WHMCS_API_IDENTIFIER.get_secret_value(),
            settings.WHMCS_API_SECRET.get_secret_value(),
            settings.WHMCS_API_ACCESS_KEY.get_secret_value() or None,
            timeout=settings.WHMCS_TIMEOUT,
            connect_timeout=settings.CONNECT_TIMEOUT,
            **kwargs,
        )

    def __repr__(self) -> str:  # never the credentials
        return f"WhmcsClient({self._url!r})"

    # ------------------------------------------------------------------ transport

    def call(self, action: str, params: Mapping[str, Any] | None = None, *, retry: bool) -> dict[str, Any]:
        """Send one API action; return the decoded answer (``result`` checked).

        ``retry=True`` allows re-sending after a timeout, a 5xx or garbage, but only for read actions;
        a request that could not connect (nothing sent) is retried whatever the action. WHMCS's own
        ``result: error`` answers are never retried: they would only repeat.
        """
        body = self._encode(action, params or {})
        read = is_read_action(action)

        def send(timeout: httpx.Timeout) -> httpx.Response:
            return self._http.post(self._url, content=body, timeout=timeout,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})

        return self._retrier.run(send, lambda response: self._interpret(action, response, read=read),
                                 resend=retry and read, mutating=not read)

    def _encode(self, action: str, params: Mapping[str, Any]) -> bytes:
        clash = _RESERVED.intersection(k.lower() for k in params)
        if clash:
            raise ValueError(f"reserved WHMCS API fields in params: {sorted(clash)}")
        pairs: list[tuple[str, str]] = [
            ("action", action),
            ("identifier", self._identifier),
            ("secret", self._secret),
            ("responsetype", "json"),
        ]
        if self._access_key:
            pairs.append(("accesskey", self._access_key))
        for key, value in params.items():
            _flatten(key, value, pairs)
        return urlencode(pairs).encode()

    def _interpret(self, action: str, response: httpx.Response, *, read: bool) -> dict[str, Any]:
        """One answer: the decoded data, or ``Failure``/``Throttled`` for the retry rules."""
        status = response.status_code
        if status == 429:
            # A front end (WHMCS itself has no rate limit) refused it before PHP ran: nothing applied.
            delay = retry_after(response.headers)
            if read:
                raise Throttled(delay)
            raise Failure(RateLimited(f"WHMCS is throttling our requests; retry in {math.ceil(delay)} seconds.",
                                      upstream=UPSTREAM, retry_after=delay), retryable=False)
        try:
            data = json.loads(response.content, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            result = str(data.get("result", data.get("status", ""))).lower()
            if result == "error" or (result != "success" and "message" in data):
                error = self._api_error(action, str(data.get("message") or "no message"), status)
                raise Failure(error, retryable=False)
            if result == "success" and 200 <= status < 300:
                return data
        transient = status >= 500 or status == 408 or 200 <= status < 300
        if status >= 500:
            message = f"WHMCS failed with HTTP {status}."
        elif not 200 <= status < 300:
            message = f"WHMCS refused the request with HTTP {status}."
        elif data is None:
            message = "WHMCS answered with something that is not JSON."
        else:
            message = "WHMCS answered without a result."
        raise Failure(UpstreamError(message, upstream=UPSTREAM, http_status=status), retryable=transient)

    def _scrub(self, text: str) -> str:
        for value in (self._secret, self._identifier, self._access_key):
            if value and len(value) >= 4:
                text = text.replace(value, "[redacted]")
        return text

    def _api_error(self, action: str, raw_message: str, status: int) -> UpstreamError:
        message = self._scrub(raw_message.strip()).rstrip(".")
        lowered = message.lower()
        if lowered.startswith("invalid permissions"):
            return WhmcsPermissionDenied(
                f'The WHMCS API credentials are not allowed to call "{action}"; '
                f"add it to the API role ({message}).",
                action=action, http_status=status,
            )
        if lowered.startswith(_AUTH_MESSAGES):
            by_ip = lowered.startswith(("invalid ip", "ip banned"))
            hint = " (allow this address in WHMCS or set WHMCS_API_ACCESS_KEY)" if by_ip else ""
            return UpstreamAuthFailed(f"WHMCS rejected the API credentials: {message}{hint}.",
                                      upstream=UPSTREAM, http_status=status)
        return WhmcsApiError(f"WHMCS answered with an error: {message}.", action=action,
                             whmcs_message=message, http_status=status)

    # ------------------------------------------------------------------ read actions

    def get_health_status(self) -> dict[str, Any]:
        return self.call("GetHealthStatus", retry=True)

    def version(self) -> str | None:
        """The WHMCS version, or None when WhmcsDetails is denied or unknown (WHMCS < 8.0).

        Callers then assume a version before 8.2 (as ComputeStacks' own client does).
        """
        try:
            data = self.call("WhmcsDetails", retry=True)
        except WhmcsPermissionDenied:
            return None
        except WhmcsApiError as exc:
            if exc.whmcs_message.lower().startswith("invalid api action"):
                return None
            raise
        details = data.get("whmcs")
        version = details.get("version") if isinstance(details, Mapping) else None
        return str(version) if version not in (None, "") else None

    def get_currencies(self) -> list[Currency]:
        data = self.call("GetCurrencies", retry=True)
        out = []
        for row in _rows(data.get("currencies"), "currency"):
            cid, rate = as_int(row.get("id")), as_decimal(row.get("rate"))
            if cid is None or rate is None:
                raise UpstreamError("WHMCS sent a currency without id or rate.", upstream=UPSTREAM)
            out.append(Currency(id=cid, code=str(row.get("code", "")).upper(),
                                prefix=str(row.get("prefix", "")), suffix=str(row.get("suffix", "")),
                                rate=rate))
        return out

    def get_client(self, client_id: int) -> dict[str, Any]:
        """GetClientsDetails' ``client``: ids and ``currency`` (the currency id) as int, credit Decimal."""
        data = self.call("GetClientsDetails", {"clientid": client_id}, retry=True)
        client = data.get("client")
        if not isinstance(client, Mapping):  # very old versions: only the top-level copy
            client = {k: v for k, v in data.items() if k not in ("result", "stats")}
        return _coerce(client, ints=("id", "client_id", "userid", "owner_user_id", "currency", "groupid"),
                       decimals=("credit",))

    def get_clients_products(self, *, serviceid: int | None = None, clientid: int | None = None,
                             pid: int | None = None, username: str | None = None) -> list[dict[str, Any]]:
        """Every matching service (all pages). Ids as int, amounts as Decimal."""
        wanted = {"serviceid": serviceid, "clientid": clientid, "pid": pid, "username2": username}
        filters = {k: v for k, v in wanted.items() if v is not None}
        out: list[dict[str, Any]] = []
        start = 0
        for _ in range(100_000):  # a bound, in case WHMCS's paging fields lie
            page = {**filters, "limitstart": start, "limitnum": self.page_size}
            data = self.call("GetClientsProducts", page, retry=True)
            total = as_int(data.get("totalresults")) or 0
            rows = _rows(data.get("products"), "product") if total else []
            out.extend(
                _coerce(r, ints=("id", "qty", "clientid", "orderid", "pid", "serverid", "promoid"),
                        decimals=("firstpaymentamount", "recurringamount"))
                for r in rows
            )
            returned = as_int(data.get("numreturned"))
            returned = len(rows) if returned is None else returned
            first = as_int(data.get("startnumber"))
            following = (start if first is None else first) + returned
            if returned <= 0 or following >= total or following <= start:
                break
            start = following
        return out

    def get_products(self, *, pid: int | Iterable[int] | None = None, module: str | None = None,
                     gid: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if pid is not None:
            params["pid"] = str(pid) if isinstance(pid, int) else ",".join(str(p) for p in pid)
        if module is not None:
            params["module"] = module
        if gid is not None:
            params["gid"] = gid
        data = self.call("GetProducts", params, retry=True)
        return [_coerce(r, ints=("pid", "gid", "allowqty")) for r in _rows(data.get("products"), "product")]

    def get_invoice(self, invoice_id: int) -> dict[str, Any]:
        """GetInvoice with ``items`` flattened to a list (id/relid int, amount Decimal) and
        ``transactions`` a list (WHMCS sends ``""`` when there are none)."""
        data = self.call("GetInvoice", {"invoiceid": invoice_id}, retry=True)
        invoice = _coerce(
            {k: v for k, v in data.items() if k != "result"},
            ints=("invoiceid", "userid"),
            decimals=("subtotal", "credit", "tax", "tax2", "total", "balance", "taxrate", "taxrate2"),
        )
        invoice["items"] = [_coerce(i, ints=("id", "relid", "taxed"), decimals=("amount",))
                            for i in _rows(data.get("items"), "item")]
        invoice["transactions"] = [_coerce(t, ints=("id",), decimals=("amountin", "amountout", "fees"))
                                   for t in _rows(data.get("transactions"), "transaction")]
        return invoice

    def get_invoices(self, *, status: str | None = None, userid: int | None = None, orderby: str | None = None,
                     order: str | None = None, limitstart: int = 0, limitnum: int | None = None
                     ) -> tuple[list[dict[str, Any]], int]:
        """One page of GetInvoices (no items: read them with ``get_invoice``) and ``totalresults``. Ids as
        int, amounts as Decimal. ``status`` is a stored status or ``Overdue`` (Unpaid and past due)."""
        wanted = {"status": status, "userid": userid, "orderby": orderby, "order": order}
        params: dict[str, Any] = {k: v for k, v in wanted.items() if v is not None}
        params.update(limitstart=max(0, limitstart), limitnum=limitnum or self.page_size)
        data = self.call("GetInvoices", params, retry=True)
        total = as_int(data.get("totalresults")) or 0
        rows = [_coerce(r, ints=("id", "userid"),
                        decimals=("subtotal", "credit", "tax", "tax2", "total", "taxrate", "taxrate2"))
                for r in _rows(data.get("invoices"), "invoice")] if total else []
        return rows, total

    def iter_invoices(self, *, status: str | None = None, userid: int | None = None, orderby: str | None = None,
                      order: str | None = None) -> Iterator[dict[str, Any]]:
        """Every matching invoice, page after page (``limitstart``/``limitnum``); the caller may stop early.
        Offsets: an invoice that leaves the filter between two pages can shift one row past the next page."""
        start = 0
        for _ in range(100_000):  # a bound, in case WHMCS's paging fields lie
            rows, total = self.get_invoices(status=status, userid=userid, orderby=orderby, order=order,
                                            limitstart=start, limitnum=self.page_size)
            yield from rows
            following = start + len(rows)
            if not rows or following >= total:
                return
            start = following

    def get_credits(self, client_id: int) -> list[dict[str, Any]]:
        """The client's credit log: id/relid int, amount Decimal."""
        data = self.call("GetCredits", {"clientid": client_id}, retry=True)
        rows = _rows(data.get("credits"), "credit")
        return [_coerce(c, ints=("id", "relid"), decimals=("amount",)) for c in rows]

    # ------------------------------------------------------------------ write actions (never re-sent)

    def add_credit(self, client_id: int, amount: Decimal, description: str) -> Decimal:
        """Add ``amount`` (in the client's currency) to the client's credit; returns the new balance.

        WHMCS does not de-duplicate: this is sent at most once. A timeout raises
        ``UpstreamTimeout(maybe_applied=True)``; check ``get_credits`` before trying again.
        """
        text = format_money(amount)
        if amount <= 0:
            raise InvalidInput("The credit amount must be positive.", field="amount")
        data = self.call("AddCredit", {"clientid": client_id, "description": description, "amount": text,
                                       "type": "add"}, retry=False)
        balance = as_decimal(data.get("newbalance"))
        if balance is None:  # applied, but the balance was not reported: read it (a safe read)
            credit = as_decimal(self.get_client(client_id).get("credit"))
            balance = credit if credit is not None else Decimal("0.00")
        return balance

    def add_billable_item(self, *, client_id: int, description: str, amount: Decimal, quantity: Decimal,
                          unit_mode: str, invoice_action: str, due_date: date | None) -> int:
        """Create one billable item; returns its ``billableid``. Sent at most once (no de-dupe in WHMCS).

        ``unit_mode="quantity"`` (WHMCS 8.2+) sends ``unit=quantity`` + ``quantity``. ``"hours"`` sends
        ``hours`` for WHMCS before 8.2 and also ``unit=hours`` + ``quantity``, which 8.2+ reads, so a
        wrongly-guessed version (WhmcsDetails denied) still bills correctly.
        """
        if unit_mode not in ("quantity", "hours"):
            raise ValueError("unit_mode must be 'quantity' or 'hours'")
        if not isinstance(quantity, Decimal) or not quantity.is_finite():
            raise InvalidInput("The quantity must be a decimal number.", field="quantity")
        params: dict[str, Any] = {"clientid": client_id, "description": description,
                                  "amount": format_money(amount), "invoiceaction": invoice_action}
        if unit_mode == "quantity":
            params.update(unit="quantity", quantity=quantity)
        else:
            params.update(hours=quantity, unit="hours", quantity=quantity)
        if due_date is not None:
            params["duedate"] = due_date.isoformat()
        data = self.call("AddBillableItem", params, retry=False)
        billable_id = as_int(data.get("billableid"))
        if billable_id is None:
            # Created (result was success) but unidentifiable: ambiguous for the caller, never resend.
            raise UpstreamTimeout("WHMCS did not report the id of the billable item it created.",
                                  upstream=UPSTREAM, maybe_applied=True)
        return billable_id

    def module_suspend(self, service_id: int, reason: str) -> None:
        """ModuleSuspend: WHMCS runs the module's SuspendAccount (our signed suspend route) synchronously,
        then sets the service Suspended with ``reason``. Sent at most once; the module's own refusal comes
        back as ``result: error`` (``WhmcsApiError``)."""
        self.call("ModuleSuspend", {"serviceid": service_id, "suspendreason": reason}, retry=False)

    def module_unsuspend(self, service_id: int) -> None:
        """ModuleUnsuspend: runs the module's UnsuspendAccount, then status Active. Sent at most once."""
        self.call("ModuleUnsuspend", {"serviceid": service_id}, retry=False)

    def update_client_product(self, service_id: int, /, **fields: Any) -> None:
        """UpdateClientProduct, e.g. ``serviceusername="ann@example.org"``. Sent at most once."""
        self.call("UpdateClientProduct", {"serviceid": service_id, **fields}, retry=False)
