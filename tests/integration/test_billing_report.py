"""`cswhmcs billing run/preview --report FILE.html` (API.md section 5): the report of real runs against the
sandboxes and DynamoDB Local, opened in headless Chromium (Debian's `chromium`, one launch: its DOM and a
screenshot, kept as artifacts/billing-report.png)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from cswhmcs.billing.usage import iso
from tests.chromium import find_chromium, read_png, render

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "artifacts" / "billing-report.png"
SEP_END = datetime(2026, 9, 30, 23, tzinfo=UTC)
OCT_END = datetime(2026, 10, 31, 23, tzinfo=UTC)
NOV_END = datetime(2026, 11, 30, 23, tzinfo=UTC)
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
BAR = (0x2F, 0x6F, 0xDE)  # report.py: the billed bars' fill
PREVIEW_BAR = (0x9D, 0xBC, 0xF2)  # the hatching of a preview's bars


@dataclass
class Account:
    service_id: int
    cs_user_id: int
    email: str


class Seed:
    def __init__(self, tables: Any, cs: Any, whmcs: Any) -> None:
        self.tables, self.cs, self.whmcs = tables, cs, whmcs
        self._service, self._sp = 500, 9000

    def account(self, email: str, currency: str) -> Account:
        self._service += 1
        user = self.cs.add_user(email, "Ann", "Lee", currency=currency, external_id=str(self._service))
        client = self.whmcs.add_client("Ann", "Lee", f"client{self._service}@example.com", currency_code=currency)
        self.tables.resource().Table(self.tables.accounts).put_item(Item={
            "service_id": self._service, "cs_user_id": int(user["id"]), "email": email, "client_id": int(client["id"]),
            "currency": currency})
        return Account(self._service, int(user["id"]), email)

    def usage(self, acct: Account, product: str, *, start: datetime, days: int, total: str) -> None:
        """One row a day ending ``start`` + 1..``days`` days."""
        self._sp += 1
        for d in range(1, days + 1):
            end = start + timedelta(days=d)
            self.cs.add_usage(acct.cs_user_id, product_name=product, subscription_product_id=self._sp, total=total,
                              qty="1", period_start=end - timedelta(days=1), period_end=end,
                              product_label=product.title())


@pytest.fixture
def cli_env(tables: Any, cs_sandbox: Any, whmcs_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seed]:
    from cswhmcs.config import get_settings
    from tests.conftest import stack_env

    for key, value in stack_env(tables, cs_sandbox, whmcs_sandbox, WHMCS_TIMEOUT="0.5").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WHMCS_RECEIVER_URL", raising=False)
    get_settings.cache_clear()
    yield Seed(tables, cs_sandbox, whmcs_sandbox)
    get_settings.cache_clear()


class _Text(HTMLParser):
    """The text of a page and its tags (to check a report without a browser)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html_text: str) -> _Text:
    p = _Text()
    p.feed(html_text)
    return p


def test_report_of_a_run_and_a_preview_in_chromium(cli_env: Seed, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from cswhmcs.cli import main

    seed = cli_env
    # Given a USD and an EUR account billed for September, one with markup in its account and product names,
    usd = seed.account("ann.usd@example.com", "USD")
    eur = seed.account(f"eur{HOSTILE}@example.com", "EUR")
    tiny = seed.account("tiny@example.com", "USD")
    sep1 = SEP_END - timedelta(days=29, hours=23)  # 1 September 00:00
    seed.usage(usd, "containerm", start=sep1, days=29, total="1.25")  # 36.25 USD
    seed.usage(eur, HOSTILE, start=sep1, days=29, total="0.50")  # 14.50 EUR
    assert main(["billing", "run", "--as-of", iso(SEP_END)]) == 0
    # and October's usage (a sub-cent product: carried over), billed while WHMCS times out once after creating
    # an item (that line needs attention),
    oct1 = SEP_END + timedelta(hours=1)
    seed.usage(usd, "containerm", start=oct1, days=30, total="2.00")
    seed.usage(eur, HOSTILE, start=oct1, days=30, total="1.00")
    seed.usage(tiny, "storage", start=oct1, days=30, total="0.0001")  # 0.0030 USD: under a cent
    seed.whmcs.timeout_after_commit_next(1, 1.0, actions=["AddBillableItem"])
    run_report = tmp_path / "run.html"
    capsys.readouterr()

    # When the October run writes its report
    assert main(["billing", "run", "--as-of", iso(OCT_END), "--report", str(run_report)]) == 3
    assert f"report written to {run_report}" in capsys.readouterr().err

    # Then the file names the run's totals, the line needing attention by its ref and the carried amount
    assert main(["billing", "attention", "--json"]) == 3
    attention = json.loads(capsys.readouterr().out)
    assert len(attention) == 1
    ref = attention[0]["ref"]
    # (October: 60.00 USD and 30.00 EUR; the line needing attention is not among the items created)
    created = {"USD": Decimal("60.00"), "EUR": Decimal("30.00")}
    assert Decimal(attention[0]["amount"]) == created.pop(attention[0]["currency"])
    run_html = run_report.read_text(encoding="utf-8")
    run_text = " ".join(parse(run_html).text)
    assert "Billing run 2026-10" in run_text and ref in run_text and "1 line(s) need attention" in run_text
    for currency, amount in created.items():
        assert f"{amount:.2f} {currency}" in run_text
    assert "0.0030 USD" in run_text and "Storage" in run_text and "carried over" in run_text
    # and it is self-contained: no script, nothing loaded from anywhere
    tags = parse(run_html).tags
    assert not [t for t, _ in tags if t in ("script", "img", "link", "iframe", "object")]
    assert not [a for _, attrs in tags for a in attrs if a in ("src", "href") or a.startswith("on")]

    # When the operator previews November
    nov1 = OCT_END + timedelta(hours=1)
    seed.usage(usd, "containerm", start=nov1, days=10, total="3.00")  # 30.00 USD
    seed.usage(eur, HOSTILE, start=nov1, days=5, total="0.75")  # 3.75 EUR
    items_before = len(seed.whmcs.billable_items)
    preview_report = tmp_path / "preview.html"
    assert main(["billing", "preview", "--as-of", iso(NOV_END), "--report", str(preview_report)]) == 3
    assert len(seed.whmcs.billable_items) == items_before  # a preview sends nothing

    # Then headless Chromium (one launch) renders it: the text, the chart, the escaped names
    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; `make setup` installs it): "
                    "the report was checked as text only")
    page = render(preview_report, screenshot=ARTIFACT, width=1200, height=1700)
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.dom
    assert "Billing preview 2026-11" in dom and "30.00 USD" in dom and "3.75 EUR" in dom and ref in dom
    assert "would be billed by this preview" in dom
    # the chart: one per currency, September and October billed, November's preview hatched
    assert dom.count('<svg xmlns="http://www.w3.org/2000/svg" class="bars"') == 2
    assert len(re.findall(r'<rect class="bar billed"', dom)) >= 3 and 'class="bar preview"' in dom
    assert "2026-09: 36.25 USD billed" in dom
    # the hostile names are text: no element came out of them, the title is the report's own
    assert "<script" not in dom and "<img" not in dom and "pwned" not in dom.split("</title>")[0]
    assert "&lt;script&gt;document.title=" in dom
    # and the screenshot is not blank: the bars' colours are there
    image = read_png(ARTIFACT)
    assert image.distinct_colours() > 20
    assert image.count(BAR) > 400
    assert image.count(PREVIEW_BAR, tolerance=12) > 50


def test_report_path_that_cannot_be_written_is_refused_before_the_run(cli_env: Seed, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from cswhmcs.cli import main

    # Given an account with usage
    acct = cli_env.account("ann@example.com", "USD")
    cli_env.usage(acct, "containerm", start=SEP_END - timedelta(days=3), days=2, total="1.00")

    # When the report would go to a directory that does not exist
    code = main(["billing", "run", "--as-of", iso(SEP_END), "--report", str(tmp_path / "nope" / "r.html")])

    # Then it says so, exits 2, and nothing was billed
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_env.whmcs.billable_items == []
