"""Money helpers: ``Decimal`` from the first byte of JSON to the last, never float arithmetic.

ComputeStacks sends decimals as numeric strings on its REST API (``"0.02054795"``), as a bare
integer ``0`` in one edge case (``run_rate`` of a user without subscriptions) and as JSON floats in
its month-end webhook. ``to_decimal`` accepts all of them; a float goes through ``str`` so that
``0.1`` becomes ``Decimal("0.1")``, not ``Decimal(0.1000000000000000055...)``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal(0)


def to_decimal(value: object) -> Decimal:
    """``None`` -> 0; int, numeric str, Decimal, float -> Decimal.

    Bools, NaN/Infinity, empty strings and anything else -> ``ValueError``.
    """
    if value is None:
        return ZERO
    if isinstance(value, bool):  # bool is an int subclass: True must not silently become 1
        raise ValueError("A boolean is not an amount.")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("An empty string is not an amount.")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"Not a number: {value[:40]!r}.") from None
    else:
        raise ValueError(f"Not an amount: a {type(value).__name__}.")
    if not number.is_finite():
        raise ValueError("An amount must be a finite number.")
    return number


def cents(value: Decimal | int | str) -> Decimal:
    """Round half-up to 0.01 (our one rounding rule): ``1.005`` -> ``1.01``, ``-1.005`` -> ``-1.01``."""
    number = value if isinstance(value, Decimal) else to_decimal(value)
    if not number.is_finite():
        raise ValueError("An amount must be a finite number.")
    rounded = number.quantize(CENT, rounding=ROUND_HALF_UP)
    return rounded if rounded != 0 else CENT * 0  # no "-0.00"


def fmt2(value: Decimal | int | str) -> str:
    """Two decimals, no exponent, no thousands separator: ``Decimal("12.3")`` -> ``"12.30"``."""
    return f"{cents(value):f}"
