"""Issue 12: usage so far and billing history in the client area and the admin tab, and the InvoicePaid hook.

The module runs for real (tests/php/driver.php, php-cli) against a tiny recording backend that answers
`/v1/accounts/overview` with API.md section 3's additions (`usage_by_product`, `usage_as_of`, `billed`, and
`attention` for the admin tab); computestacks_ClientArea()'s vars are then rendered by Debian's Smarty 3
(tests/php/test_template.py) and the HTML is read back: text, order, the SVG chart's geometry, escaping.
The InvoicePaid hook posts to the same kind of recorder, which checks API.md section 1's signature on its own.
One test renders the client area in Bootstrap pages in headless Chromium: artifacts/clientarea-usage.png
(Twenty-One, Bootstrap 4) and artifacts/clientarea-usage-six.png (Six, Bootstrap 3).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.php.test_template import SMARTY, parse, render_clientarea
from tests.support.php_module import OVERVIEW, Recorded

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRIVER = HERE / "driver.php"
PHP = shutil.which("php")
SECRET = "usage-views-signing-secret-5c1e"
OTHER_SECRET = "usage-views-other-backend-secret-9d2a"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.php,
    pytest.mark.skipif(PHP is None, reason="php-cli is not installed (apt-get install php-cli php-curl)"),
]
needs_smarty = pytest.mark.skipif(not SMARTY.is_file(), reason="Debian's smarty3 is not installed (apt-get install "
                                                               "smarty3)")


# ---------------------------------------------------------------------------------------- recording backend


@dataclass
class Recorder:
    """Answers each route with what it was told (200 `{"result": "success"}` otherwise); records requests."""

    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, route: str, body: dict[str, Any], status: int = 200) -> None:
        self.answers[route] = (status, body)


def _start(recorder: Recorder) -> Recorder:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.requests.append(Recorded(self.path, dict(self.headers.items()), body))
            status, answer = recorder.answers.get(self.path, (200, {"result": "success"}))
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    recorder.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=recorder.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return recorder


def _serving() -> Iterator[Recorder]:
    recorder = _start(Recorder())
    yield recorder
    assert recorder.server is not None
    recorder.server.shutdown()
    recorder.server.server_close()


@pytest.fixture
def backend() -> Iterator[Recorder]:
    yield from _serving()


@pytest.fixture
def other_backend() -> Iterator[Recorder]:
    yield from _serving()


def run_driver(api_host: str, scenario: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
    """tests/php/driver.php's report; any PHP notice or warning fails the test."""
    assert PHP is not None
    env = {**os.environ, "CSW_API_HOST": api_host, "CSW_SIGNING_SECRET": secret, "CSW_SCENARIO": json.dumps(scenario)}
    proc = subprocess.run([PHP, "-d", "display_errors=stderr", "-d", "error_reporting=-1", str(DRIVER)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout[-2000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["php_errors"] == [], report["php_errors"]
    assert proc.stderr.strip() == "", proc.stderr
    assert report["log_audit"]["leaks"] == [] and report["log_audit"]["unlisted"] == [], report["log_audit"]
    return report


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


def expected_signature(secret: str, timestamp: str, route: str, body: bytes) -> str:
    """API.md section 1, written out here rather than imported, so the check is independent of the module."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + route.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def assert_signed(request: Recorded, route: str, secret: str) -> None:
    timestamp = request.headers.get("X-CSW-Timestamp", "")
    assert timestamp.isdigit() and abs(int(timestamp) - time.time()) <= 300, request.headers
    assert request.headers.get("X-CSW-Signature") == expected_signature(secret, timestamp, route, request.body)
    assert request.headers.get("Content-Type", "").startswith("application/json")


# ------------------------------------------------------------------------------------------- overviews

# The contract tests' overview (tests/support/php_module.py) with this month's money
BASE_OVERVIEW: dict[str, Any] = {**OVERVIEW, "run_rate": "31.20", "current_usage": "9.45",
                                 "run_rate_display": "€31.20", "current_usage_display": "€9.45"}
USAGE = [
    {"product": "Containers (2 vCPU)", "quantity": "412.500000", "amount": "6.30", "amount_display": "€6.30"},
    {"product": "Block storage", "quantity": "120", "amount": "2.40", "amount_display": "€2.40"},
    {"product": "Bandwidth", "quantity": "3.25", "amount": "0.75", "amount_display": "€0.75"},
]


def periods_back(n: int, newest: tuple[int, int] = (2026, 11)) -> list[str]:
    """n periods "YYYY-MM", newest first."""
    year, month = newest
    out = []
    for _ in range(n):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


def billed_lines(n_periods: int, *, currency: str = "EUR") -> list[dict[str, Any]]:
    """Two lines a period (containers, storage), newest period first; period i totals 10 + i euros."""
    lines: list[dict[str, Any]] = []
    billable = 500
    for i, period in enumerate(periods_back(n_periods)):
        total_cents = (10 + i) * 100 + 5
        lines.append({"period": period, "product": "Containers (2 vCPU)", "amount": f"{(total_cents - 240) / 100:.2f}",
                      "currency": currency, "billableid": billable})
        lines.append({"period": period, "product": "Block storage", "amount": "2.40", "currency": currency,
                      "billableid": billable - 1})
        billable -= 2
    return lines


def overview(**extra: Any) -> dict[str, Any]:
    return {**BASE_OVERVIEW, "usage_by_product": USAGE, "usage_as_of": "2026-12-02T09:15:00Z",
            "billed": billed_lines(12), **extra}


def client_area(backend: Recorder, answer: dict[str, Any], *, tab: bool = True) -> tuple[dict[str, Any], str,
                                                                                      dict[str, str] | None]:
    """computestacks_ClientArea()'s vars, their HTML (Smarty), and AdminServicesTabFields() for `answer`."""
    backend.answer("/v1/accounts/overview", answer)
    scenario = {"steps": [{"name": "ca", "fn": "ClientArea"}] + ([{"name": "tab", "fn": "AdminServicesTabFields"}]
                                                                 if tab else [])}
    s = steps(run_driver(backend.host, scenario))
    result = s["ca"]["result"]
    assert result["templatefile"] == "clientarea" and result["vars"]["error"] == "", result
    variables: dict[str, Any] = result["vars"]
    return variables, render_clientarea(variables), s["tab"]["result"] if tab else None


class _Svg(HTMLParser):
    """Every element under the chart's <svg>, with its attributes and own text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.svg_attrs: dict[str, str] = {}
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self.svg_attrs = a
            self._depth = 1
            return
        if self._depth:
            self._depth += 1
            self.elements.append((tag, a, []))

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth and self.elements and data.strip():
            self.elements[-1][2].append(data.strip())

    def of_class(self, cls: str) -> list[tuple[dict[str, str], str]]:
        return [(a, " ".join(t)) for tag, a, t in self.elements if cls in a.get("class", "").split()]


def svg(html: str) -> _Svg:
    p = _Svg()
    p.feed(html)
    p.close()
    return p


def texts(html: str, cls: str) -> list[str]:
    """The text of each element of class `cls`, in document order."""

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[list[str]] = []
            self.stack: list[bool] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            hit = cls in (dict(attrs).get("class") or "").split()
            self.stack.append(hit)
            if hit:
                self.found.append([])

        def handle_endtag(self, tag: str) -> None:
            if self.stack:
                self.stack.pop()

        def handle_data(self, data: str) -> None:
            if any(self.stack) and self.found:
                self.found[-1].append(data)

    c = Collect()
    c.feed(html)
    return [" ".join("".join(parts).split()) for parts in c.found]


# --------------------------------------------------------------------------------------- client area


@needs_smarty
def test_usage_table_and_twelve_billed_periods_in_euro(backend: Recorder) -> None:
    # Given an EUR account with three products used this period and twelve billed months (two lines each)
    variables, html, _ = client_area(backend, overview(), tab=False)

    # Then the usage table lists the products largest first, with the backend's amounts and tidy quantities
    assert texts(html, "computestacks-usage-product") == ["Containers (2 vCPU)", "Block storage", "Bandwidth"]
    assert texts(html, "computestacks-usage-quantity") == ["412.5", "120", "3.25"]
    assert texts(html, "computestacks-usage-amount") == ["€6.30", "€2.40", "€0.75"]
    # "as of" is a readable time, never the raw ISO string
    assert texts(html, "computestacks-usage-as-of") == ["As of 2 Dec 2026, 09:15 UTC; not yet invoiced."]
    assert "2026-12-02T09:15" not in html

    # And the chart has one bar per month, oldest on the left, each the sum of that month's lines
    chart = svg(html)
    assert chart.svg_attrs["viewbox"] == "0 0 720 220" and chart.svg_attrs["role"] == "img"
    bars = [a for a, _ in chart.of_class("computestacks-bar")]
    assert len(bars) == 12
    months = [t for _, t in chart.of_class("computestacks-bar-month")]
    assert months == ["Dec", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov"]
    assert [t for _, t in chart.of_class("computestacks-bar-year")] == ["2025", "2026"]  # first bar, then January
    amounts = [t for _, t in chart.of_class("computestacks-bar-amount")]
    assert amounts == [f"€{10 + i}.05" for i in range(11, -1, -1)]  # Dec 2025 was 21.05, Nov 2026 10.05
    # heights are proportional to the sums, the largest filling the plot (160 units above the baseline at 184)
    heights = [float(b["height"]) for b in bars]
    assert heights[0] == 160.0
    for h, amount in zip(heights, amounts, strict=True):
        assert h == pytest.approx(160 * float(amount[1:]) / 21.05, abs=0.06)
    for b in bars:
        assert float(b["y"]) + float(b["height"]) == pytest.approx(184)
    xs = [float(b["x"]) for b in bars]
    assert xs == sorted(xs) and xs[0] >= 0 and xs[-1] + float(bars[-1]["width"]) <= 720
    assert texts(html, "computestacks-chart-caption") == ["Amount billed per month, the last 12 months billed."]
    # each month carries a tooltip with its full name and amount
    assert [t for tag, _, t in chart.elements if tag == "title"][1:3] == [["December 2025: €21.05"],
                                                                          ["January 2026: €20.05"]]

    # And every billed line is listed, newest first, in the account's currency
    assert len(texts(html, "computestacks-billed-line")) == 24
    assert texts(html, "computestacks-billed-period")[:2] == ["November 2026", "November 2026"]
    assert texts(html, "computestacks-billed-amount")[:2] == ["€7.65", "€2.40"]
    assert "computestacks-other-currency" not in html
    # no script, nothing fetched: the picture is the template's own SVG
    assert "<script" not in html and "src=" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    # the operator's notes never reach the client's page
    assert "attention" not in variables


@needs_smarty
def test_more_than_twelve_periods_shows_the_newest_twelve(backend: Recorder) -> None:
    _, html, _ = client_area(backend, overview(billed=billed_lines(15)), tab=False)
    chart = svg(html)
    assert len(chart.of_class("computestacks-bar")) == 12
    assert [t for _, t in chart.of_class("computestacks-bar-month")][0] == "Dec"  # Dec 2025 .. Nov 2026
    assert [t for _, t in chart.of_class("computestacks-bar-year")] == ["2025", "2026"]


@needs_smarty
def test_the_backends_period_sums_draw_twelve_bars_where_billed_holds_only_twelve_lines(backend: Recorder) -> None:
    # Given a two-product account: `billed` is capped at 12 lines (6 periods), billed_periods has 12 periods
    lines = billed_lines(6)
    sums = [{"period": p, "amount": f"{10 + i}.05", "currency": "EUR"} for i, p in enumerate(periods_back(12))]
    _, html, _ = client_area(backend, overview(billed=lines, billed_periods=sums), tab=False)
    # Then the chart has the 12 periods, oldest first, with the backend's sums, and the lines stay listed
    chart = svg(html)
    assert len(chart.of_class("computestacks-bar")) == 12
    amounts = [t for _, t in chart.of_class("computestacks-bar-amount")]
    assert amounts[0] == "€21.05" and amounts[-1] == "€10.05"
    listed = html[html.index("computestacks-billed-details"):]
    assert listed.count("Containers (2 vCPU)") == 6 and listed.count("Block storage") == 6


@needs_smarty
def test_one_billed_period_is_one_centred_bar(backend: Recorder) -> None:
    _, html, _ = client_area(backend, overview(billed=billed_lines(1)), tab=False)
    chart = svg(html)
    (bar,) = [a for a, _ in chart.of_class("computestacks-bar")]
    assert float(bar["x"]) + float(bar["width"]) / 2 == pytest.approx(360)  # the middle of the 720-wide chart
    assert bar["height"] == "160"
    assert texts(html, "computestacks-chart-caption") == ["Amount billed for the last month billed."]
    assert [t for _, t in chart.of_class("computestacks-bar-amount")] == ["€10.05"]
    assert [t for _, t in chart.of_class("computestacks-bar-month")] == ["Nov"]
    assert [t for _, t in chart.of_class("computestacks-bar-year")] == ["2026"]


@needs_smarty
def test_nothing_billed_and_nothing_used_yet(backend: Recorder) -> None:
    _, html, tab = client_area(backend, overview(usage_by_product=[], billed=[]))
    assert "<svg" not in html
    assert texts(html, "computestacks-billed-none") == ["Nothing has been billed for usage yet."]
    assert texts(html, "computestacks-usage-none") == ["No usage so far this period."]
    assert texts(html, "computestacks-billed-line") == []
    assert tab is not None
    assert tab["Billed Periods"] == "Nothing billed yet." and tab["Last Billed"] == "Nothing billed yet."
    assert tab["Needs Attention"] == "None."  # `attention` absent: an older backend, treated as none


@needs_smarty
def test_a_backend_without_the_usage_fields_shows_what_it_did_before(backend: Recorder) -> None:
    _, html, tab = client_area(backend, dict(BASE_OVERVIEW))
    assert "Usage This Period" not in html and "Billing History" not in html and "<svg" not in html
    assert texts(html, "computestacks-current-usage") == ["€9.45"]
    assert tab is not None and set(tab) == {"Username", "ComputeStacks user id", "Status", "Projects", "Services",
                                            "Estimated Monthly", "Current Usage"}


@needs_smarty
def test_a_line_in_another_currency_is_listed_but_not_summed(backend: Recorder) -> None:
    # Given a client whose currency was changed from USD to EUR after October was billed
    lines = billed_lines(1) + [{"period": "2026-10", "product": "Containers (2 vCPU)", "amount": "50.00",
                                "currency": "USD", "billableid": 400}]
    _, html, tab = client_area(backend, overview(billed=lines))
    chart = svg(html)
    assert [t for _, t in chart.of_class("computestacks-bar-amount")] == ["€10.05"]
    assert texts(html, "computestacks-billed-amount") == ["€7.65", "€2.40", "50.00 USD"]
    assert texts(html, "computestacks-other-currency") == [
        "Amounts billed in a currency other than EUR are listed below but not in the chart."]
    assert tab is not None and "Billed in another currency than EUR:" in tab["Billed Periods"]
    assert "<td>October 2026</td><td>Containers (2 vCPU)</td><td class=\"text-right\">50.00 USD</td>" in (
        tab["Billed Periods"])
    # and with only such lines, no chart, but the lines are still there
    _, html, _ = client_area(backend, overview(billed=lines[2:]), tab=False)
    assert "<svg" not in html and texts(html, "computestacks-billed-amount") == ["50.00 USD"]
    assert texts(html, "computestacks-billed-none") == [
        "Your billed usage is listed below (billed in another currency than EUR)."]


@needs_smarty
def test_hostile_strings_render_as_text(backend: Recorder) -> None:
    # Given a backend answer full of markup (a product named <script>, and worse)
    hostile = overview(
        currency_symbol='<b>€</b>',
        usage_as_of='<i onmouseover="x()">soon</i>',
        usage_by_product=[{"product": "<script>alert(1)</script>", "quantity": '1"><svg onload=alert(2)>',
                           "amount": "1.00", "amount_display": '<img src=x onerror=alert(3)>'}],
        billed=[{"period": '2026-11"><script>alert(4)</script>', "product": "</svg><script>alert(5)</script>",
                 "amount": "3.00", "currency": "EUR", "billableid": 9}],
        attention=[{"ref": "<script>alert(6)</script>", "period": "2026-10", "product": "<u>x</u>",
                    "amount": "1.00", "what_to_do": '<a href="javascript:alert(7)">fix</a>'}],
    )
    _, html, tab = client_area(backend, hostile)
    # Then nothing of it is markup: the only <svg> is the chart, and no script, image or handler appears
    assert "<script" not in html and "<img" not in html and "<b>" not in html and "<i " not in html
    assert html.count("<svg") == 1 and "onload=" not in html.replace("onload=alert(2)&gt;", "")
    assert texts(html, "computestacks-usage-product") == ["<script>alert(1)</script>"]
    assert texts(html, "computestacks-usage-amount") == ["<img src=x onerror=alert(3)>"]
    assert texts(html, "computestacks-billed-product") == ["</svg><script>alert(5)</script>"]
    assert texts(html, "computestacks-usage-as-of") == ['As of <i onmouseover="x()">soon</i>; not yet invoiced.']
    assert [t for _, t in svg(html).of_class("computestacks-bar-amount")] == ["<b>€</b>3.00"]
    # And the admin tab escapes every value too
    assert tab is not None
    joined = "".join(tab.values())
    assert "<script" not in joined and "<u>" not in joined and 'href="javascript' not in joined
    assert "&lt;script&gt;alert(6)&lt;/script&gt;" in tab["Needs Attention"]
    assert "&lt;a href=&quot;javascript:alert(7)&quot;&gt;fix&lt;/a&gt;" in tab["Needs Attention"]


# ------------------------------------------------------------------------------------------- admin tab


def test_admin_tab_shows_usage_billing_status_and_lines_needing_attention(backend: Recorder) -> None:
    answer = overview(attention=[
        {"ref": "svc42:containers:2026-10", "period": "2026-10", "product": "Containers (2 vCPU)", "amount": "19.25",
         "what_to_do": "WHMCS refused the item (client closed): reopen the client, then run cswhmcs billing retry."},
    ])
    backend.answer("/v1/accounts/overview", answer)
    tab = steps(run_driver(backend.host, {"steps": [{"name": "tab", "fn": "AdminServicesTabFields"}]}))["tab"]["result"]
    assert list(tab)[:7] == ["Username", "ComputeStacks user id", "Status", "Projects", "Services",
                             "Estimated Monthly", "Current Usage"]
    assert list(tab)[7:] == ["Usage This Period", "Billed Periods", "Last Billed", "Needs Attention"]
    usage = parse(tab["Usage This Period"])
    assert "Containers (2 vCPU)" in tab["Usage This Period"] and "€6.30" in tab["Usage This Period"]
    assert "As of 2 Dec 2026, 09:15 UTC (2026-12-02T09:15:00Z)" in usage.text_by_class["small"]
    # the billed periods, newest first, with their billable items linked in the admin area (client 7)
    billed = tab["Billed Periods"]
    assert billed.index("November 2026") < billed.index("October 2026") < billed.index("December 2025")
    assert billed.count("<tr>") == 13  # header + 12 periods
    assert '<a href="clientsbillableitems.php?userid=7&amp;action=manage&amp;id=500">#500</a>' in billed
    # the last billed period and its billable items
    last = parse(tab["Last Billed"])
    assert tab["Last Billed"].startswith("November 2026 (2026-11): billable items ")
    assert [t for _, t in last.links] == ["#500", "#499"]
    assert [h for h, _ in last.links] == ["clientsbillableitems.php?userid=7&action=manage&id=500",
                                          "clientsbillableitems.php?userid=7&action=manage&id=499"]
    # the line needing an operator: its ref, period, product, amount and what to do
    attention = tab["Needs Attention"]
    for expected in ("svc42:containers:2026-10</code>", "October 2026", "Containers (2 vCPU)", "€19.25",
                     "WHMCS refused the item (client closed): reopen the client, then run cswhmcs billing retry."):
        assert expected in attention


# ----------------------------------------------------------------------------------------- InvoicePaid


def _clients_products(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"result": "success", "totalresults": len(rows), "startnumber": 0, "numreturned": len(rows),
            "products": {"product": rows}}


def _server(host: str, secret: str = SECRET) -> dict[str, Any]:
    return {"serverhostname": host, "serversecure": False, "serveraccesshash": secret,
            "serverpassword": "unused-server-password", "serverusername": "unused"}


PRODUCTS = {"tblproducts": [{"id": 3, "servertype": "computestacks", "configoption2": "on"},
                            {"id": 5, "servertype": "cpanel", "configoption2": "on"}]}
INVOICE = {"result": "success", "invoiceid": 900, "userid": 7, "status": "Paid", "items": {"item": []}}


def _paid_step(rows: list[dict[str, Any]], servers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "paid", "fn": "InvoicePaid", "vars": {"invoiceid": 900},
            "localapi": {"GetInvoice": INVOICE, "GetClientsProducts": _clients_products(rows)},
            "capsule": PRODUCTS, "module_servers": servers, **extra}


def test_invoice_paid_hook_is_registered(backend: Recorder) -> None:
    report = run_driver(backend.host, {"steps": [{"name": "hooks", "fn": "Hooks"}]})
    hooks = steps(report)["hooks"]["result"]
    assert {"point": "InvoicePaid", "priority": 1, "callable": True} in hooks
    assert {"point": "OrderPaid", "priority": 1, "callable": True} in hooks


def test_invoice_paid_forwards_the_invoice_signed_to_each_suspended_services_backend(
    backend: Recorder, other_backend: Recorder
) -> None:
    # Given client 7 with suspended ComputeStacks services on two backends, an active one, and a suspended cPanel one
    backend.answer("/v1/hooks/invoice-paid", {"result": "success", "unsuspended": [11]})
    other_backend.answer("/v1/hooks/invoice-paid", {"result": "success", "unsuspended": []})
    rows = [
        {"id": 11, "pid": 3, "orderid": 1, "serverid": 1, "status": "Suspended"},
        {"id": 12, "pid": 3, "orderid": 1, "serverid": 1, "status": "Active"},
        {"id": 13, "pid": 5, "orderid": 2, "serverid": 2, "status": "Suspended"},
        {"id": 14, "pid": 3, "orderid": 3, "serverid": 3, "status": "Suspended"},
        {"id": 15, "pid": 3, "orderid": 3, "serverid": 1, "status": "Suspended"},
    ]
    servers = {"11": _server(backend.host), "12": _server(backend.host), "15": _server(backend.host),
               "13": {"serverhostname": "cpanel.example.net", "serveraccesshash": "cpanel-hash"},
               "14": _server(other_backend.host, OTHER_SECRET)}
    # When WHMCS fires InvoicePaid for invoice 900
    report = run_driver(backend.host, {"steps": [_paid_step(rows, servers)]})
    # Then each backend gets one request signed with its own secret, carrying the hook's invoiceid
    for recorder, secret in ((backend, SECRET), (other_backend, OTHER_SECRET)):
        assert [r.path for r in recorder.requests] == ["/v1/hooks/invoice-paid"]
        assert_signed(recorder.requests[0], "/v1/hooks/invoice-paid", secret)
        assert {k: v for k, v in recorder.requests[0].json.items() if k != "csw_nonce"} == {"invoiceid": 900}
    paid = steps(report)["paid"]
    assert paid["localapi_calls"] == ["GetInvoice", "GetClientsProducts"]
    result = paid["result"]
    assert result["errors"] == [] and result["clientid"] == 7
    assert [p["serviceids"] for p in result["posted"]] == [[11, 15], [14]]
    assert [p["unsuspended"] for p in result["posted"]] == [[11], []]
    assert paid["activity"] == [{"message": "ComputeStacks: invoice #900 paid: the overdue-usage suspension of "
                                            "service #11 was lifted.", "userid": 7}]
    assert [e["action"] for e in paid["module_log"]] == ["InvoicePaid", "InvoicePaid"]


def test_invoice_paid_costs_no_backend_call_without_a_suspended_computestacks_service(backend: Recorder) -> None:
    rows = [{"id": 11, "pid": 3, "orderid": 1, "serverid": 1, "status": "Active"},
            {"id": 13, "pid": 5, "orderid": 2, "serverid": 2, "status": "Suspended"}]
    report = run_driver(backend.host, {"steps": [_paid_step(rows, {"11": _server(backend.host)}, via_hook=True)]})
    assert backend.requests == []
    paid = steps(report)["paid"]
    assert paid["result"]["hooks_called"] == 1
    assert paid["activity"] == [] and paid["module_log"] == []


def test_invoice_paid_failures_are_logged_never_thrown(backend: Recorder) -> None:
    # Given a backend that fails, then a WHMCS that cannot find the invoice, then a hook call without an invoice id
    backend.answer("/v1/hooks/invoice-paid", {"result": "error", "code": "upstream_error",
                                              "message": "WHMCS answered with an error."}, status=502)
    rows = [{"id": 11, "pid": 3, "orderid": 1, "serverid": 1, "status": "Suspended"}]
    servers = {"11": _server(backend.host)}
    scenario = {"steps": [
        _paid_step(rows, servers, name="backend_fails", via_hook=True),
        {**_paid_step(rows, servers, name="whmcs_fails", via_hook=True),
         "localapi": {"GetInvoice": {"result": "error", "message": "Invoice ID Not Found"}}},
        {**_paid_step(rows, servers, name="no_invoice", via_hook=True), "vars": {}},
    ]}
    # When the registered hook runs
    report = run_driver(backend.host, scenario)
    s = steps(report)
    # Then nothing escapes to WHMCS (the driver would report an exception), and the Activity Log says why
    assert s["backend_fails"]["result"] == {"hooks_called": 1, "returned": None}
    assert s["backend_fails"]["activity"] == [{"message": "ComputeStacks: invoice #900 was paid, but lifting an "
                                                          "overdue-usage suspension failed: WHMCS answered with an "
                                                          "error. Service #11 stays suspended: unsuspend it by hand "
                                                          "if the client has no other usage invoice overdue.",
                                               "userid": 7}]
    assert [r.path for r in backend.requests] == ["/v1/hooks/invoice-paid"]  # a 502 is not retried by the module
    assert s["whmcs_fails"]["result"]["hooks_called"] == 1
    assert [a["message"] for a in s["whmcs_fails"]["activity"]] == [
        "ComputeStacks: invoice #900 was paid, but lifting an overdue-usage suspension failed: could not read the "
        "invoice: GetInvoice failed: Invoice ID Not Found"]
    assert [a["message"] for a in s["no_invoice"]["activity"]] == [
        "ComputeStacks: invoice #0 was paid, but lifting an overdue-usage suspension failed: the hook gave no "
        "invoice id."]
    # and each failure is in the module log too, without secrets (run_driver audits every entry)
    assert [e["action"] for e in s["whmcs_fails"]["module_log"]] == ["InvoicePaid"]
    assert all(SECRET not in a["message"] for st in s.values() for a in st["activity"])


# ------------------------------------------------------------------------------------------ screenshot

# make setup's npm copies (package.json): WHMCS's Twenty-One theme is Bootstrap 4, Six is Bootstrap 3.
BOOTSTRAP4 = ROOT / "node_modules" / "bootstrap4" / "dist" / "css" / "bootstrap.min.css"
BOOTSTRAP3 = ROOT / "node_modules" / "bootstrap3" / "dist" / "css" / "bootstrap.min.css"


def _page(panel: str, css: Path, *, six: bool) -> str:
    """A WHMCS-like product details page: Six (Bootstrap 3: panels) or Twenty-One (Bootstrap 4: cards)."""
    box_open = ('<div class="panel panel-default"><div class="panel-body">' if six
                else '<div class="card mb-3"><div class="card-body">')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Product Details - Client Area</title>
<link rel="stylesheet" href="{css.as_uri()}">
<style>body {{ background: #f6f7f9; }}</style></head><body>
<nav class="navbar navbar-dark bg-dark navbar-inverse mb-4"><div class="container">
  <span class="navbar-brand">Example Hosting</span></div></nav>
<div class="container"><div class="row">
  <div class="col-md-3 col-sm-3"><div class="list-group">
    <span class="list-group-item active">Information</span><span class="list-group-item">Upgrade/Downgrade</span>
  </div></div>
  <div class="col-md-9 col-sm-9">
    {box_open}<h4>Cloud Hosting</h4><div class="text-muted">Registration Date 01/03/2024</div></div></div>
    {panel}
  </div>
</div></div></body></html>
"""


def realistic_billed() -> list[dict[str, Any]]:
    """Twelve months of a growing account (for the picture: uneven months, one product added in March)."""
    containers = ["18.40", "21.75", "19.90", "24.10", "26.35", "25.80", "31.20", "29.95", "34.60", "33.10", "38.45",
                  "41.05"]
    lines: list[dict[str, Any]] = []
    for i, period in enumerate(reversed(periods_back(12))):
        lines.append({"period": period, "product": "Containers (2 vCPU)", "amount": containers[i], "currency": "EUR",
                      "billableid": 300 + 2 * i})
        if i >= 3:
            lines.append({"period": period, "product": "Block storage", "amount": f"{2 + i * 0.35:.2f}",
                          "currency": "EUR", "billableid": 301 + 2 * i})
    return list(reversed(lines))


def _shoot(html: str, out: Path) -> tuple[str, Any]:
    """(the DOM, the decoded PNG or None) via tests/chromium.py, or a minimal launch when it is absent."""
    with tempfile.TemporaryDirectory(prefix="cs-usage-shot-") as tmp:
        doc = Path(tmp) / "page.html"
        doc.write_text(html, encoding="utf-8")
        try:
            from tests.chromium import read_png, render
        except ImportError:  # tests/chromium.py moved: launch Chromium here
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            assert chromium is not None
            out.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   "--window-size=1200,1500", f"--user-data-dir={Path(tmp) / 'profile'}",
                                   f"--screenshot={out}", doc.as_uri()], capture_output=True, text=True, timeout=120,
                                  check=False)
            assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
            return "", None
        rendered = render(doc, screenshot=out, dump_dom=True, width=1200, height=1500)
        assert rendered.returncode == 0 and out.is_file(), rendered.stderr[-2000:]
        return rendered.dom, read_png(out)


@needs_smarty
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium is missing: apt-get install -y chromium")
def test_screenshot_of_the_client_area_in_twenty_one_and_six(backend: Recorder) -> None:
    # (make setup installs both; a missing one is a set-up error, not a reason to skip a theme)
    assert BOOTSTRAP4.is_file() and BOOTSTRAP3.is_file(), "Bootstrap 4 and 3 CSS missing: run make setup (npm install)"
    _, panel, _ = client_area(backend, overview(billed=realistic_billed()), tab=False)
    shots = [(BOOTSTRAP4, False, ARTIFACTS / "clientarea-usage.png"),
             (BOOTSTRAP3, True, ARTIFACTS / "clientarea-usage-six.png")]
    # the themes' pictures are taken side by side: each Chromium launch takes seconds
    results: dict[Path, tuple[str, Any]] = {}
    errors: list[BaseException] = []

    def shoot(css: Path, six: bool, out: Path) -> None:
        try:
            results[out] = _shoot(_page(panel, css, six=six), out)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=shoot, args=shot) for shot in shots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for out, (dom, image) in results.items():
        if image is None:
            continue
        # the chart was drawn (its bars' colour covers a real area) and the page is not blank
        assert image.count((0x3B, 0x78, 0xB9), tolerance=6) > 12 * 30 * 20, out
        assert image.distinct_colours() > 20, out
        assert dom.count('class="computestacks-bar"') == 12 and "Usage This Period" in dom
