"""Hypothesis: whatever the rows and however they are split into runs, every eligible row is billed
once or still waiting, and the billed total is the sum of the lines, each rounded once (pure core)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cswhmcs.billing.grouping import (
    SETTLE,
    AccountState,
    Line,
    absorb,
    candidates,
    carry,
    claim,
    complete_for,
    needs_rows,
)
from cswhmcs.billing.usage import ZERO_KEY, iso, period_of
from cswhmcs.billing.worker import read_new_rows
from cswhmcs.money import cents

BASE = datetime(2026, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class GenRow:
    sp: int
    end_h: int
    delay_h: int
    total: Decimal
    qty: Decimal
    lag_min: int = 0


totals = st.one_of(
    st.decimals(min_value=Decimal(0), max_value=Decimal("0.05"), places=8),
    st.decimals(min_value=Decimal(0), max_value=Decimal("25"), places=4),
    st.sampled_from([Decimal("0.0225"), Decimal("0.005"), Decimal("0.02054795"), Decimal(0)]),
)
gen_rows = st.lists(st.builds(GenRow, sp=st.integers(1, 4), end_h=st.integers(0, 600), delay_h=st.integers(-8, 10),
                              total=totals, qty=st.sampled_from([Decimal(0), Decimal(1), Decimal("0.5"), Decimal(3)]),
                              lag_min=st.sampled_from([0, 0, 10, 45])),
                    max_size=60)
kinds = st.sampled_from(["bill", "collect", "close"])  # close: as-of = now + lead (the "late" value), then a bill at it


@st.composite
def rows_and_runs(draw: st.DrawFn) -> tuple[list[GenRow], list[tuple[int, str, bool, int]]]:
    """Rows, then runs: some anywhere, some just around a row's end (where deferral happens)."""
    rows = draw(gen_rows)
    late = st.one_of(st.just(0), st.integers(0, 30 * 60))
    runs = draw(st.lists(st.tuples(st.integers(0, 700 * 60), kinds, st.booleans(), late), max_size=6))
    if rows:
        # Runs in minutes around a row's end, or its creation (where late commits matter).
        near = draw(st.lists(st.tuples(st.integers(0, len(rows) - 1), st.booleans(), st.integers(-8 * 60, 4 * 60),
                                       kinds, st.booleans(), late), max_size=10))
        for i, at_creation, off, kind, twice, lt in near:
            anchor = rows[i].end_h + (rows[i].delay_h if at_creation else 0)
            runs.append((max(0, anchor * 60 + (off // 4 if at_creation else off)), kind, twice, lt))
    return rows, runs


class FakeCS:
    """ComputeStacks' list: newest ``created_at`` first, only rows committed by ``now`` (some commit
    late: after rows created after them)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.now = BASE

    def iter_billing_usages(self, user_id: int, *, per_page: int = 500) -> Any:
        visible = [r for r in self.rows if r["_visible"] <= self.now]
        yield from sorted(visible, key=lambda r: (r["_created"], r["id"]), reverse=True)


def materialise(rows: list[GenRow]) -> list[dict[str, Any]]:
    created = sorted(rows, key=lambda r: (r.end_h + r.delay_h, r.sp, r.end_h))
    out = []
    visible_sp: dict[int, datetime] = {}
    for i, r in enumerate(created, start=1):
        end = BASE + timedelta(hours=r.end_h)
        made = end + timedelta(hours=r.delay_h)
        # Some rows commit late, after rows created after them; one subscription product's rows are
        # written one after the other, so they become visible in order.
        visible = max(made + timedelta(minutes=r.lag_min), visible_sp.get(r.sp, made))
        visible_sp[r.sp] = visible
        out.append({"id": i, "period_start": iso(end - timedelta(hours=3)), "period_end": iso(end),
                    "created_at": iso(made), "_visible": visible,
                    "qty": str(r.qty), "total": str(r.total), "processed": bool(i % 2),
                    "subscription_product": {"id": r.sp, "product": {"id": 1 + r.sp % 2, "name": f"p{1 + r.sp % 2}"}},
                    "_created": made})
    return out


def bill_runs(raw: list[dict[str, Any]], runs: list[tuple[int, str, bool, int]], start_h: int | None
              ) -> tuple[AccountState, list[Line], list[int], datetime | None]:
    """Runs in order of their wall-clock time; a run's as-of may lie before it (a late or retried run)."""
    cs = FakeCS(raw)
    state = AccountState(cs_user_id=1)
    start = BASE + timedelta(hours=start_h) if start_h is not None else None
    lines: list[Line] = []
    absorbed: list[int] = []
    # A close run reads before its as-of (the cut-off, `late` minutes ahead) and is followed by the month-end
    # run at that cut-off, as the 21:20 and 23:00 schedules are.
    closes = [(m + max(1, late), "bill", False, 0) for m, kind, _, late in runs if kind == "close"]
    schedule = sorted(runs + closes) + [(800 * 60, "bill", False, 0)]  # a final run after everything has ended
    for minute, kind, twice, late in schedule:
        cs.now = BASE + timedelta(minutes=minute)
        as_of = cs.now + timedelta(minutes=max(1, late)) if kind == "close" else cs.now - timedelta(minutes=late)
        for _ in range(2 if twice else 1):  # a duplicate trigger / redelivery
            if needs_rows(state, as_of):
                floor_time = state.scan_floor[0] if state.scan_floor != ZERO_KEY else None
                before = state.absorbed_upto
                rows = read_new_rows(cs, 1, floor=state.scan_floor, billing_start=start, per_page=500)
                # As the worker does: the settling margin counts from the listing when the as-of is ahead
                result = absorb(state, rows, as_of=as_of, billing_start=start,
                                settle=SETTLE + max(as_of - cs.now, timedelta(0)))
                assert all(r.period_end <= as_of for r in result.absorbed)
                absorbed += [r.id for r in result.absorbed]
                if kind == "close" and not complete_for(rows, as_of=as_of, read_at=cs.now, history_from=floor_time):
                    state.absorbed_upto = max(before, cs.now) if before is not None else cs.now
            if kind != "bill":
                continue
            period = period_of(as_of)
            for cand in candidates(state, as_of=as_of, period=period):
                assert cand.last_end <= as_of  # never a row that ended after the cut-off
                if cand.total < CENT:
                    carry(state, cand)
                    continue
                line = Line(period=period, product_id=cand.product_id, product_name=cand.product_name,
                            description="", amount=cents(cand.total), currency="USD", source_total=cand.total,
                            source_currency="USD", rate=Decimal(1), quantity=cand.qty, unit_mode="quantity",
                            invoice_action="duedate", due_date="", client_id=1, service_id=1, cs_user_id=1,
                            email="", rows=cand.rows, first_start="", last_end="")
                claim(state, cand, line)
                state.lines.pop(line.key)  # sent and done
                lines.append(line)
            # A JSON round trip between runs, as the ledger does.
            state = AccountState.from_dict(state.to_dict())
    return state, lines, absorbed, start


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows_and_runs(), start_h=st.one_of(st.none(), st.integers(0, 500)))
# A row committed 45 minutes late, after a row created at the same instant was read (the settling margin).
@example(data=([GenRow(1, 10, 0, Decimal(1), Decimal(1), 45), GenRow(2, 10, 0, Decimal(1), Decimal(1), 0)],
               [(610, "collect", False, 0), (660, "bill", False, 0)]), start_h=None)
# A late month-end run after a collection that read past its cut-off.
@example(data=([GenRow(1, 10, 0, Decimal(1), Decimal(1)), GenRow(1, 12, 0, Decimal(2), Decimal(1))],
               [(13 * 60, "collect", False, 0), (14 * 60, "bill", False, 3 * 60)]), start_h=None)
# A close run 100 minutes before its cut-off, while a row created earlier than one it lists is not committed yet:
# its floor must trail the listing, not the cut-off.
@example(data=([GenRow(1, 9, 0, Decimal(1), Decimal(1), 45), GenRow(2, 9, 0, Decimal(1), Decimal(1), 0)],
               [(570, "close", False, 100)]), start_h=None)
def test_any_split_into_runs_bills_each_eligible_row_once(data: tuple[list[GenRow], list[tuple[int, str, bool, int]]],
                                                          start_h: int | None) -> None:
    # Given any rows, any runs (some repeated) and maybe a go-live cut-off
    rows, runs = data
    raw = materialise(rows)

    # When the runs happen
    state, lines, absorbed, start = bill_runs(raw, runs, start_h)

    # Then no row was absorbed twice, and every eligible row was (none lost)
    assert len(absorbed) == len(set(absorbed))
    eligible = {r["id"]: r for r in raw
                if start is None or datetime.fromisoformat(r["period_end"].replace("Z", "+00:00")) >= start}
    assert set(absorbed) == set(eligible)

    # And the money adds up: lines (each rounded once) + what is still carried = the exact sum of the rows
    exact = sum((Decimal(r["total"]) for r in eligible.values()), Decimal(0))
    billed_exact = sum((ln.source_total for ln in lines), Decimal(0))
    assert billed_exact + state.pending_total() == exact
    assert sum(ln.amount for ln in lines) == sum(cents(ln.source_total) for ln in lines)
    assert sum(ln.rows for ln in lines) + state.pending_rows() == len(eligible)
    assert sum((ln.quantity for ln in lines), Decimal(0)) + sum(b.qty for b in state.buckets.values()) == sum(
        (Decimal(r["qty"]) for r in eligible.values()), Decimal(0))

    # And one line per (product, period); whatever is left after the final run is under a cent per product
    keys = [(ln.product_id, ln.period) for ln in lines]
    assert len(keys) == len(set(keys))
    for product in {p for p, _ in state.buckets}:
        last = max((ln.period for ln in lines if ln.product_id == product), default="")
        assert state.pending_total(product) < CENT or last == period_of(BASE + timedelta(hours=800))
