"""The pure core of billing: per-account state, absorbing usage rows, grouping them into lines.

No I/O here. ``ledger.py`` stores an ``AccountState`` as one item; ``worker.py`` drives the steps:

1. ``absorb``: rows read from ComputeStacks (newest first, down to the account's ``scan_floor``) are
   added once each to running totals, in *buckets* per (product, day). A row is absorbed only when it
   ended at or before the run's as-of; within one subscription product rows are absorbed strictly in
   listing order (key = (created_at, id)), so "everything of this subscription product up to key K"
   (``sp_marks``) describes exactly what was absorbed. Rows that ended before ``BILLING_START`` are
   passed over for good. The floor (below which nothing is read again) trails the as-of by a settling
   margin, so a row committed late by ComputeStacks is still found; the marks keep it from counting twice.
2. ``candidates``: per product, the buckets whose rows all ended by the as-of, summed exactly.
3. ``claim``: a candidate becomes a ``Line`` (the ledger's "intent"), taking its buckets out of the
   running totals; or, under 0.01, it stays (carried over to the next run). A product that already
   has a line for the period keeps its eligible buckets for the next period's line (``held``: reported).

Invariant (tested with Hypothesis): every absorbed row is counted in exactly one place, a bucket or a
line, so the exact sums of buckets + lines equal the exact sum of rows absorbed, and a row can only
ever be absorbed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cswhmcs.billing.usage import (
    EPSILON,
    ZERO_KEY,
    RowKey,
    UsageRow,
    bucket_key,
    iso,
    key_from_json,
    key_to_json,
    parse_time,
)

ZERO = Decimal(0)
# Rows created this close to the as-of may still be joined by rows ComputeStacks commits late: the
# scan floor stays behind them (they are read again next time; the marks skip what was absorbed).
SETTLE = timedelta(hours=1)

# Line statuses. planned: claimed, not sent (safe to send). sending: about to be / being sent (if the
# worker dies here nobody knows whether WHMCS created it). done: WHMCS gave a billableid.
# attention: may or may not exist in WHMCS (or failed for good); never re-sent automatically.
PLANNED, SENDING, DONE, ATTENTION = "planned", "sending", "done", "attention"


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass
class Bucket:
    """Running totals of one product's rows whose end falls in one bucket day."""

    product_id: int
    key: str
    total: Decimal = ZERO
    qty: Decimal = ZERO
    rows: int = 0
    first_start: datetime | None = None
    last_end: datetime | None = None
    min_id: int = 0
    max_id: int = 0

    def add(self, row: UsageRow) -> None:
        self.total += row.total
        self.qty += row.qty
        self.rows += 1
        self.first_start = row.period_start if self.first_start is None else min(self.first_start, row.period_start)
        self.last_end = row.period_end if self.last_end is None else max(self.last_end, row.period_end)
        self.min_id = row.id if not self.min_id else min(self.min_id, row.id)
        self.max_id = max(self.max_id, row.id)

    def merge(self, other: Bucket) -> None:
        self.total += other.total
        self.qty += other.qty
        self.rows += other.rows
        starts = [t for t in (self.first_start, other.first_start) if t is not None]
        ends = [t for t in (self.last_end, other.last_end) if t is not None]
        self.first_start = min(starts) if starts else None
        self.last_end = max(ends) if ends else None
        ids = [i for i in (self.min_id, other.min_id) if i]
        self.min_id = min(ids) if ids else 0
        self.max_id = max(self.max_id, other.max_id)

    def to_dict(self) -> dict[str, Any]:
        return {"p": self.product_id, "k": self.key, "t": str(self.total), "q": str(self.qty), "n": self.rows,
                "s": iso(self.first_start) if self.first_start else None,
                "e": iso(self.last_end) if self.last_end else None, "lo": self.min_id, "hi": self.max_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bucket:
        return cls(product_id=int(d["p"]), key=str(d["k"]), total=_dec(d["t"]), qty=_dec(d["q"]), rows=int(d["n"]),
                   first_start=parse_time(d["s"]) if d.get("s") else None,
                   last_end=parse_time(d["e"]) if d.get("e") else None,
                   min_id=int(d.get("lo", 0)), max_id=int(d.get("hi", 0)))

    def copy(self) -> Bucket:
        return Bucket.from_dict(self.to_dict())


@dataclass
class Line:
    """One WHMCS billable item: (account, product, period). Everything needed to send it is fixed
    when it is claimed, so a re-send (after a definite failure) sends exactly the same item."""

    period: str
    product_id: int
    product_name: str
    description: str
    amount: Decimal  # what WHMCS gets, in the client's currency, 2 places
    currency: str  # the WHMCS client's currency code
    source_total: Decimal  # exact sum of the rows' totals, in the ComputeStacks user's currency
    source_currency: str
    rate: Decimal  # source -> client factor (1 when no conversion)
    quantity: Decimal
    unit_mode: str
    invoice_action: str
    due_date: str  # YYYY-MM-DD
    client_id: int
    service_id: int
    cs_user_id: int
    email: str
    rows: int
    first_start: str
    last_end: str
    buckets: list[dict[str, Any]] = field(default_factory=list)  # what it covers (audit)
    status: str = PLANNED
    attempts: int = 0
    run_id: str = ""
    created_at: str = ""
    sending_at: str = ""
    token: str = ""
    last_error: str = ""
    billable_id: int | None = None
    reason: str = ""
    # "receiver": this line may have reached the billing receiver (API.md section 8), so it is only ever
    # sent again with the same ref through it (never through AddBillableItem, which has no ref). Set when
    # it is marked sending on that path; cleared when the receiver answered that it created nothing.
    # Items stored before the field existed read as "".
    via: str = ""

    @property
    def key(self) -> str:
        return line_key(self.period, self.product_id)

    @property
    def ref(self) -> str:
        return line_ref(self.cs_user_id, self.period, self.product_id)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("amount", "source_total", "rate", "quantity"):
            d[k] = str(d[k])
        return d

    def copy(self) -> Line:
        return Line.from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Line:
        data = dict(d)
        for k in ("amount", "source_total", "rate", "quantity"):
            data[k] = _dec(data[k])
        for k in ("product_id", "client_id", "service_id", "cs_user_id", "rows", "attempts"):
            data[k] = int(data[k])
        if data.get("billable_id") is not None:
            data["billable_id"] = int(data["billable_id"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def line_key(period: str, product_id: int) -> str:
    return f"{period}#p{product_id}"


def line_ref(cs_user_id: int, period: str, product_id: int) -> str:
    """What operators see and type: ``<cs user id>:<period>:<product id>``, e.g. ``12:2026-10:3``."""
    return f"{cs_user_id}:{period}:{product_id}"


def parse_ref(ref: str) -> tuple[int, str, int]:
    try:
        user, period, product = ref.strip().split(":")
        year, month = period.split("-")
        if len(year) != 4 or not 1 <= int(month) <= 12:
            raise ValueError
        return int(user), f"{int(year):04d}-{int(month):02d}", int(product)
    except ValueError:
        raise ValueError(f"Not a line reference (expected <cs user id>:<YYYY-MM>:<product id>): {ref!r}.") from None


@dataclass
class AccountState:
    cs_user_id: int
    version: int = 0
    scan_floor: RowKey = ZERO_KEY  # every row with a key <= scan_floor is absorbed or passed over for good
    sp_marks: dict[int, RowKey] = field(default_factory=dict)  # sp -> last key absorbed (only > scan_floor)
    buckets: dict[tuple[int, str], Bucket] = field(default_factory=dict)
    products: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, label)
    last_period: dict[int, str] = field(default_factory=dict)  # product -> last period with a line
    lines: dict[str, Line] = field(default_factory=dict)  # open lines: planned or sending
    absorbed_upto: datetime | None = None  # the latest as-of this account was read for
    cs_currency: str | None = None
    cs_currency_at: datetime | None = None
    rows_absorbed: int = 0  # lifetime counters (audit)
    rows_passed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "u": self.cs_user_id, "floor": key_to_json(self.scan_floor),
            "marks": {str(k): key_to_json(v) for k, v in sorted(self.sp_marks.items())},
            "buckets": [b.to_dict() for _, b in sorted(self.buckets.items())],
            "products": {str(k): [n, lbl] for k, (n, lbl) in sorted(self.products.items())},
            "last": {str(k): v for k, v in sorted(self.last_period.items())},
            "lines": {k: ln.to_dict() for k, ln in sorted(self.lines.items())},
            "upto": iso(self.absorbed_upto) if self.absorbed_upto else None,
            "cur": self.cs_currency, "cur_at": iso(self.cs_currency_at) if self.cs_currency_at else None,
            "n_abs": self.rows_absorbed, "n_pass": self.rows_passed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, version: int = 0) -> AccountState:
        buckets = [Bucket.from_dict(b) for b in d.get("buckets", [])]
        return cls(
            cs_user_id=int(d["u"]), version=version, scan_floor=key_from_json(d.get("floor", 0)),
            sp_marks={int(k): key_from_json(v) for k, v in d.get("marks", {}).items()},
            buckets={(b.product_id, b.key): b for b in buckets},
            products={int(k): (str(v[0]), str(v[1])) for k, v in d.get("products", {}).items()},
            last_period={int(k): str(v) for k, v in d.get("last", {}).items()},
            lines={k: Line.from_dict(v) for k, v in d.get("lines", {}).items()},
            absorbed_upto=parse_time(d["upto"]) if d.get("upto") else None,
            cs_currency=d.get("cur"), cs_currency_at=parse_time(d["cur_at"]) if d.get("cur_at") else None,
            rows_absorbed=int(d.get("n_abs", 0)), rows_passed=int(d.get("n_pass", 0)),
        )

    def copy(self) -> AccountState:
        return AccountState.from_dict(self.to_dict(), version=self.version)

    def pending_total(self, product_id: int | None = None) -> Decimal:
        return sum((b.total for (p, _), b in self.buckets.items() if product_id is None or p == product_id), ZERO)

    def pending_rows(self) -> int:
        return sum(b.rows for b in self.buckets.values())


@dataclass
class Absorption:
    absorbed: list[UsageRow] = field(default_factory=list)
    passed: list[UsageRow] = field(default_factory=list)  # ended before BILLING_START: never billed
    deferred: list[UsageRow] = field(default_factory=list)  # not (yet) eligible: a later run takes them
    seen: int = 0


def needs_rows(state: AccountState, as_of: datetime) -> bool:
    """False when this account was already read for this as-of or a later one (a duplicate message,
    a retried trigger, a second run): the run can go on without asking ComputeStacks again."""
    return state.absorbed_upto is None or state.absorbed_upto < as_of


def absorb(state: AccountState, rows: Iterable[UsageRow], *, as_of: datetime,
           billing_start: datetime | None, settle: timedelta = SETTLE) -> Absorption:
    """Add the rows not absorbed before, that ended at or before ``as_of``, to the running totals.

    ``rows`` are what ComputeStacks listed above ``state.scan_floor`` (any order, duplicates allowed:
    offset pagination repeats rows when new ones arrive meanwhile). Mutates ``state``.
    """
    result = Absorption()
    by_sp: dict[int, dict[RowKey, UsageRow]] = {}
    listed: set[RowKey] = set()
    for row in rows:
        result.seen += 1
        if row.key <= state.scan_floor:
            continue
        listed.add(row.key)
        if row.key <= state.sp_marks.get(row.sp_id, ZERO_KEY):
            continue  # absorbed by an earlier run
        by_sp.setdefault(row.sp_id, {})[row.key] = row

    lowest_deferred: RowKey | None = None
    for sp_id, rows_by_key in by_sp.items():
        ordered = [rows_by_key[k] for k in sorted(rows_by_key)]
        for index, row in enumerate(ordered):
            if row.period_end > as_of:
                # Not ended yet (for this run): it and every later row of this subscription product wait,
                # so that sp_marks keeps meaning "everything up to here".
                result.deferred.extend(ordered[index:])
                lowest_deferred = row.key if lowest_deferred is None else min(lowest_deferred, row.key)
                break
            if billing_start is not None and row.period_end < billing_start:
                result.passed.append(row)
            else:
                _add(state, row)
                result.absorbed.append(row)
            state.sp_marks[sp_id] = row.key

    # The new floor: the highest listed key below every deferred row and older than the settling margin.
    # Everything listed at or below it has been absorbed or passed over, now or before.
    settled = as_of - settle
    below = [k for k in listed if (lowest_deferred is None or k < lowest_deferred) and k[0] <= settled]
    if below:
        state.scan_floor = max(state.scan_floor, max(below))
    # A mark at or below the floor says nothing the floor does not: drop it (keeps the item small).
    state.sp_marks = {sp: m for sp, m in state.sp_marks.items() if m > state.scan_floor}
    if state.absorbed_upto is None or as_of > state.absorbed_upto:
        state.absorbed_upto = as_of
    state.rows_absorbed += len(result.absorbed)
    state.rows_passed += len(result.passed)
    return result


# ComputeStacks' CollectUsageWorker writes each active subscription product's row every 3 hours (at :20;
# reference computestacks-api.md section 4), covering the time up to that collection.
COLLECT_INTERVAL = timedelta(hours=3)


def complete_for(rows: Iterable[UsageRow], *, as_of: datetime, read_at: datetime, history_from: datetime | None,
                 interval: timedelta = COLLECT_INTERVAL) -> bool:
    """Whether rows listed at ``read_at`` hold every row that will ever end at or before ``as_of``
    (docs/billing.md section 3b), judged from the rows' own periods:

    * a read at or after the as-of is complete by definition (as every month-end read always was);
    * the listing must reach back two collection intervals (``history_from``: the time of the scan floor it
      stopped at; None: it reached the account's beginning), or a subscription product whose latest rows lie
      below the floor could not be seen at all;
    * every subscription product whose newest listed row ended within the two intervals before the read
      must have a row that ended after ``as_of - interval``: its next row (one interval later) then ends after
      the as-of and belongs to the next period. One whose newest row ended earlier in that span is still due a
      row that may end before the as-of (ComputeStacks has not committed it yet): not complete. One whose rows
      stopped longer ago is no longer running.

    A row that still turns up with an end before the as-of (a subscription stopped between two collections
    and written late) is found by the next read and billed in the next period: never lost, never twice.
    """
    if read_at >= as_of:
        return True
    horizon = read_at - 2 * interval
    if history_from is not None and history_from > horizon:
        return False
    newest: dict[int, datetime] = {}
    for row in rows:
        if row.sp_id not in newest or row.period_end > newest[row.sp_id]:
            newest[row.sp_id] = row.period_end
    due = as_of - interval
    return not any(horizon < end <= due for end in newest.values())


def _add(state: AccountState, row: UsageRow) -> None:
    key = (row.product_id, bucket_key(row.period_end))
    bucket = state.buckets.get(key)
    if bucket is None:
        bucket = state.buckets[key] = Bucket(row.product_id, key[1])
    bucket.add(row)
    state.products[row.product_id] = (row.product_name, row.product_label)


@dataclass
class Candidate:
    """What one product would bill for a period: the exact sums of its eligible buckets."""

    product_id: int
    product_name: str
    product_label: str
    buckets: list[Bucket]
    total: Decimal
    qty: Decimal
    rows: int
    first_start: datetime
    last_end: datetime


def candidates(state: AccountState, *, as_of: datetime, period: str) -> list[Candidate]:
    """Per product with no line for ``period`` yet: the buckets whose rows all ended by ``as_of``."""
    return _eligible(state, as_of=as_of, period=period, billed=False)


def held(state: AccountState, *, as_of: datetime, period: str) -> list[Candidate]:
    """Per product that already has a line for ``period`` (or a later one): the buckets that would be
    eligible by ``as_of`` but wait for the next period's line (one line per (service, product, period)).
    Nothing is lost: they stay in the running totals. Reported only, so operators see them."""
    return _eligible(state, as_of=as_of, period=period, billed=True)


def _eligible(state: AccountState, *, as_of: datetime, period: str, billed: bool) -> list[Candidate]:
    """The buckets whose rows all ended by ``as_of``, per product whose line for ``period`` exists
    (``billed``) or not yet."""
    by_product: dict[int, list[Bucket]] = {}
    for (product_id, _), bucket in sorted(state.buckets.items()):
        if bucket.last_end is None or bucket.last_end > as_of or bucket.rows == 0:
            continue
        # One line per (service, product, period): later rows of a billed period go to the next period.
        if (state.last_period.get(product_id, "") >= period) != billed:
            continue
        by_product.setdefault(product_id, []).append(bucket)
    out = []
    for product_id, buckets in sorted(by_product.items()):
        name, label = state.products.get(product_id, ("usage", "Usage"))
        starts = [b.first_start for b in buckets if b.first_start is not None]
        ends = [b.last_end for b in buckets if b.last_end is not None]
        out.append(Candidate(
            product_id=product_id, product_name=name, product_label=label, buckets=buckets,
            total=sum((b.total for b in buckets), ZERO), qty=sum((b.qty for b in buckets), ZERO),
            rows=sum(b.rows for b in buckets), first_start=min(starts), last_end=max(ends),
        ))
    return out


def claim(state: AccountState, candidate: Candidate, line: Line) -> None:
    """Move the candidate's buckets into ``line`` (status planned). Mutates ``state``."""
    for bucket in candidate.buckets:
        del state.buckets[(bucket.product_id, bucket.key)]
    line.buckets = [b.to_dict() for b in candidate.buckets]
    state.lines[line.key] = line
    state.last_period[line.product_id] = max(state.last_period.get(line.product_id, ""), line.period)


def carry(state: AccountState, candidate: Candidate) -> bool:
    """Leave a sub-cent candidate for a later run, folded into one bucket so the item stays small.
    Returns whether the state changed."""
    if len(candidate.buckets) < 2:
        return False
    first, rest = candidate.buckets[0], candidate.buckets[1:]
    for bucket in rest:
        first.merge(bucket)
        del state.buckets[(bucket.product_id, bucket.key)]
    return True


def unclaim(state: AccountState, line: Line) -> None:
    """Give a claimed line's buckets back to the running totals (the line is dropped). Used when a line
    turns out to be under 0.01 after all (converted again into the client's real currency): like any
    sub-cent amount it is carried over. ``last_period`` keeps the line's period, so those rows wait for
    the next period's line (one line per service, product and period). Mutates ``state``."""
    for raw in line.buckets:
        bucket = Bucket.from_dict(raw)
        key = (bucket.product_id, bucket.key)
        if key in state.buckets:
            state.buckets[key].merge(bucket)
        else:
            state.buckets[key] = bucket
    state.lines.pop(line.key, None)


def redescribe(description: str, ref: str, conversion: str, *, had_conversion: bool) -> str:
    """``description`` (as ``describe`` wrote it) with its conversion note replaced by ``conversion``
    ("" for none): the line is converted again into another currency, everything else stays."""
    suffix = f" [ref {ref}]"
    text = description[: -len(suffix)] if description.endswith(suffix) else description
    if had_conversion:
        cut = text.rfind("; converted from ")
        if cut >= 0:
            text = text[:cut]
    if conversion:
        text += f"; {conversion}"
    return f"{text}{suffix}"


def describe(*, product_name: str, product_label: str, first_start: datetime, last_end: datetime, period: str,
             email: str, cs_user_id: int, ref: str, conversion: str = "") -> str:
    """The invoice line: product, period, ComputeStacks account, our reference (for audits)."""
    product = product_label if product_label.lower() == product_name.lower() else f"{product_label} ({product_name})"
    d0 = first_start.date().isoformat()
    d1 = (last_end - EPSILON).date().isoformat() if last_end > first_start else d0
    text = (f"{product}: usage {d0} to {d1} (period {period}), "
            f"ComputeStacks account {email} (#{cs_user_id})")
    if conversion:
        text += f"; {conversion}"
    return f"{text} [ref {ref}]"
