"""Currency conversion with WHMCS's own rates (GetCurrencies).

WHMCS stores, per currency, a base conversion rate against its default currency (the one whose
rate is 1): ``amount in X = amount in default * rate(X)``. So ``from -> to`` is
``amount * rate(to) / rate(from)``, computed at high precision and rounded once, by the caller, to cents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from cswhmcs.errors import ConfigurationError
from cswhmcs.money import fmt2

ONE = Decimal(1)


@dataclass(frozen=True)
class Rate:
    id: int
    code: str
    rate: Decimal


class CurrencyTable:
    def __init__(self, rates: Iterable[Rate]) -> None:
        self.by_code = {r.code.upper(): r for r in rates}
        self.by_id = {r.id: r for r in self.by_code.values()}
        defaults = [r for r in self.by_code.values() if r.rate == ONE]
        self.default_code = defaults[0].code if len(defaults) == 1 else None

    @classmethod
    def from_whmcs(cls, currencies: Iterable[Any]) -> CurrencyTable:
        """From ``WhmcsClient.get_currencies()`` (objects with id, code, rate) or plain dicts."""
        out = []
        for c in currencies:
            data: Mapping[str, Any] = c if isinstance(c, Mapping) else vars(c)
            out.append(Rate(int(data["id"]), str(data["code"]).upper(), Decimal(str(data["rate"]))))
        return cls(out)

    def to_list(self) -> list[dict[str, Any]]:
        return [{"id": r.id, "code": r.code, "rate": str(r.rate)} for r in self.by_code.values()]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> CurrencyTable:
        return cls(Rate(int(i["id"]), str(i["code"]).upper(), Decimal(str(i["rate"]))) for i in items)

    def code_of(self, client: Mapping[str, Any]) -> str:
        """The WHMCS client's currency code (GetClientsDetails ``currency_code``, else its ``currency`` id)."""
        code = str(client.get("currency_code") or "").strip().upper()
        if code:
            return code
        cid = client.get("currency")
        if cid is not None and int(cid) in self.by_id:
            return self.by_id[int(cid)].code
        if self.default_code:
            return self.default_code
        raise ConfigurationError("The WHMCS client has no currency and WHMCS has no default currency.")

    def factor(self, source: str, target: str) -> Decimal:
        """How many ``target`` units one ``source`` unit is worth (1 when they are the same)."""
        source, target = source.upper(), target.upper()
        if source == target:
            return ONE
        missing = [c for c in (source, target) if c not in self.by_code]
        if missing:
            raise ConfigurationError(
                f"WHMCS has no currency {missing[0]}: add it (with its rate) in WHMCS to bill this account.")
        with localcontext() as ctx:
            ctx.prec = 40
            return self.by_code[target].rate / self.by_code[source].rate

    def convert(self, amount: Decimal, source: str, target: str) -> tuple[Decimal, Decimal]:
        """``(exact converted amount, factor)``: unrounded, so that the line is rounded only once."""
        factor = self.factor(source, target)
        if factor == ONE:
            return amount, ONE
        with localcontext() as ctx:
            ctx.prec = 50
            rf, rt = self.by_code[source.upper()].rate, self.by_code[target.upper()].rate
            return amount * rt / rf, factor


def conversion_note(source_total: Decimal, source: str, target: str, factor: Decimal) -> str:
    """What the description says about a conversion: the original amount and the rate used."""
    shown = factor.quantize(Decimal("0.000001")).normalize()
    return f"converted from {fmt2(source_total)} {source.upper()} at 1 {source.upper()} = {shown:f} {target.upper()}"
