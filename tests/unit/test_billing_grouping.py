"""Absorbing rows, grouping per product, rounding once, carry-over (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cswhmcs.billing.grouping import (
    AccountState,
    Line,
    absorb,
    candidates,
    carry,
    claim,
    describe,
    held,
    line_ref,
    needs_rows,
    parse_ref,
)
from cswhmcs.billing.usage import UsageRow
from cswhmcs.money import cents

T0 = datetime(2026, 10, 1, tzinfo=UTC)
AS_OF = datetime(2026, 10, 31, 23, tzinfo=UTC)


def row(rid: int, *, sp: int = 1, product: int = 1, end: datetime | None = None, total: str = "0.02054795",
        qty: str = "1") -> UsageRow:
    end = end or T0 + timedelta(hours=3 * rid)
    return UsageRow(id=rid, sp_id=sp, product_id=product, product_name=f"p{product}",
                    product_label=f"Product {product}",
                    period_start=end - timedelta(hours=3), period_end=end, total=Decimal(total), qty=Decimal(qty))


def make_line(state: AccountState, cand: object, period: str = "2026-10") -> Line:
    from cswhmcs.billing.grouping import Candidate

    assert isinstance(cand, Candidate)
    return Line(period=period, product_id=cand.product_id, product_name=cand.product_label, description="d",
                amount=cents(cand.total), currency="USD", source_total=cand.total, source_currency="USD",
                rate=Decimal(1), quantity=cand.qty, unit_mode="quantity", invoice_action="duedate",
                due_date="2026-11-01", client_id=1, service_id=1, cs_user_id=state.cs_user_id, email="a@b.c",
                rows=cand.rows, first_start="", last_end="")


def test_sum_is_exact_and_rounded_once() -> None:
    # Given 240 rows of 0.02054795 (a float sum drifts; rounding each row would give 240 x 0.02 = 4.80)
    state = AccountState(cs_user_id=7)
    absorb(state, [row(i) for i in range(1, 241)], as_of=AS_OF, billing_start=None)

    # When grouped
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")

    # Then the exact sum is kept and rounds half-up once
    assert cand.total == Decimal("4.931508")
    assert cents(cand.total) == Decimal("4.93")
    assert cand.qty == Decimal(240) and cand.rows == 240


def test_float_drift_does_not_change_a_cent() -> None:
    # Given two rows whose exact sum, 0.045, sits on a rounding boundary (as floats it is 0.04499999...)
    state = AccountState(cs_user_id=7)
    absorb(state, [row(1, total="0.0225"), row(2, total="0.0225")], as_of=AS_OF, billing_start=None)

    # When grouped and rounded once
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")

    # Then it is 0.05 (half-up on the exact sum), where float arithmetic would bill 0.04
    assert cents(cand.total) == Decimal("0.05")
    assert round(0.0225 + 0.0225, 2) == 0.04


def test_half_up_rounding_of_a_line() -> None:
    state = AccountState(cs_user_id=7)
    absorb(state, [row(1, total="0.004"), row(2, total="0.001")], as_of=AS_OF, billing_start=None)
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")
    assert cand.total == Decimal("0.005") and cents(cand.total) == Decimal("0.01")


def test_grouped_by_product_across_subscription_products() -> None:
    # Given two containers of product 1 and one of product 2
    state = AccountState(cs_user_id=7)
    rows = [row(1, sp=10, product=1, total="1.10"), row(2, sp=11, product=1, total="2.20"),
            row(3, sp=12, product=2, total="0.50")]
    absorb(state, rows, as_of=AS_OF, billing_start=None)

    # When grouped
    cands = candidates(state, as_of=AS_OF, period="2026-10")

    # Then one candidate per product
    assert [(c.product_id, c.total) for c in cands] == [(1, Decimal("3.30")), (2, Decimal("0.50"))]


def test_rows_are_absorbed_once_even_when_listed_twice() -> None:
    # Given offset pagination that repeats a row, and a second run that lists the same rows again
    state = AccountState(cs_user_id=7)
    first = absorb(state, [row(3), row(2), row(2), row(1)], as_of=AS_OF, billing_start=None)
    second = absorb(state, [row(3), row(2), row(1)], as_of=AS_OF, billing_start=None)

    # Then each row counts once
    assert [r.id for r in first.absorbed] == [1, 2, 3]
    assert second.absorbed == []
    assert state.pending_rows() == 3
    assert state.scan_floor[1] == 3


def test_rows_ending_after_as_of_wait_with_everything_after_them_in_their_subscription() -> None:
    # Given sp 1 with a row that ends after the as-of and, oddly, a later row that ends before it
    state = AccountState(cs_user_id=7)
    late = row(5, sp=1, end=AS_OF + timedelta(minutes=20))
    odd = row(6, sp=1, end=AS_OF - timedelta(hours=1))
    other = row(7, sp=2, end=AS_OF - timedelta(hours=1))
    result = absorb(state, [other, odd, late, row(4, sp=1)], as_of=AS_OF, billing_start=None)

    # Then 5 and 6 wait (the mark of sp 1 stays "everything up to 4"), sp 2 goes on
    assert sorted(r.id for r in result.absorbed) == [4, 7]
    assert sorted(r.id for r in result.deferred) == [5, 6]
    assert state.scan_floor[1] == 4
    assert {sp: key[1] for sp, key in state.sp_marks.items()} == {2: 7}

    # When a later run sees them again
    later = absorb(state, [other, odd, late, row(4, sp=1)], as_of=AS_OF + timedelta(days=1), billing_start=None)

    # Then they are absorbed exactly once
    assert [r.id for r in later.absorbed] == [5, 6]
    assert state.scan_floor[1] == 7 and state.sp_marks == {}


def test_rows_before_billing_start_are_never_billed() -> None:
    start = datetime(2026, 10, 15, tzinfo=UTC)
    state = AccountState(cs_user_id=7)
    early = row(1, end=start - timedelta(hours=1))
    ok = row(2, end=start)
    result = absorb(state, [ok, early], as_of=AS_OF, billing_start=start)
    assert [r.id for r in result.passed] == [1]
    assert [r.id for r in result.absorbed] == [2]
    assert state.scan_floor[1] == 2 and state.rows_passed == 1


def test_needs_rows_only_once_per_as_of() -> None:
    state = AccountState(cs_user_id=7)
    assert needs_rows(state, AS_OF)
    absorb(state, [], as_of=AS_OF, billing_start=None)
    assert not needs_rows(state, AS_OF)
    assert not needs_rows(state, AS_OF - timedelta(days=1))
    assert needs_rows(state, AS_OF + timedelta(seconds=1))


def test_floor_trails_recent_rows_so_late_commits_are_found() -> None:
    # Given rows listed by creation time, the newest created within the settling margin
    state = AccountState(cs_user_id=7)
    old = row(1, sp=1, end=AS_OF - timedelta(hours=5))
    recent = row(3, sp=2, end=AS_OF - timedelta(minutes=30))
    old, recent = (replace(old, created_at=old.period_end), replace(recent, created_at=recent.period_end))
    absorb(state, [recent, old], as_of=AS_OF, billing_start=None)
    assert state.scan_floor == old.key and state.sp_marks == {2: recent.key}

    # When ComputeStacks commits, late, a row created before the recent one (another subscription product)
    late = replace(row(2, sp=3, end=AS_OF - timedelta(minutes=40)), created_at=AS_OF - timedelta(minutes=40))
    again = absorb(state, [recent, late, old], as_of=AS_OF + timedelta(hours=3), billing_start=None)

    # Then it is absorbed, and the recent row is not absorbed twice
    assert [r.id for r in again.absorbed] == [2]
    assert state.pending_rows() == 3


def test_buckets_that_ended_after_as_of_are_not_billed_early() -> None:
    # Given a late month-end run after the next daily collection already absorbed rows past the cut-off
    state = AccountState(cs_user_id=7)
    absorb(state, [row(1, end=AS_OF - timedelta(hours=2)), row(2, end=AS_OF + timedelta(hours=1))],
           as_of=AS_OF + timedelta(hours=1, minutes=30), billing_start=None)

    # When the month-end run (as-of 23:00) groups
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")

    # Then only the row that ended by the cut-off is in it
    assert cand.rows == 1 and cand.total == Decimal("0.02054795")


def test_claim_moves_totals_into_the_line_and_one_line_per_period() -> None:
    state = AccountState(cs_user_id=7)
    absorb(state, [row(1, total="3")], as_of=AS_OF, billing_start=None)
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")
    claim(state, cand, make_line(state, cand))
    assert state.pending_total() == 0 and "2026-10#p1" in state.lines

    # When more rows of the same period turn up in a second run of the same period
    absorb(state, [row(2, total="1")], as_of=AS_OF + timedelta(minutes=1), billing_start=None)

    # Then no second line for (product, period): they wait for the next period
    assert candidates(state, as_of=AS_OF + timedelta(minutes=1), period="2026-10") == []
    [nxt] = candidates(state, as_of=AS_OF + timedelta(days=30), period="2026-11")
    assert nxt.total == Decimal("1")


def test_eligible_rows_of_a_product_billed_for_the_period_are_held_not_lost() -> None:
    # Given product 1 billed for October by a run in the middle of the month
    state = AccountState(cs_user_id=7)
    mid = T0 + timedelta(days=15)
    absorb(state, [row(1, total="3")], as_of=mid, billing_start=None)
    [cand] = candidates(state, as_of=mid, period="2026-10")
    claim(state, cand, make_line(state, cand))
    assert held(state, as_of=mid, period="2026-10") == []

    # When rows of products 1 and 2 end later in October, and one of product 1 after the month-end's
    # as-of (a daily collection read past the cut-off before a late month-end run)
    rows = [row(2, sp=1, total="0.15", end=T0 + timedelta(days=20)),
            row(3, sp=2, product=2, total="2", end=T0 + timedelta(days=21)),
            row(4, sp=3, total="9", end=AS_OF + timedelta(hours=2))]
    absorb(state, rows, as_of=AS_OF + timedelta(hours=3), billing_start=None)

    # Then at the month-end product 2 is a candidate; product 1's eligible row is held, the later one is not
    assert [c.product_id for c in candidates(state, as_of=AS_OF, period="2026-10")] == [2]
    [h] = held(state, as_of=AS_OF, period="2026-10")
    assert (h.product_id, h.product_label, h.total, h.rows) == (1, "Product 1", Decimal("0.15"), 1)
    # And November bills both rows of product 1: nothing is held for a period without a line yet
    assert held(state, as_of=AS_OF + timedelta(days=30), period="2026-11") == []
    assert {c.product_id: c.total for c in candidates(state, as_of=AS_OF + timedelta(days=30),
                                                      period="2026-11")}[1] == Decimal("9.15")


def test_carry_keeps_sub_cent_lines_for_later_in_one_bucket() -> None:
    # Given a product with 0.006 spread over several days
    state = AccountState(cs_user_id=7)
    rows = [row(i, total="0.002", end=T0 + timedelta(days=i)) for i in range(1, 4)]
    absorb(state, rows, as_of=AS_OF, billing_start=None)
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")

    # When it is carried over
    carry(state, cand)

    # Then the amount is intact, folded into one bucket, and adds up next month
    assert len(state.buckets) == 1 and state.pending_total() == Decimal("0.006")
    absorb(state, [row(9, total="0.005", end=AS_OF + timedelta(days=2))], as_of=AS_OF + timedelta(days=30),
           billing_start=None)
    [nxt] = candidates(state, as_of=AS_OF + timedelta(days=30), period="2026-11")
    assert nxt.total == Decimal("0.011") and nxt.rows == 4


def test_state_round_trips_through_json_dict() -> None:
    state = AccountState(cs_user_id=7, cs_currency="EUR", cs_currency_at=AS_OF)
    absorb(state, [row(1, sp=3), row(2, sp=4, end=AS_OF + timedelta(hours=1))], as_of=AS_OF, billing_start=None)
    [cand] = candidates(state, as_of=AS_OF, period="2026-10")
    claim(state, cand, make_line(state, cand))
    again = AccountState.from_dict(state.to_dict(), version=3)
    assert again.to_dict() == state.to_dict() and again.version == 3


def test_description_names_product_period_account_and_ref() -> None:
    text = describe(product_name="containerm", product_label="Container M", first_start=T0, last_end=AS_OF,
                    period="2026-10", email="jane@example.com", cs_user_id=12, ref=line_ref(12, "2026-10", 2),
                    conversion="converted from 11.42 EUR at 1 EUR = 1.086957 USD")
    assert text == ("Container M (containerm): usage 2026-10-01 to 2026-10-31 (period 2026-10), ComputeStacks "
                    "account jane@example.com (#12); converted from 11.42 EUR at 1 EUR = 1.086957 USD "
                    "[ref 12:2026-10:2]")


def test_refs_parse() -> None:
    assert parse_ref("12:2026-10:2") == (12, "2026-10", 2)
    for bad in ("12:2026-13:2", "x", "1:2:3"):
        try:
            parse_ref(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
