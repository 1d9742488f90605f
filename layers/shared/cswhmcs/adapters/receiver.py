"""The backend's client of the module's billing receiver (API.md section 8, ``billing.php`` inside WHMCS).

Why it exists: WHMCS's ``AddBillableItem`` has no idempotency key, so a lost answer there needs an operator.
The receiver keys every item by our ledger ``ref`` (one item per ref, ever), which makes every send safe to
repeat. This client therefore treats every unclear outcome the same way: send the same items (same refs,
same body) again, re-signed, with backoff, while the deadline allows a whole attempt.

Outcomes of ``send`` (what the billing worker relies on):

* a list of ``ReceiverAnswer``, one per item, in order, each checked (ref, status, billableid);
* ``ReceiverUnknownOutcome``: tries or time ran out on timeouts, dropped connections, 5xx (proxy pages
  included), non-JSON, an answer without ``result: success`` or whose ``items`` do not match the request.
  Some items may have been created; sending the same items again is safe (they answer ``existing``).
* ``ReceiverSignatureRefused`` (401), ``ReceiverMissing`` (404), ``ReceiverBadRequest`` (400) and a plain
  ``ReceiverError`` (any other 4xx/3xx): nothing was written by that request, and none was retried;
* ``OutOfTime`` (``ReceiverOutOfTime``): not even one whole attempt fitted the deadline, nothing was sent;
* ``RateLimited``: a 429 whose wait does not fit the deadline; nothing was written.

(When an earlier attempt's outcome was unclear, a later definite refusal does not make it definite: the
result is then ``ReceiverUnknownOutcome``.)

Nothing here logs or raises a secret, a signature or a body: log lines carry counts and refs only.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from cswhmcs import deadline
from cswhmcs.adapters import bounded
from cswhmcs.adapters.pacing import PACERS_WITH_DEADLINE, PacingOutOfTime
from cswhmcs.adapters.retry import Failure, OutOfTime, Retrier, RetryingClient, RetryPolicy, Throttled, retry_after
from cswhmcs.errors import (
    ConfigurationError,
    DomainError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from cswhmcs.observability import logger
from cswhmcs.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, compute_signature

UPSTREAM = "receiver"
NAME = "the WHMCS billing receiver"  # in sentences
ROUTE = "/whmcs/billable-items"  # what the signature covers (API.md section 8)
STATUSES = frozenset({"created", "existing", "refused"})
UNITS = frozenset({"quantity", "hours"})
INVOICE_ACTIONS = frozenset({"duedate", "nextcron"})
CENT = Decimal("0.01")
_MESSAGE_LIMIT = 300  # characters of a receiver's own message passed on
REF_PATTERN = re.compile(r"[A-Za-z0-9:._-]{1,64}")  # API.md section 8


class ReceiverError(UpstreamError):
    """The billing receiver's answer, or the lack of one. As a plain ``ReceiverError`` (an unexpected
    3xx/4xx, a URL that cannot be used): nothing was written by the request, trying again will not help."""

    code = "receiver_failed"

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None) -> None:
        super().__init__(message, upstream=UPSTREAM, http_status=http_status, code=code)


class ReceiverUnknownOutcome(ReceiverError):
    """Nobody knows whether the items were created; sending the same items again is safe.

    ``reason``: ``"unreachable"`` (no attempt reached the receiver: nothing was created), ``"timeout"``
    (it did not answer in time), ``"dropped"`` (the connection broke), ``"failed"`` (5xx, garbage, or an
    answer that does not match the request).
    """

    code = "receiver_unknown_outcome"

    def __init__(self, message: str, *, reason: str, http_status: int | None = None) -> None:
        super().__init__(message, http_status=http_status)
        self.reason = reason


class ReceiverSignatureRefused(ReceiverError):
    """401: the receiver refused the backend's signature; nothing was written."""

    code = "receiver_auth_failed"


class ReceiverMissing(ReceiverError):
    """404: no receiver at that URL (the module files in WHMCS are older than the backend)."""

    code = "receiver_missing"


class ReceiverBadRequest(ReceiverError):
    """400: the receiver refused the body as a whole; nothing was written. The message is the receiver's."""

    code = "receiver_bad_request"


class ReceiverOutOfTime(OutOfTime):
    """Not even one whole attempt fitted the deadline: nothing was sent."""


class _Unclear(UpstreamTimeout):
    """An attempt whose outcome is unknown (5xx, garbage, mismatched items). An ``UpstreamTimeout`` with
    ``maybe_applied`` so that the retry engine remembers it as the ambiguous attempt."""

    def __init__(self, message: str, *, reason: str = "failed", http_status: int | None = None) -> None:
        super().__init__(message, upstream=UPSTREAM, maybe_applied=True)
        self.reason = reason
        self.http_status = http_status


@dataclass(frozen=True)
class ReceiverItem:
    """One billable item as the receiver takes it (API.md section 8 ITEM)."""

    ref: str
    client_id: int
    description: str
    amount: Decimal
    currency: str
    quantity: Decimal
    unit: str  # "quantity" | "hours" (the ledger Line's unit_mode)
    invoice_action: str  # "duedate" | "nextcron"
    due_date: str | None  # "YYYY-MM-DD"

    def to_json(self) -> dict[str, Any]:
        """The ITEM object: ``amount`` with exactly 2 places, ``quantity`` a plain decimal string. Raises
        ``ValueError`` for an item the receiver could only refuse (the caller's bug, never sent: a 400 would
        refuse the whole batch)."""
        if not isinstance(self.ref, str) or not REF_PATTERN.fullmatch(self.ref):
            raise ValueError("ref must be 1-64 characters of A-Z a-z 0-9 : . _ -")
        if self.unit not in UNITS:
            raise ValueError(f"unit must be 'quantity' or 'hours', not {self.unit!r}")
        if self.invoice_action not in INVOICE_ACTIONS:
            raise ValueError(f"invoice_action must be 'duedate' or 'nextcron', not {self.invoice_action!r}")
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite() or self.amount.quantize(CENT) != \
                self.amount:
            raise ValueError(f"item {self.ref}: amount must be a decimal with at most 2 places")
        if not isinstance(self.quantity, Decimal) or not self.quantity.is_finite():
            raise ValueError(f"item {self.ref}: quantity must be a finite decimal")
        item: dict[str, Any] = {
            "ref": self.ref, "clientid": int(self.client_id), "description": self.description,
            "amount": format(self.amount.quantize(CENT), "f"), "currency": self.currency,
            "quantity": _plain(_places(self.quantity)), "unit": self.unit, "invoiceaction": self.invoice_action,
        }
        if self.due_date is not None:
            item["duedate"] = self.due_date
        return item


@dataclass(frozen=True)
class ReceiverAnswer:
    """The receiver's answer for one item. ``billable_id`` is set for ``created``/``existing``; ``code`` of
    a refusal is ``client_not_found``, ``currency_mismatch`` (``currency``: the client's WHMCS currency)
    or ``rejected``."""

    ref: str
    status: str  # created | existing | refused
    billable_id: int | None
    message: str
    code: str
    currency: str | None


QUANTITY_PLACES = 10  # what billing.php accepts (WHMCS shows the quantity, it does not price it)


def _places(value: Decimal) -> Decimal:
    """A quantity with more than ``QUANTITY_PLACES`` decimals, rounded to them (the amount is exact)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -QUANTITY_PLACES:
        return value.quantize(Decimal(1).scaleb(-QUANTITY_PLACES), rounding=ROUND_HALF_UP)
    return value


def _plain(value: Decimal) -> str:
    """Decimal without exponent or trailing zeros: Decimal("1E+2") -> "100", Decimal("1.50") -> "1.5"."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _positive_int(value: Any) -> int | None:
    """A billableid: an int or a string of digits (PHP may send either), positive."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return (value if isinstance(value, str) else str(value))[:_MESSAGE_LIMIT]


def parse_answers(data: Any, refs: Sequence[str]) -> list[ReceiverAnswer]:
    """The checked answers of a 2xx body, or ``_Unclear`` naming what does not fit the request."""
    if not isinstance(data, dict):
        raise _Unclear("The WHMCS billing receiver answered with something that is not a JSON object.")
    if str(data.get("result", "")).lower() != "success":
        raise _Unclear("The WHMCS billing receiver answered without result=success.")
    raw = data.get("items")
    if not isinstance(raw, list):
        raise _Unclear("The WHMCS billing receiver answered without an items list.")
    if len(raw) != len(refs):
        raise _Unclear(f"The WHMCS billing receiver answered {len(raw)} items for the {len(refs)} sent.")
    answers: list[ReceiverAnswer] = []
    for i, (entry, ref) in enumerate(zip(raw, refs, strict=True)):
        if not isinstance(entry, dict) or entry.get("ref") != ref:
            raise _Unclear(f"The WHMCS billing receiver's answer {i + 1} is not for {ref} (the items do not "
                           "match the request).")
        status = entry.get("status")
        if status not in STATUSES:
            raise _Unclear(f"The WHMCS billing receiver's answer for {ref} has no valid status.")
        billable_id = _positive_int(entry.get("billableid"))
        if status != "refused" and billable_id is None:
            raise _Unclear(f"The WHMCS billing receiver answered {status} for {ref} without a billableid.")
        code = _text(entry.get("code")).strip()
        if status == "refused":
            billable_id = None
            code = code or "rejected"
        currency = _text(entry.get("currency")).strip().upper() or None
        answers.append(ReceiverAnswer(ref=ref, status=str(status), billable_id=billable_id,
                                      message=_text(entry.get("message")), code=code, currency=currency))
    return answers


class ReceiverClient(RetryingClient):
    """One receiver URL. Thread-safe (httpx.Client is); reuse one per execution environment.

    ``secrets`` is called at every attempt, so rotated ``SIGNING_SECRET`` values are followed; every
    active secret signs (``v1=<hex>,v1=<hex>``), any of them may match the server's Access Hash.
    """

    MAX_ITEMS = 100

    def __init__(self, url: str, secrets: Callable[[], Sequence[bytes]], *, timeout: float = 20.0,
                 connect_timeout: float = 5.0, pacer: Any = None, sleep: Callable[[float], object] = time.sleep,
                 transport: httpx.BaseTransport | None = None, max_retries: int = 2,
                 backoff: float = 0.25, now: Callable[[], float] = time.time) -> None:
        """``pacer``: a ``TokenBucket`` or ``SharedWindow`` (its waits drawn from the deadline), anything with
        ``acquire()``, or a plain callable, asked before every attempt. ``now``: the wall clock the timestamps
        come from."""
        self._url = url
        self._now = now
        self._secrets = secrets
        self._pacer = pacer
        policy = RetryPolicy(max_retries=max(0, max_retries), backoff=backoff, max_backoff=max(backoff, 2.0))
        dropped = "The connection to the WHMCS billing receiver broke before it answered."
        # Sends pass the gate below (a whole attempt must fit); a ping may be cut short (it creates nothing).
        self._retrier = Retrier(NAME, timeout=timeout, connect_timeout=connect_timeout, sleep=sleep,
                                pacer=self._whole_attempt_gate, policy=policy, dropped_message=dropped)
        self._ping_retrier = Retrier(NAME, timeout=timeout, connect_timeout=connect_timeout, sleep=sleep,
                                     pacer=self._pace_only, policy=policy, dropped_message=dropped)
        # each attempt bounded in total time, one TLS context per process (adapters.bounded)
        self._http = bounded.upstream_client(timeout, connect_timeout, transport)

    def __repr__(self) -> str:  # never the secrets
        return f"ReceiverClient({self._url!r})"

    @property
    def request_count(self) -> int:
        """HTTP attempts made so far (retries and pings included)."""
        return self._retrier.attempts + self._ping_retrier.attempts

    # ------------------------------------------------------------------ public

    def send(self, items: Sequence[ReceiverItem]) -> list[ReceiverAnswer]:
        """Send up to ``MAX_ITEMS`` items in one request; their answers in order (see the module docstring
        for the errors). The same body is sent by every attempt, each signed anew."""
        if len(items) > self.MAX_ITEMS:
            raise ValueError(f"at most {self.MAX_ITEMS} items per request, not {len(items)}")
        refs = [item.ref for item in items]
        body = self._body([item.to_json() for item in items])
        tries = [0]  # this send's own attempts (the retrier's counter is shared by every thread)
        try:
            answers = self._run(self._retrier, body, refs, whole=True, tries=tries)
        except DomainError as exc:
            logger.warning("billing receiver send failed", extra={
                "items": len(refs), "refs": refs, "error_type": type(exc).__name__,
                "http_status": getattr(exc, "http_status", None), "attempts": tries[0]})
            raise
        # ("created" is a LogRecord attribute: the counts are prefixed)
        counts = {f"items_{s}": sum(1 for a in answers if a.status == s) for s in sorted(STATUSES)}
        logger.info("billing receiver send", extra={"items": len(refs), **counts, "attempts": tries[0]})
        return answers

    def ping(self) -> None:
        """A signed empty list: checks the URL, the module files and the Access Hash. Same errors as
        ``send`` (nothing can be created)."""
        self._run(self._ping_retrier, self._body([]), [], whole=False)

    # ------------------------------------------------------------------ transport

    @staticmethod
    def _body(items: list[dict[str, Any]]) -> bytes:
        return json.dumps({"items": items}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _keys(self) -> list[bytes]:
        keys = [k for k in self._secrets() if k]
        if not keys:
            raise ConfigurationError("The backend is not configured: SIGNING_SECRET is not set (the billing "
                                     "receiver checks it against the ComputeStacks server's Access Hash).")
        return keys

    def _headers(self, body: bytes, keys: list[bytes]) -> dict[str, str]:
        ts = int(self._now())
        return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
                SIGNATURE_HEADER: ",".join(compute_signature(k, ts, ROUTE, body) for k in keys)}

    def _run(self, retrier: Retrier, body: bytes, refs: list[str], *, whole: bool,
             tries: list[int] | None = None) -> list[ReceiverAnswer]:
        first_keys = self._keys()

        def send(timeout: httpx.Timeout) -> httpx.Response:
            if tries is not None:
                tries[0] += 1
            # Re-read at every attempt (a rotation in between is followed), re-signed with a fresh timestamp.
            try:
                keys = [k for k in self._secrets() if k] or first_keys
            except Exception:  # a failed re-read: the secrets this request started with
                keys = first_keys
            return self._http.post(self._url, content=body, headers=self._headers(body, keys), timeout=timeout)

        try:
            return retrier.run(send, lambda response: self._interpret(response, refs, whole=whole),
                               resend=True, mutating=True)
        except ReceiverError:
            raise
        except RateLimited as exc:
            raise RateLimited(f"The WHMCS billing receiver is throttling our requests; retry in "
                              f"{math.ceil(exc.retry_after)} seconds.", upstream=UPSTREAM,
                              retry_after=exc.retry_after, http_status=exc.http_status) from exc
        except OutOfTime as exc:  # nothing was sent
            error = ReceiverOutOfTime(NAME)
            error.upstream = UPSTREAM
            raise error from exc
        except _Unclear as exc:
            raise ReceiverUnknownOutcome(exc.message, reason=exc.reason, http_status=exc.http_status) from exc
        except UpstreamUnreachable as exc:  # no attempt reached it (an unclear one would have been chosen)
            raise ReceiverUnknownOutcome("The WHMCS billing receiver could not be reached.",
                                         reason="unreachable") from exc
        except UpstreamTimeout as exc:  # read timeout or dropped connection after sending
            timed_out = isinstance(exc.__cause__, httpx.TimeoutException)
            message = "The WHMCS billing receiver did not answer in time." if timed_out else exc.message
            raise ReceiverUnknownOutcome(message, reason="timeout" if timed_out else "dropped") from exc
        except UpstreamError as exc:  # a URL httpx cannot use: nothing was sent
            raise ReceiverError(f"The WHMCS billing receiver could not be asked ({exc.message})") from exc

    def _whole_attempt_gate(self) -> None:
        """Before every attempt of a send: a whole attempt (connect + read timeout) must fit the deadline,
        so a send is never cut short into an unknown outcome by our own clock; then the caller's pacer."""
        limit = deadline.current()
        needed = self._retrier.attempt_seconds
        left = limit.remaining()
        if left < needed:
            raise PacingOutOfTime(needed, left, NAME)
        self._pace(left - needed)
        left = limit.remaining()
        if left < needed:  # the pacer made us wait
            raise PacingOutOfTime(needed, left, NAME)

    def _pace_only(self) -> None:
        self._pace(deadline.current().remaining())

    def _pace(self, within: float) -> None:
        pacer = self._pacer
        if pacer is None:
            return
        if isinstance(pacer, PACERS_WITH_DEADLINE):
            pacer.acquire(max_wait=within)
            return
        acquire = getattr(pacer, "acquire", None)
        if callable(acquire):
            acquire()
        elif callable(pacer):
            pacer()

    def _interpret(self, response: httpx.Response, refs: list[str], *, whole: bool) -> list[ReceiverAnswer]:
        status = response.status_code
        if status == 429:  # refused before anything ran
            delay = retry_after(response.headers)
            needed = self._retrier.attempt_seconds if whole else 0.0
            if delay + needed > deadline.current().remaining():
                raise Failure(RateLimited(
                    f"The WHMCS billing receiver is throttling our requests; it asked to retry in "
                    f"{math.ceil(delay)} seconds, more than this request has left.",
                    upstream=UPSTREAM, retry_after=delay), retryable=False)
            raise Throttled(delay)
        if status == 401:
            raise Failure(ReceiverSignatureRefused(
                "The WHMCS billing receiver refused the backend's signature; set the ComputeStacks server's "
                "Access Hash in WHMCS to one of the backend's SIGNING_SECRET values.", http_status=401),
                retryable=False)
        if status == 404:
            raise Failure(ReceiverMissing(
                "The WHMCS billing receiver is missing (HTTP 404): the module files in WHMCS are older than the "
                "backend (upload modules/servers/computestacks/billing.php), or WHMCS_RECEIVER_URL is wrong.",
                http_status=404), retryable=False)
        data = _json(response)
        if status == 400:
            said = _text(data.get("message")).strip().rstrip(".") if isinstance(data, dict) else ""
            raise Failure(ReceiverBadRequest(
                f"The WHMCS billing receiver refused the request: {said or 'HTTP 400 without a message'}.",
                http_status=400), retryable=False)
        if status >= 500 or status == 408:
            raise Failure(_Unclear(f"The WHMCS billing receiver failed with HTTP {status}.", http_status=status))
        if 300 <= status < 400:
            raise Failure(ReceiverError(
                f"The WHMCS billing receiver answered with a redirect (HTTP {status}); set WHMCS_RECEIVER_URL to "
                "the URL of billing.php itself (https:// when WHMCS redirects to it).", http_status=status),
                retryable=False)
        if not 200 <= status < 300:
            raise Failure(ReceiverError(f"The WHMCS billing receiver refused the request with HTTP {status}.",
                                        http_status=status), retryable=False)
        if data is None:
            raise Failure(_Unclear("The WHMCS billing receiver answered with something that is not JSON.",
                                   http_status=status))
        try:
            return parse_answers(data, refs)
        except _Unclear as unclear:
            unclear.http_status = status
            raise Failure(unclear) from None


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


__all__ = [
    "ROUTE", "ReceiverAnswer", "ReceiverBadRequest", "ReceiverClient", "ReceiverError", "ReceiverItem",
    "ReceiverMissing", "ReceiverOutOfTime", "ReceiverSignatureRefused", "ReceiverUnknownOutcome",
]
