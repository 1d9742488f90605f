"""The only module that knows DynamoDB for accounts, replay protection and order credits.

Billing keeps its own records in ``cswhmcs.billing.ledger`` (same LedgerTable, its own key prefixes).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from cswhmcs import deadline
from cswhmcs.config import Settings
from cswhmcs.errors import Unauthorized

# Billing (planner, worker: minutes of Lambda time): patient, 5 attempts of up to 10 s each.
_BOTO_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 4, "mode": "standard"})
# API routes answer within 25 s whatever happens (API.md section 2), DynamoDB included: 2 attempts at
# most, 0.5 s to connect (milliseconds inside a region), 3 s to answer (DynamoDB answers in milliseconds;
# a busy DynamoDB Local in tests within a second), and each attempt's read timeout cut to the request's
# deadline (``_fit_to_deadline``). One call then takes at most ~8 s without a deadline.
API_READ_TIMEOUT = 3.0
API_BOTO_CONFIG = Config(connect_timeout=0.5, read_timeout=API_READ_TIMEOUT,
                         retries={"total_max_attempts": 2, "mode": "standard"})
# The upstream deadline of a route (``deadline.current()``) keeps ``ANSWER_RESERVE_SECONDS`` (2 s) for
# what follows the last upstream answer; DynamoDB attempts may use this much of it. What is left covers
# a new connection (0.5 s) and one retry backoff of standard mode (< 1 s) before the refusal.
STORAGE_GRACE_SECONDS = 0.5
MIN_STORAGE_ATTEMPT_SECONDS = 0.1


class StorageTimeout(Exception):
    """DynamoDB did not answer within the request's time (raised before an attempt that could not fit;
    nothing more was sent). ``storage_failure`` also recognises botocore's own timeouts."""

    def __init__(self) -> None:
        super().__init__("DynamoDB did not answer within the request's time.")


def dynamodb_resource(settings: Settings, *, for_api: bool = False) -> Any:
    """The DynamoDB resource; ``for_api``: with the API routes' short timeouts, every attempt inside the
    current deadline (``cswhmcs.deadline``). Without it: billing's patient ones."""
    kwargs: dict[str, Any] = {"config": API_BOTO_CONFIG if for_api else _BOTO_CONFIG}
    if settings.AWS_ENDPOINT_URL_DYNAMODB:
        kwargs["endpoint_url"] = settings.AWS_ENDPOINT_URL_DYNAMODB
    resource = boto3.resource("dynamodb", **kwargs)
    if for_api:
        resource.meta.client.meta.events.register("before-send.dynamodb", _fit_to_deadline)
    return resource


def _fit_to_deadline(request: Any, **_: Any) -> None:
    """Before each attempt (retries included): none starts once the request's time is over, and its
    read timeout is cut to what is left (botocore honours ``read_timeout`` in the request context per
    request; an older botocore ignores it and the client's 3 s apply)."""
    left = deadline.current().remaining()
    if left == math.inf:
        return
    left += STORAGE_GRACE_SECONDS
    if left < MIN_STORAGE_ATTEMPT_SECONDS:
        raise StorageTimeout()
    context = getattr(request, "context", None)
    if isinstance(context, dict):
        context["read_timeout"] = min(API_READ_TIMEOUT, left)


def storage_failure(exc: BaseException) -> str | None:
    """The sentence for the caller when ``exc`` is DynamoDB (or another AWS API) not answering in time
    or not reachable; None for anything else. Names no secret (nor the endpoint)."""
    if isinstance(exc, StorageTimeout | ReadTimeoutError | ConnectTimeoutError | ConnectionClosedError):
        return "The backend's database (DynamoDB) did not answer in time; try again shortly."
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return "The backend's database (DynamoDB) could not be reached; try again shortly."
    return None


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class AccountMapping:
    """One WHMCS service <-> one ComputeStacks user."""

    service_id: int
    cs_user_id: int
    email: str
    client_id: int | None = None
    currency: str | None = None
    created_at: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> AccountMapping:
        client = item.get("client_id")
        return cls(
            service_id=int(item["service_id"]),
            cs_user_id=int(item["cs_user_id"]),
            email=str(item.get("email", "")),
            client_id=int(client) if client is not None else None,
            currency=item.get("currency"),
            created_at=item.get("created_at"),
        )

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "service_id": self.service_id,
            "cs_user_id": self.cs_user_id,
            "email": self.email,
            "created_at": self.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if self.client_id is not None:
            item["client_id"] = self.client_id
        if self.currency:
            item["currency"] = self.currency
        return item


class AccountsRepo:
    def __init__(self, table: Any) -> None:
        self.table = table

    @classmethod
    def from_settings(cls, settings: Settings, resource: Any | None = None) -> AccountsRepo:
        return cls((resource or dynamodb_resource(settings)).Table(settings.ACCOUNTS_TABLE))

    def get(self, service_id: int) -> AccountMapping | None:
        item = self.table.get_item(Key={"service_id": service_id}, ConsistentRead=True).get("Item")
        return AccountMapping.from_item(item) if item else None

    def put(self, mapping: AccountMapping) -> AccountMapping:
        """Store a mapping. An existing mapping of the same service to the same user is kept as it is;
        to another user it is replaced only through ``relink`` (never silently)."""
        try:
            self.table.put_item(
                Item=mapping.to_item(),
                ConditionExpression=Attr("service_id").not_exists() | Attr("cs_user_id").eq(mapping.cs_user_id),
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            existing = self.get(mapping.service_id)
            if existing is not None:
                return existing
            raise
        return mapping

    def update_fields(self, service_id: int, /, **fields: Any) -> None:
        names = {f"#{k}": k for k in fields}
        values = {f":{k}": v for k, v in fields.items()}
        self.table.update_item(
            Key={"service_id": service_id},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in fields),
            ConditionExpression=Attr("service_id").exists(),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def scan_pages(self, *, page_size: int = 1000, segment: int = 0, total_segments: int = 1
                   ) -> Iterator[list[AccountMapping]]:
        """Every mapping, one page at a time (never all in memory)."""
        kwargs: dict[str, Any] = {"Limit": page_size}
        if total_segments > 1:
            kwargs.update(Segment=segment, TotalSegments=total_segments)
        while True:
            page = self.table.scan(**kwargs)
            items = page.get("Items", [])
            if items:
                yield [AccountMapping.from_item(i) for i in items]
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last


class ReplayGuard:
    """Remembers accepted signatures for the freshness window: a replay is refused."""

    def __init__(self, table: Any, ttl_seconds: int = 900) -> None:
        self.table = table
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Settings, resource: Any | None = None) -> ReplayGuard:
        return cls((resource or dynamodb_resource(settings)).Table(settings.REPLAY_TABLE),
                   ttl_seconds=settings.SIGNATURE_TOLERANCE * 2 + 60)

    def accept(self, signature_hex: str, route: str) -> None:
        now = int(time.time())
        try:
            self.table.put_item(
                Item={"id": f"sig#{signature_hex}", "route": route, "expiration": now + self.ttl_seconds},
                # TTL deletion lags, so an expired record does not count as a replay.
                ConditionExpression=Attr("id").not_exists() | Attr("expiration").lt(now),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise Unauthorized("This request was already received (replay); sign each request anew.",
                                   code="signature_replayed") from None
            raise


@dataclass
class OrderCredit:
    order_id: int
    status: str  # "pending" (intent written, AddCredit not known to be done), "done", "ambiguous"
    amount: Decimal
    currency: str
    client_id: int
    invoice_id: int
    lease_until: int = 0  # a "pending" claim's lease; 0: released after a definite failure (nothing credited)


@dataclass(frozen=True)
class OpenOrder:
    """An order whose credit is not settled: what the sweep delivers again."""

    order_id: int
    body: dict[str, Any]  # the hook's body, as validated
    status: str  # "open", "pending" or "ambiguous"
    opened_at: int  # Unix time it was first kept open (since it was last settled)
    last_error: str


class OrderCreditRecords:
    """Exactly-once record per order in the LedgerTable (money: never expires).

    Until an order's credit is settled its item carries the hook's body, the time it was first kept open
    (``opened_at``) and sits in the sparse index ``gsi1`` under ``credit-open``: the daily sweep
    (``cswhmcs.credit.retry_open_credits``) delivers it again, so a deposit is never lost to a failure
    the WHMCS hook will not repeat. Settled: ``done`` (credited), ``nothing`` (nothing creditable when
    last checked) and ``refused`` (WHMCS said the request's invoice or client does not exist). Only
    ``done`` is final: a later delivery checks ``nothing`` and ``refused`` orders again.
    """

    OPEN = "credit-open"
    SETTLED = ("done", "nothing", "refused")
    # A claim may take these over: nothing was sent (open, nothing, refused) or WHMCS is asked first.
    CLAIMABLE = ("ambiguous", "open", "nothing", "refused")

    def __init__(self, table: Any) -> None:
        self.table = table

    @classmethod
    def from_settings(cls, settings: Settings, resource: Any | None = None) -> OrderCreditRecords:
        return cls((resource or dynamodb_resource(settings)).Table(settings.LEDGER_TABLE))

    @staticmethod
    def _key(order_id: int) -> dict[str, str]:
        return {"pk": f"order#{order_id}", "sk": "credit"}

    def get(self, order_id: int) -> OrderCredit | None:
        item = self.table.get_item(Key=self._key(order_id), ConsistentRead=True).get("Item")
        if not item:
            return None
        return OrderCredit(order_id=order_id, status=str(item["status"]),
                           amount=Decimal(str(item.get("amount", "0"))), currency=str(item.get("currency", "")),
                           client_id=int(item.get("client_id", 0)), invoice_id=int(item.get("invoice_id", 0)),
                           lease_until=int(item.get("lease_until", 0)))

    def _open_fields(self, order_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"params": json.dumps(body, default=str, sort_keys=True), "gsi1pk": self.OPEN,
                "gsi1sk": f"{order_id:012d}"}

    def _update(self, order_id: int, fields: dict[str, Any], condition: Any, *,
                keep_first: dict[str, Any] | None = None, remove: tuple[str, ...] = ()) -> bool:
        """SET ``fields`` (and each of ``keep_first`` unless already set) when ``condition`` holds."""
        keep_first = keep_first or {}
        sets = [f"#{k} = :{k}" for k in fields] + [f"#{k} = if_not_exists(#{k}, :{k})" for k in keep_first]
        names = {f"#{k}": k for k in (*fields, *keep_first, *remove)}
        try:
            self.table.update_item(
                Key=self._key(order_id),
                UpdateExpression="SET " + ", ".join(sets) + (" REMOVE " + ", ".join(f"#{k}" for k in remove)
                                                            if remove else ""),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":{k}": v for k, v in {**fields, **keep_first}.items()},
            )
            return True
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise

    def claim(self, credit: OrderCredit, body: dict[str, Any], lease_seconds: int = 60, *,
              fresh: bool = False) -> bool:
        """Write the intent. True when this caller owns the order's credit now.

        An "open" record (an earlier delivery failed before claiming), a "pending" claim older than the
        lease (a crash between claim and AddCredit), an "ambiguous" one (AddCredit timed out), or one
        settled as "nothing"/"refused" (checked again now) may be taken over; the new owner checks WHMCS
        GetCredits before sending anything. ``fresh``: the caller found no record when it started, so it will
        not ask GetCredits: it may take over only a record no claim ever touched ("open"), never one that a
        concurrent delivery claimed meanwhile (and whose AddCredit may have arrived).
        """
        now = int(time.time())
        takeover = Attr("status").eq("open") if fresh else (
            (Attr("status").eq("pending") & Attr("lease_until").lt(now)) | Attr("status").is_in(list(self.CLAIMABLE)))
        return self._update(
            credit.order_id,
            {"status": "pending", "amount": str(credit.amount), "currency": credit.currency,
             "client_id": credit.client_id, "invoice_id": credit.invoice_id, "lease_until": now + lease_seconds,
             "updated_at": datetime.now(UTC).isoformat(timespec="seconds"), **self._open_fields(credit.order_id, body)},
            Attr("pk").not_exists() | takeover,
            keep_first={"opened_at": now},
            remove=("note", "last_error"),  # an earlier outcome's words no longer describe this record
        )

    def forget(self, order_id: int) -> bool:
        """Delete a record that is only "open" (kept by a first delivery before it asked WHMCS, which then
        found nothing to credit): an order that needs nothing leaves nothing behind. False when it is more."""
        try:
            self.table.delete_item(Key=self._key(order_id), ConditionExpression=Attr("status").eq("open"))
            return True
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise

    def remember_open(self, order_id: int, body: dict[str, Any], reason: str) -> None:
        """A delivery failed (WHMCS unreachable, 5xx...): keep the order for the sweep, unless settled."""
        now = int(time.time())
        self._update(
            order_id,
            {**self._open_fields(order_id, body), "last_error": reason[:500],
             "updated_at": datetime.now(UTC).isoformat(timespec="seconds")},
            Attr("pk").not_exists() | ~Attr("status").is_in(list(self.SETTLED)),
            keep_first={"status": "open", "opened_at": now},
        )

    def mark(self, order_id: int, status: str, **extra: Any) -> None:
        fields = {"status": status, "updated_at": datetime.now(UTC).isoformat(timespec="seconds"), **extra}
        settled = status in self.SETTLED
        self._update(order_id, fields, Attr("pk").exists(),
                     remove=("gsi1pk", "gsi1sk", "opened_at") if settled else ())

    def settle(self, order_id: int, status: str, **extra: Any) -> bool:
        """Settle an existing record as ``nothing`` or ``refused``, never over ``done`` (a concurrent delivery
        may have credited it meanwhile). False when there is no record or it is done."""
        if status not in ("nothing", "refused"):
            raise ValueError(f"settle() is for nothing/refused, not {status!r}")
        fields = {"status": status, "updated_at": datetime.now(UTC).isoformat(timespec="seconds"), **extra}
        return self._update(order_id, fields, Attr("pk").exists() & Attr("status").ne("done"),
                            remove=("gsi1pk", "gsi1sk", "opened_at"))

    def open_orders(self) -> Iterator[OpenOrder]:
        """Every order not settled yet, oldest order first."""
        kwargs: dict[str, Any] = {"IndexName": "gsi1", "KeyConditionExpression": Key("gsi1pk").eq(self.OPEN)}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                yield OpenOrder(order_id=int(item["gsi1sk"]), body=json.loads(item["params"]),
                                status=str(item.get("status", "")), opened_at=self._opened_at(item),
                                last_error=str(item.get("last_error", "")))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _opened_at(item: dict[str, Any]) -> int:
        if "opened_at" in item:
            return int(item["opened_at"])
        try:  # a record kept open before opened_at existed: its last change is the best we know
            return int(datetime.fromisoformat(str(item.get("updated_at"))).timestamp())
        except ValueError:
            return 0
