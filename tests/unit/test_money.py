"""cswhmcs.money: Decimal in, Decimal out; one rounding rule (half-up to cents)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cswhmcs.money import cents, fmt2, to_decimal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Decimal(0)),
        (0, Decimal(0)),  # run_rate of a user without subscriptions is the integer 0
        (12, Decimal(12)),
        ("0.02054795", Decimal("0.02054795")),
        ("  14.6 ", Decimal("14.6")),
        ("-3.50", Decimal("-3.50")),
        ("1e3", Decimal(1000)),
        (Decimal("7.25"), Decimal("7.25")),
        (0.1, Decimal("0.1")),  # webhook floats go through str(): no binary noise
        (0.62328709, Decimal("0.62328709")),
    ],
)
def test_to_decimal_accepts_numbers_numeric_strings_and_none(value: object, expected: Decimal) -> None:
    # Given a value as ComputeStacks may send it
    # When it is converted
    result = to_decimal(value)
    # Then it is the exact Decimal
    assert result == expected
    assert isinstance(result, Decimal)


@pytest.mark.parametrize("value", [True, False, "", "  ", "abc", "12,30", "NaN", "Infinity", float("nan"),
                                   float("inf"), Decimal("NaN"), [], {}, object()])
def test_to_decimal_rejects_bools_and_junk(value: object) -> None:
    # Given something that is not an amount
    # When / Then it is refused with ValueError
    with pytest.raises(ValueError):
        to_decimal(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.005", "1.01"),
        ("1.004999", "1.00"),
        ("-1.005", "-1.01"),
        ("0.004", "0.00"),
        ("-0.004", "0.00"),  # never "-0.00"
        ("12.3", "12.30"),
        ("0.62328709", "0.62"),
        (5, "5.00"),
        ("1E+3", "1000.00"),
    ],
)
def test_cents_rounds_half_up_and_fmt2_prints_two_places(value: str | int, expected: str) -> None:
    # Given an amount
    # When it is rounded to cents and formatted
    rounded = cents(value)
    text = fmt2(value)
    # Then rounding is half-up and the text has exactly two decimals
    assert rounded == Decimal(expected)
    assert text == expected


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), allow_nan=False, allow_infinity=False,
                   places=8))
def test_cents_is_within_half_a_cent_and_fmt2_is_plain(value: Decimal) -> None:
    # Given any amount with up to 8 decimals
    # When it is rounded
    rounded = cents(value)
    # Then it moved by at most half a cent, has two places, and prints without exponent
    assert abs(rounded - value) <= Decimal("0.005")
    assert rounded.as_tuple().exponent == -2
    assert re.fullmatch(r"-?\d+\.\d\d", fmt2(value))
    assert fmt2(value) != "-0.00"
