"""Month-end billing against the sandboxes: ``BillingStack`` (the ComputeStacks and WHMCS sandboxes over
HTTP, fresh DynamoDB Local tables, the real clients through ``build_runtime``) and a seeded month of usage.
Used by the month-end, close, receiver, fault, deadline, credential-rotation and concurrency tests."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.run import Runtime, Summary, build_runtime, run_billing

OCT_END = datetime(2026, 10, 31, 23, tzinfo=UTC)
NOV_END = datetime(2026, 11, 30, 23, tzinfo=UTC)
RATES = {"USD": Decimal(1), "EUR": Decimal("0.92"), "GBP": Decimal("0.79")}
REF = re.compile(r"\[ref (\d+:\d{4}-\d{2}:\d+)\]")


def cents(d: Decimal) -> Decimal:
    return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass
class Acct:
    service_id: int
    cs_user_id: int
    client_id: int
    email: str
    cs_currency: str
    client_currency: str
    rows: list[dict[str, Any]] = field(default_factory=list)


class BillingStack:
    """The sandboxes, fresh tables and helpers to seed accounts and usage."""

    def __init__(self, tables: Any, cs: Any, whmcs: Any, **settings: Any) -> None:
        self.tables, self.cs, self.whmcs = tables, cs, whmcs
        self.accounts: list[Acct] = []
        self._service = 100
        self._sp = 1000
        self.settings = tables.settings(
            CS_API_URL=cs.url, CS_API_KEY=cs.api_key, CS_API_SECRET=cs.api_secret,
            WHMCS_API_URL=whmcs.url, WHMCS_API_IDENTIFIER=whmcs.identifier, WHMCS_API_SECRET=whmcs.secret,
            CS_TIMEOUT=2, WHMCS_TIMEOUT=2, CONNECT_TIMEOUT=1, **settings)

    def runtime(self, **kw: Any) -> Runtime:
        # Pacing effectively off (its own test sets a real budget); 4 accounts at once.
        options = kw.pop("options", BillingOptions(cs_limit=10**7, whmcs_rate=10_000, whmcs_burst=100, concurrency=4))
        return build_runtime(self.settings, options=options, **kw)

    def add_account(self, cs_currency: str = "USD", client_currency: str | None = None) -> Acct:
        self._service += 1
        n = self._service
        email = f"user{n}@example.com"
        user = self.cs.add_user(email, "Ann", f"User{n}", currency=cs_currency, external_id=str(n))
        client = self.whmcs.add_client("Ann", f"User{n}", f"client{n}@example.com",
                                       currency_code=client_currency or cs_currency)
        acct = Acct(n, int(user["id"]), int(client["id"]), email, cs_currency, client_currency or cs_currency)
        self.tables.resource().Table(self.tables.accounts).put_item(Item={
            "service_id": n, "cs_user_id": acct.cs_user_id, "email": email, "client_id": acct.client_id,
            "currency": cs_currency})
        self.accounts.append(acct)
        return acct

    def add_usage(self, acct: Acct, product: str, *, start: datetime, end: datetime, total: str,
                  sp: int | None = None, every: timedelta = timedelta(hours=3), qty: str = "1") -> int:
        """Rows every ``every`` ending after ``start`` up to ``end``; returns the subscription product id."""
        if sp is None:
            self._sp += 1
            sp = self._sp
        t = start + every
        while t <= end:
            row = self.cs.add_usage(acct.cs_user_id, product_name=product, subscription_product_id=sp, total=total,
                                    qty=qty, period_start=t - every, period_end=t, product_label=product.title())
            acct.rows.append({"id": row["id"], "product": product, "total": Decimal(total), "qty": Decimal(qty),
                              "end": t})
            t += every
        return sp

    def run(self, as_of: datetime, runtime: Runtime | None = None, **kw: Any) -> Summary:
        rt = runtime or self.runtime()
        try:
            return run_billing(as_of=as_of, ledger=rt.ledger, accounts=rt.accounts, deps=rt.deps, **kw)
        finally:
            if runtime is None:
                rt.close()

    # ------------------------------------------------------------------ checks

    def items_by_ref(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in self.whmcs.billable_items:
            match = REF.search(item["description"])
            assert match, item["description"]
            out[match.group(1)].append(item)
        return out

    def expected(self, acct: Acct, period: str, lo: datetime, hi: datetime) -> dict[str, Decimal]:
        """Per product: the exact sum of rows with lo < end <= hi, converted and rounded once."""
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for r in acct.rows:
            if lo < r["end"] <= hi:
                sums[r["product"]] += r["total"]
        factor = RATES[acct.client_currency] / RATES[acct.cs_currency]
        return {p: cents(s * factor) for p, s in sums.items() if s * factor >= Decimal("0.01")}


def seed_month(stack: BillingStack) -> list[Acct]:
    usd = stack.add_account("USD")
    eur = stack.add_account("EUR")
    gbp_client = stack.add_account("EUR", "GBP")  # converted
    tiny = stack.add_account("USD")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    stack.add_usage(usd, "containerm", start=start, end=OCT_END + timedelta(hours=1), total="0.02054795")
    stack.add_usage(usd, "containerm", start=start, end=OCT_END, total="0.01027397")  # a second container
    stack.add_usage(usd, "storage", start=start, end=OCT_END, total="0.00300000", every=timedelta(hours=24))
    stack.add_usage(eur, "containerl", start=start, end=OCT_END, total="0.04109589", qty="2")
    stack.add_usage(gbp_client, "containerm", start=start + timedelta(days=10), end=OCT_END, total="0.01890411")
    stack.add_usage(tiny, "bandwidth", start=start, end=start + timedelta(hours=6), total="0.002")
    return [usd, eur, gbp_client, tiny]
