"""The sequential baseline of ``billing_speedup_vs_sequential``: ComputeStacks' own month-end billing into
WHMCS, re-implemented in Python so that it can run on the bench's data, sandboxes and latencies.

What it reproduces (ComputeStacks controller 9.3.1 and the whmcs-ruby gem 2.3.7 it pins; reference
``computestacks-api.md`` section 4, and the gem's ``lib/whmcs/usage.rb``, ``service.rb``, ``whmcs.rb``):

1. ComputeStacks' aggregation (``AggregateUsageService``): each user's unprocessed usage of the period,
   grouped by subscription product, ``total`` and ``qty`` summed, groups under 0.01 dropped. Inside
   ComputeStacks that is a database query; from outside, the only source is
   ``GET /api/admin/users/:id/billing_usages`` (newest first, no filter), read here one user after the
   other, page by page (pages of 500, as the backend reads them), until the rows are older than the period.
2. ``Whmcs::Usage#aggregate_usage!``: for every aggregated record, the WHMCS client: ``labels.whmcs.client_id``,
   else ``Whmcs::Service.find(labels.whmcs.service_id)`` = one ``GetClientsProducts`` per record (the bench
   links its users by service id only, so every record takes this path), else ``user.external_id``; records
   with none are dropped. Then one billable per (client, product name): the float sums, ``total.round(2)``
   (half away from zero, like Ruby's ``Float#round``), skipped only when exactly zero.
3. ``Whmcs::Usage#save``: ``WhmcsDetails`` for the version (8.2+: ``quantity`` + ``unit=quantity``, else
   ``hours``; denied or unreadable: version 0.0), then one ``AddBillableItem`` per billable, each waiting
   for the previous answer; ``invoiceaction`` = ``duedate``, ``duedate`` = day 1 of the month that starts
   45 days after the start of the current month. An answer whose ``result`` is not ``success`` is an error,
   collected; nothing is retried, nothing is idempotent, nothing is paced.

Where it is deliberately lighter than the gem, so that a speedup measured against it is a lower bound:
``WhmcsDetails`` is read once per run (the gem's ``Whmcs.whmcs_version`` is not memoised and is called for
every item); ``Service.find``'s ``GetProducts`` (``product_module``, one more request per lookup) is left
out; the grouping is a dictionary (the gem scans the whole array once per client: quadratic); connections
are kept alive (``Faraday.post`` opens one per call). A 429 from ComputeStacks, which the gem never meets
inside ComputeStacks, stops the run (``SequentialError``): the baseline's rate stays far below the limit
because each request waits for the previous one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

PER_PAGE = 500
API_VERSION = 80  # the Accept header's api_version, as the backend sends it
MIN_GROUP = Decimal("0.01")  # "1 Cent is the smallest unit we will process" (AggregateUsageService)


class SequentialError(RuntimeError):
    """The baseline could not read what it needs (it does not retry, like the code it reproduces)."""


@dataclass(frozen=True)
class Record:
    """One aggregated record, as ComputeStacks hands it to the gem (amounts as floats, ``.to_f``)."""

    user_id: int
    subscription_product_id: int
    product: str
    total: float
    qty: float
    labels: Mapping[str, Any]
    external_id: str | None


@dataclass(frozen=True)
class Billable:
    client_id: int
    product: str
    total: float  # rounded to cents
    qty: float


@dataclass
class SequentialResult:
    accounts: int
    wall: float = 0.0
    per_run: float = 0.0  # of ``wall``: what is spent once per run whatever the accounts (WhmcsDetails)
    records: int = 0
    cs_requests: int = 0
    whmcs_requests: Counter[str] = field(default_factory=Counter)
    items: list[Billable] = field(default_factory=list)  # created (WHMCS answered success)
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.cs_requests + sum(self.whmcs_requests.values())


# ---------------------------------------------------------------------- the pure steps


def aggregate(user_id: int, rows: Iterable[Mapping[str, Any]], *, period_start: datetime,
              period_end: datetime) -> list[Record]:
    """ComputeStacks' step: the user's unprocessed rows ending in (period_start, period_end], per subscription
    product (exact sums, as SQL does them), groups under one cent dropped, amounts handed over as floats."""
    sums: dict[int, list[Any]] = {}
    for row in rows:
        if row.get("processed"):
            continue
        end = _time(row.get("period_end"))
        if end is None or not period_start < end <= period_end:
            continue
        sub = row.get("subscription_product") or {}
        product = sub.get("product") or {}
        key = int(sub.get("id") or 0)
        entry = sums.setdefault(key, [Decimal(0), Decimal(0), str(product.get("name") or product.get("label") or ""),
                                      row.get("user") or {}])
        entry[0] += Decimal(str(row.get("total") or 0))
        entry[1] += Decimal(str(row.get("qty") or 0))
    return [Record(user_id=user_id, subscription_product_id=key, product=name, total=float(total), qty=float(qty),
                   labels=dict(user.get("labels") or {}), external_id=user.get("external_id"))
            for key, (total, qty, name, user) in sums.items() if total >= MIN_GROUP]


def ruby_round2(value: float) -> float:
    """``Float#round(2)``: half away from zero on the float's shortest decimal form."""
    return float(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def group(records: Iterable[tuple[Record, int]]) -> list[Billable]:
    """The gem's grouping: per (client, product name), float sums in record order, total rounded to cents,
    skipped only when the unrounded sum is exactly zero; clients in order of first appearance."""
    sums: dict[tuple[int, str], list[float]] = {}
    for record, client_id in records:
        entry = sums.setdefault((client_id, record.product), [0.0, 0.0])
        entry[0] += record.total
        entry[1] += record.qty
    return [Billable(client_id=cid, product=product, total=ruby_round2(total), qty=qty)
            for (cid, product), (total, qty) in sums.items() if total != 0.0]


def due_date(now: datetime, day: int = 1) -> str:
    """``Time.new(year, month) + 45 days``, then day ``day`` of that month."""
    t = datetime(now.year, now.month, 1, tzinfo=UTC) + timedelta(days=45)
    return f"{t.year:04d}-{t.month:02d}-{day:02d}"


def item_params(item: Billable, *, version: tuple[int, ...], due: str,
                invoice_action: str = "duedate") -> dict[str, str]:
    """``billabe_by_version``: what one AddBillableItem carries (Faraday form-encodes Ruby's ``to_s``)."""
    params = {"clientid": str(item.client_id), "description": item.product, "amount": repr(item.total),
              "invoiceaction": invoice_action, "duedate": due}
    if version >= (8, 2, 0):
        params.update(quantity=repr(item.qty), unit="quantity")
    else:
        params["hours"] = repr(item.qty)
    return params


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split("-")[0].split("."))
    except ValueError:
        return (0, 0)


# ---------------------------------------------------------------------- over HTTP, one request at a time


class _Whmcs:
    def __init__(self, url: str, identifier: str, secret: str, timeout: float, counts: Counter[str]) -> None:
        self.url, self.identifier, self.secret = url, identifier, secret
        self.http = httpx.Client(timeout=timeout)
        self.counts = counts

    def call(self, action: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        self.counts[action] += 1
        body = {"action": action, "identifier": self.identifier, "secret": self.secret, "responsetype": "json",
                **(params or {})}
        response = self.http.post(self.url, data=body)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SequentialError(f"WHMCS {action}: HTTP {response.status_code}, not JSON")
        return data

    def close(self) -> None:
        self.http.close()


def _usage_pages(http: httpx.Client, user_id: int, *, per_page: int, period_start: datetime,
                 result: SequentialResult) -> Iterator[dict[str, Any]]:
    page = 1
    while True:
        result.cs_requests += 1
        response = http.get(f"/api/admin/users/{user_id}/billing_usages", params={"page": page, "per_page": per_page})
        if response.status_code != 200:
            raise SequentialError(f"ComputeStacks user {user_id} usage page {page}: HTTP {response.status_code}")
        rows = (response.json() or {}).get("billing_usages") or []
        yield from rows
        ends = [t for t in (_time(r.get("period_end")) for r in rows) if t is not None]
        if len(rows) < per_page or (ends and min(ends) <= period_start):
            return
        page += 1


def run_sequential(cs: Sequence[str], whmcs: Sequence[str], cs_user_ids: Sequence[int], *,
                   period_start: datetime, period_end: datetime, now: datetime | None = None,
                   per_page: int = PER_PAGE, timeout: float = 10.0) -> SequentialResult:
    """Bill ``cs_user_ids`` for (period_start, period_end] the sequential way. ``cs`` = (url, api key,
    api secret), ``whmcs`` = (API url, identifier, secret). ``now`` sets the due date (default: period_end)."""
    result = SequentialResult(accounts=len(cs_user_ids))
    cs_url, cs_key, cs_secret = cs
    started = time.perf_counter()
    cs_http = httpx.Client(base_url=cs_url.rstrip("/"), auth=httpx.BasicAuth(cs_key, cs_secret), timeout=timeout,
                           headers={"Accept": f"application/json; api_version={API_VERSION}"})
    wh = _Whmcs(whmcs[0], whmcs[1], whmcs[2], timeout, result.whmcs_requests)
    try:
        # 1. ComputeStacks aggregates every user's usage before calling the hook with the whole array.
        records: list[Record] = []
        for uid in cs_user_ids:
            records += aggregate(uid, _usage_pages(cs_http, uid, per_page=per_page, period_start=period_start,
                                                   result=result),
                                 period_start=period_start, period_end=period_end)
        result.records = len(records)
        # 2. The gem resolves a client per record, then groups.
        resolved: list[tuple[Record, int]] = []
        for record in records:
            client_id = _client_of(record, wh)
            if client_id is not None:
                resolved.append((record, client_id))
        billables = group(resolved)
        # 3. ... and sends them one by one.
        if billables:
            t0 = time.perf_counter()
            try:
                details = wh.call("WhmcsDetails")
                version = _version((details.get("whmcs") or {}).get("version"))
            except (SequentialError, httpx.HTTPError, AttributeError):
                version = (0, 0)
            result.per_run += time.perf_counter() - t0
            due = due_date(now or period_end)
            for item in billables:
                try:
                    answer = wh.call("AddBillableItem", item_params(item, version=version, due=due))
                except (SequentialError, httpx.HTTPError):
                    result.errors.append("Fatal error reporting usage to WHMCS.")
                    continue
                if answer.get("result") == "success":
                    result.items.append(item)
                else:
                    result.errors.append(str(answer.get("message")))
    finally:
        cs_http.close()
        wh.close()
    result.wall = time.perf_counter() - started
    return result


def _client_of(record: Record, wh: _Whmcs) -> int | None:
    whmcs = record.labels.get("whmcs") if isinstance(record.labels, Mapping) else None
    whmcs = whmcs if isinstance(whmcs, Mapping) else {}
    client: Any = whmcs.get("client_id")
    if client in (None, "") and whmcs.get("service_id") not in (None, ""):
        try:
            answer = wh.call("GetClientsProducts", {"serviceid": str(whmcs["service_id"])})
        except (SequentialError, httpx.HTTPError):
            answer = {}
        if int(answer.get("totalresults") or 0) == 1:
            products = answer.get("products") or {}
            rows = products.get("product") if isinstance(products, Mapping) else None
            if rows:
                client = rows[0].get("clientid")
    if client in (None, ""):
        client = record.external_id
    if client in (None, ""):
        return None
    try:
        return int(str(client))
    except ValueError:
        return None
