"""Usage rows, times, periods, due dates and the WHMCS version switch (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from cswhmcs.billing.usage import bucket_key, due_date, iso, parse_row, parse_time, period_of, unit_mode_for


def raw_row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 38422, "period_start": "2026-10-31T18:20:00.000Z", "period_end": "2026-10-31T21:20:00.000Z",
        "rate": "0.00685", "rate_period": 1, "qty": "1.0", "qty_total": "3.0", "total": "0.02054795",
        "processed": True, "external_id": None,
        "subscription_product": {"id": 261, "product": {"id": 2, "name": "containerm", "label": "Container M"}},
    }
    row.update(over)
    return row


def test_parse_row_keeps_exact_decimals() -> None:
    # Given a row whose total drifts as a float
    raw = raw_row()

    # When it is parsed
    row = parse_row(raw)

    # Then the amounts are exact decimals and the product comes from the subscription product
    assert row.total == Decimal("0.02054795")
    assert isinstance(row.total, Decimal) and isinstance(row.qty, Decimal)
    assert (row.id, row.sp_id, row.product_id) == (38422, 261, 2)
    assert (row.product_name, row.product_label) == ("containerm", "Container M")
    assert row.period_end == datetime(2026, 10, 31, 21, 20, tzinfo=UTC)


def test_parse_row_accepts_numbers_and_ignores_processed_flag() -> None:
    # Given numbers instead of strings and a processed flag either way
    a = parse_row(raw_row(total=0, qty=2, processed=False))
    b = parse_row(raw_row(total="0", qty="2", processed=True))

    # Then both parse the same: the processed flag plays no part
    assert a == b
    assert a.total == Decimal(0) and a.qty == Decimal(2)


@pytest.mark.parametrize("bad", [{"id": None}, {"period_end": None}, {"total": "abc"}, {"total": True}])
def test_parse_row_refuses_rows_it_cannot_bill_safely(bad: dict[str, object]) -> None:
    # Given a row with a missing id, end or a non-numeric total
    # When / Then parsing refuses it rather than guessing
    with pytest.raises(ValueError):
        parse_row(raw_row(**bad))


def test_parse_row_without_product() -> None:
    # Given a row whose subscription product is gone
    row = parse_row(raw_row(subscription_product=None))

    # Then it still parses, under a generic product
    assert (row.sp_id, row.product_id, row.product_name) == (0, 0, "usage")


@pytest.mark.parametrize("text", ["2026-10-31T21:20:00.000Z", "2026-10-31 21:20:00 UTC", "2026-10-31T22:20:00+01:00",
                                  "2026-10-31T21:20:00"])
def test_parse_time_forms(text: str) -> None:
    # Given the forms ComputeStacks and the Scheduler use
    # When parsed / Then all are the same UTC instant
    assert parse_time(text) == datetime(2026, 10, 31, 21, 20, tzinfo=UTC)


def test_iso_round_trip() -> None:
    t = datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert iso(t) == "2026-10-31T23:00:00Z"
    assert parse_time(iso(t)) == t


@pytest.mark.parametrize(("as_of", "period"), [
    ("2026-10-31T23:00:00Z", "2026-10"),
    ("2026-11-01T00:00:00Z", "2026-10"),  # a cut-off at midnight closes the month before
    ("2026-11-01T00:00:01Z", "2026-11"),
    ("2027-01-01T00:00:00Z", "2026-12"),
    ("2028-02-29T23:00:00Z", "2028-02"),
])
def test_period_of(as_of: str, period: str) -> None:
    assert period_of(parse_time(as_of)) == period


@pytest.mark.parametrize(("period", "day", "due"), [
    ("2026-10", 1, date(2026, 11, 1)),
    ("2026-12", 1, date(2027, 1, 1)),  # across the year
    ("2026-10", 15, date(2026, 11, 15)),
    ("2027-01", 28, date(2027, 2, 28)),
    ("2027-01", 31, date(2027, 2, 28)),  # clamped to the month
])
def test_due_date_is_in_the_month_after_the_period(period: str, day: int, due: date) -> None:
    assert due_date(period, day) == due


@pytest.mark.parametrize(("version", "mode"), [
    ("8.2.0", "quantity"), ("8.2.0-release.1", "quantity"), ("8.10.1", "quantity"), ("9.0", "quantity"),
    ("8.1.3", "hours"), ("7.10.2", "hours"), ("8", "hours"), (None, "hours"), ("", "hours"), ("garbage", "hours"),
])
def test_unit_mode_switches_at_8_2(version: str | None, mode: str) -> None:
    assert unit_mode_for(version) == mode


def test_bucket_days_end_at_the_cut_off_hour() -> None:
    # Given rows ending just before, at and just after 23:00 on the last day
    before = bucket_key(parse_time("2026-10-31T22:59:59Z"))
    at = bucket_key(parse_time("2026-10-31T23:00:00Z"))
    after = bucket_key(parse_time("2026-10-31T23:00:01Z"))

    # Then a row ending at the cut-off is in the bucket that closes with it, the next row is not
    assert before == at == "2026-10-30"
    assert after == "2026-10-31"
