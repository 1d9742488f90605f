"""Currency conversion with WHMCS's rates (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cswhmcs.adapters.whmcs import Currency
from cswhmcs.billing.currency import CurrencyTable, Rate, conversion_note
from cswhmcs.errors import ConfigurationError
from cswhmcs.money import cents


def table() -> CurrencyTable:
    return CurrencyTable.from_whmcs([
        Currency(1, "USD", "$", " USD", Decimal("1.00000")),
        Currency(2, "EUR", "€", " EUR", Decimal("0.92000")),
        Currency(3, "GBP", "£", " GBP", Decimal("0.79000")),
    ])


def test_default_currency_is_the_one_with_rate_one() -> None:
    assert table().default_code == "USD"


def test_same_currency_is_not_converted() -> None:
    # Given an amount in the client's own currency
    amount, factor = table().convert(Decimal("12.345"), "EUR", "EUR")

    # Then it is untouched
    assert (amount, factor) == (Decimal("12.345"), Decimal(1))


def test_conversion_goes_through_the_default_currency() -> None:
    # Given 92 EUR (= 100 USD at 0.92) billed to a GBP client (0.79 per USD)
    amount, factor = table().convert(Decimal("92"), "EUR", "GBP")

    # Then it is 79 GBP, and the factor is rate(GBP) / rate(EUR)
    assert cents(amount) == Decimal("79.00")
    assert factor.quantize(Decimal("1E-20")) == Decimal("0.85869565217391304348")


def test_conversion_is_exact_until_the_single_rounding() -> None:
    # Given a long decimal total that would drift as a float
    amount, _ = table().convert(Decimal("0.02054795") * 1000, "USD", "EUR")

    # Then the unrounded result is exact and rounds half-up once
    assert amount == Decimal("18.9041140")
    assert cents(amount) == Decimal("18.90")


def test_client_currency_by_code_or_id() -> None:
    t = table()
    assert t.code_of({"currency": 2, "currency_code": "EUR"}) == "EUR"
    assert t.code_of({"currency": 3}) == "GBP"
    assert t.code_of({}) == "USD"


def test_unknown_currency_is_a_configuration_error() -> None:
    # Given a ComputeStacks user in a currency WHMCS does not have
    # When converting / Then it refuses clearly (the rows stay unbilled, nothing is guessed)
    with pytest.raises(ConfigurationError, match="CHF"):
        table().convert(Decimal("1"), "CHF", "EUR")


def test_round_trip_through_list() -> None:
    t = CurrencyTable.from_list(table().to_list())
    assert t.factor("EUR", "GBP") == table().factor("EUR", "GBP")


def test_conversion_note_states_the_original_amount() -> None:
    note = conversion_note(Decimal("11.4249"), "EUR", "USD", Decimal(1) / Decimal("0.92"))
    assert note == "converted from 11.42 EUR at 1 EUR = 1.086957 USD"


def test_no_default_when_ambiguous() -> None:
    assert CurrencyTable([Rate(1, "USD", Decimal(1)), Rate(2, "EUR", Decimal(1))]).default_code is None
