"""ComputeStacks usage rows: parsing, times and periods.

A row (``GET /api/admin/users/:id/billing_usages``) is one metering interval of one subscription
product. Amounts arrive as numeric strings (or numbers); they become ``Decimal`` here and stay so.
ComputeStacks' own ``processed`` flag is deliberately not read: our ledger alone says what was billed.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cswhmcs.money import to_decimal

EPSILON = timedelta(microseconds=1)
NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)

# ComputeStacks lists usage newest ``created_at`` first. A row's place in that order is its key:
# (created_at, id); ids alone break ties. Keys are stored as ``[iso, id]``.
RowKey = tuple[datetime, int]
ZERO_KEY: RowKey = (NO_TIME, 0)


def key_to_json(key: RowKey) -> list[Any]:
    return [iso(key[0]), key[1]]


def key_from_json(value: Any) -> RowKey:
    if isinstance(value, list | tuple) and len(value) == 2:
        return parse_time(value[0]), int(value[1])
    return NO_TIME, int(value or 0)  # a bare id: ordering by id only


@dataclass(frozen=True, slots=True)
class UsageRow:
    id: int
    sp_id: int  # subscription_product id: rows of one subscription product are created in id order
    product_id: int
    product_name: str
    product_label: str
    period_start: datetime
    period_end: datetime
    total: Decimal
    qty: Decimal
    created_at: datetime = NO_TIME

    @property
    def key(self) -> RowKey:
        return self.created_at, self.id


def parse_time(value: Any) -> datetime:
    """An aware UTC datetime from ``"2026-10-31T21:20:00.000Z"``, ``"2018-08-01 16:59:59 UTC"``,
    an ISO string with an offset, or a datetime (naive means UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(" UTC"):
            text = text[:-4].strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"Not a time: {value[:40]!r}.") from None
    else:
        raise ValueError("A time is missing.")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime) -> str:
    """``2026-10-31T23:00:00Z`` (microseconds kept only when present)."""
    dt = dt.astimezone(UTC)
    spec = "microseconds" if dt.microsecond else "seconds"
    return dt.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _int(value: Any, default: int = 0) -> int:
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(to_decimal(value))
    except ValueError:
        return default


def parse_row(raw: Mapping[str, Any]) -> UsageRow:
    """One row of the billing_usages list. Raises ValueError on a row that cannot be billed safely
    (no id, no end time, a total that is not a number): better to stop than to guess with money."""
    row_id = _int(raw.get("id"), -1)
    if row_id < 0:
        raise ValueError("A usage row has no id.")
    sp = raw.get("subscription_product")
    sp = sp if isinstance(sp, Mapping) else {}
    product = sp.get("product")
    product = product if isinstance(product, Mapping) else {}
    name = str(product.get("name") or "").strip()
    label = str(product.get("label") or "").strip()
    end = parse_time(raw.get("period_end"))
    start_raw = raw.get("period_start")
    start = parse_time(start_raw) if start_raw not in (None, "") else end
    created_raw = raw.get("created_at")
    created = parse_time(created_raw) if created_raw not in (None, "") else NO_TIME
    return UsageRow(
        id=row_id,
        sp_id=_int(sp.get("id") if sp else raw.get("subscription_product_id"), 0),
        product_id=_int(product.get("id") if product else raw.get("product_id"), 0),
        product_name=name or label or "usage",
        product_label=label or name or "Usage",
        period_start=start,
        period_end=end,
        total=to_decimal(raw.get("total")),
        qty=to_decimal(raw.get("qty")),
        created_at=created,
    )


# ---------------------------------------------------------------------- periods


def period_of(as_of: datetime, timezone: str = "") -> str:
    """The billing period that ends at ``as_of``: the month of the instant just before it, in UTC or in
    ``timezone`` (the month-end schedule's zone: 23:00 on 31 October in New York is 03:00 UTC on
    1 November, and closes October).

    ``2026-10-31T23:00Z`` and ``2026-11-01T00:00Z`` both close ``2026-10``.
    """
    zone = zone_or_none(timezone)
    t = (as_of - EPSILON).astimezone(zone or UTC)
    return f"{t.year:04d}-{t.month:02d}"


UTC_NAMES = frozenset({"UTC", "Z", "ETC/UTC"})


def is_utc(name: str | None) -> bool:
    """Whether ``name`` means UTC: empty or one of its names."""
    return not name or name.strip().upper() in UTC_NAMES


def zone_or_none(name: str | None) -> ZoneInfo | None:
    """The IANA zone ``name``; None for "", "UTC" or a name this system does not know."""
    if name is None or is_utc(name):
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None


def next_month(period: str) -> tuple[int, int]:
    year, month = (int(p) for p in period.split("-"))
    return (year + 1, 1) if month == 12 else (year, month + 1)


def due_date(period: str, due_day: int) -> date:
    """Day ``due_day`` of the month after ``period`` (clamped to that month's length)."""
    year, month = next_month(period)
    return date(year, month, min(max(1, due_day), calendar.monthrange(year, month)[1]))


# Buckets of collected usage are aligned to the month-end cut-off hour (23:00 UTC by default), so
# that "every bucket that ended by the cut-off" is exactly "every row that ended by the cut-off"
# even when a month-end run is late and the next daily collection got there first.
BUCKET_CUT = timedelta(hours=23)


def bucket_key(period_end: datetime) -> str:
    """The bucket (a day running from 23:00 to 23:00 UTC, named by its start date) of a row's end."""
    return (period_end.astimezone(UTC) - BUCKET_CUT - EPSILON).date().isoformat()


def unit_mode_for(version: str | None) -> str:
    """``quantity`` for WHMCS 8.2 and later; ``hours`` before it or when the version is unknown."""
    if not version:
        return "hours"
    parts: list[int] = []
    for piece in version.strip().split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            return "hours"
        parts.append(int(digits))
    while len(parts) < 2:
        parts.append(0)
    return "quantity" if (parts[0], parts[1]) >= (8, 2) else "hours"
