"""The billing report's page (billing/report.py), rendered from hand-made data: escaping, the chart's periods
and scale, empty reports. (The report of real runs, in Chromium: tests/integration/test_billing_report.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from cswhmcs.billing.report import AttentionRow, Pending, ReportData, chart_svg, render_html
from cswhmcs.billing.worker import LineOutcome

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def data(**kw: Any) -> ReportData:
    base: dict[str, Any] = dict(
        run_id="bill#2026-10-31T23:00:00Z", kind="bill", as_of=datetime(2026, 10, 31, 23, tzinfo=UTC),
        period="2026-10", dry_run=False, generated_at=datetime(2026, 11, 1, tzinfo=UTC), accounts=1,
        accounts_read=1, rows_absorbed=3, lines=[], line_count=0, totals={}, attention=[], failed=[], carried=[],
        held=[], history={})
    base.update(kw)
    return ReportData(**base)


def line(**kw: Any) -> LineOutcome:
    base: dict[str, Any] = dict(ref="7:2026-10:3", status="created", service_id=5, client_id=9, email="a@b.c",
                                product="Container M", period="2026-10", amount=Decimal("12.30"), currency="EUR",
                                source_total=Decimal("12.3"), source_currency="EUR")
    base.update(kw)
    return LineOutcome(**base)


def test_every_value_from_the_data_is_text() -> None:
    # Given markup in every field that comes from ComputeStacks, WHMCS or the ledger
    page = render_html(data(
        lines=[line(email=EVIL, product=EVIL, ref=EVIL)], line_count=1, totals={"EUR": Decimal("12.30")},
        attention=[AttentionRow(**vars(line(ref=EVIL, status="attention", email=EVIL, product=EVIL,
                                            amount=Decimal("1"), reason=EVIL)), source="this run")],
        failed=[(6, 8, EVIL)], carried=[Pending(5, 7, EVIL, Decimal("0.004"), "EUR")],
        history={"EUR": {"2026-09": Decimal("3")}}, skipped=EVIL))

    # When the page is parsed
    parsed = Tags()
    parsed.feed(page)

    # Then no element or attribute came out of the data, and the text reads as it was
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on") or a in ("src", "href")]
    assert parsed.text.count('<script>alert("x")</script>') >= 6
    assert "&amp;amp;" in page  # escaped once more: shown as "&amp;", not as "&"


def test_the_chart_shows_every_month_up_to_twelve_and_a_preview_on_top() -> None:
    # Given 14 months billed with a gap, and a preview of the next month
    billed = {f"2025-{m:02d}": Decimal(m) for m in range(1, 13) if m != 6}
    billed |= {"2026-01": Decimal("20"), "2026-02": Decimal("7.5")}
    svg = chart_svg("USD", billed, {"2026-03": Decimal("4.25")})

    # Then the last 12 months are drawn (the gap as an empty slot), the preview stacked on its month
    labels = re.findall(r">(\d\d-\d\d)</text>", svg)
    assert labels == [f"25-{m:02d}" for m in range(4, 13)] + ["26-01", "26-02", "26-03"]
    assert len(re.findall(r'class="bar billed"', svg)) == 10  # 2025-06 has no bar
    assert svg.count('class="bar preview"') == 1 and "2026-03: 4.25 USD would be billed" in svg
    # and the scale is round and above the highest bar (20)
    ticks = [Decimal(t) for t in re.findall(r'text-anchor="end"[^>]*>([\d.]+)</text>', svg)]
    assert ticks == [0, 5, 10, 15, 20]


def test_an_empty_run_says_so() -> None:
    page = render_html(data(dry_run=True))
    assert "Nothing billed yet" in page and "No billable item." in page and "Nothing needs attention." in page
    assert "Preview: nothing was written" in page
