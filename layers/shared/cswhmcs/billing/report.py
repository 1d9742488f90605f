"""The billing report: ``cswhmcs billing run|preview ... --report FILE.html`` (API.md section 5).

One self-contained HTML file (inline CSS, inline SVG, no script, nothing fetched from the network) that an
operator can open, archive or mail: the run's totals per currency, its lines per account and product, the
lines needing attention with their refs, the amounts carried over (under 0.01: they stay in the running totals
for a later run) and held for the next period, and a chart of the billed totals per period.

Where the figures come from:

* the run's ``Summary`` (``billing/run.py``): its lines (created, or in a preview the ones that would be),
  totals, the lines that became ambiguous or were refused, failed accounts;
* the run's ``AccountResult`` s (``ReportCollector``, fed by the run's ``on_result``): which account and product
  each carried-over and held amount belongs to (the summary only counts them);
* the ledger (``Ledger``, DynamoDB): every line needing attention (also those from earlier runs) and the
  billed totals per period for the chart (finished lines with status ``done``; a preview adds what it would
  bill, drawn hatched).

Every value from the data is escaped (``html.escape``): an account or product name holding markup is shown as
text, never interpreted.
"""

from __future__ import annotations

import html
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cswhmcs.billing.grouping import DONE, Line
from cswhmcs.billing.messages import BILL, CLOSE, COLLECT
from cswhmcs.billing.usage import iso
from cswhmcs.billing.worker import LineOutcome
from cswhmcs.money import fmt2

ZERO = Decimal(0)
MAX_TABLE_ROWS = 10_000  # per-account lines shown; the totals always count every line
CHART_PERIODS = 12  # the chart's last N periods
PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Pending:
    """An amount of one account and product that was not billed by this run (carried over or held)."""

    service_id: int
    cs_user_id: int
    product: str
    amount: Decimal  # exact, in the ComputeStacks user's currency
    currency: str


class ReportCollector:
    """Keeps what the report needs from each account's result (pass ``add`` as the run's ``on_result``):
    the carried-over and held amounts per account and product. Thread-safe (the run's pool calls it)."""

    def __init__(self) -> None:
        self.carried: list[Pending] = []
        self.held: list[Pending] = []
        self._lock = threading.Lock()

    def add(self, result: Any) -> None:
        with self._lock:
            for product, amount, currency in result.carried:
                self.carried.append(Pending(result.service_id, result.cs_user_id, product, amount, currency))
            for product, amount, currency in result.held:
                self.held.append(Pending(result.service_id, result.cs_user_id, product, amount, currency))


@dataclass
class AttentionRow(LineOutcome):
    """A line needing attention, and where the report found it."""

    source: str = "this run"  # "this run" | "an earlier run" (still open in the ledger)


@dataclass
class ReportData:
    """Everything the page shows, gathered before rendering (``render_html`` does no I/O)."""

    run_id: str
    kind: str
    as_of: datetime
    period: str
    dry_run: bool
    generated_at: datetime
    accounts: int
    accounts_read: int
    rows_absorbed: int
    lines: list[Any]  # LineOutcome: created, or in a preview would_bill
    line_count: int
    totals: dict[str, Decimal]
    attention: list[AttentionRow]
    failed: list[tuple[int, int, str]]
    carried: list[Pending]
    held: list[Pending]
    history: dict[str, dict[str, Decimal]]  # currency -> period -> billed total (ledger)
    preview_totals: dict[str, Decimal] = field(default_factory=dict)  # what a preview adds to its period
    skipped: str = ""


# ---------------------------------------------------------------------- from the ledger


def billed_per_period(ledger: Any) -> dict[str, dict[str, Decimal]]:
    """Billed totals per currency and period: the sum of every finished line with status ``done`` (a WHMCS
    billable item exists). Reads the ledger's line items (a scan: an operator's report, not a run's path)."""
    names = {"#s": "status", "#p": "period", "#a": "amount", "#c": "currency", "#k": "sk"}
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(#k, :line) AND #s = :done",
        "ProjectionExpression": "#p, #a, #c",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {":line": "line#", ":done": DONE},
    }
    out: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    while True:
        page = ledger.table.scan(**kwargs)
        for item in page.get("Items", []):
            period, currency = str(item.get("period", "")), str(item.get("currency", ""))
            if period and currency:
                out[currency][period] += Decimal(str(item.get("amount", "0")))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return {c: dict(p) for c, p in out.items()}


def _attention_rows(summary: Any, ledger_lines: Iterable[Line]) -> list[AttentionRow]:
    rows: dict[str, AttentionRow] = {}
    for o in summary.attention:
        rows[o.ref] = AttentionRow(**vars(o), source="this run")
    for ln in ledger_lines:
        if ln.ref not in rows:
            rows[ln.ref] = AttentionRow(**vars(LineOutcome.of(ln, "attention")), source="an earlier run")
    return sorted(rows.values(), key=lambda r: (r.period, r.ref))


def build_report(summary: Any, *, ledger: Any, collector: ReportCollector | None = None,
                 now: datetime | None = None) -> ReportData:
    """Gather the report of one run: its summary (kept with ``keep_lines=True``), the collector's per-account
    amounts, and the ledger's open attention lines and billed history."""
    lines = list(summary.would_bill if summary.dry_run else summary.created)
    totals = summary.totals()
    return ReportData(
        run_id=summary.run_id, kind=summary.kind, as_of=summary.as_of, period=summary.period,
        dry_run=summary.dry_run, generated_at=(now or datetime.now(UTC)).replace(microsecond=0),
        accounts=summary.accounts, accounts_read=summary.accounts_read, rows_absorbed=summary.rows_absorbed,
        lines=lines, line_count=summary.items, totals=totals,
        attention=_attention_rows(summary, ledger.attention()), failed=list(summary.failed),
        carried=list(collector.carried) if collector else [], held=list(collector.held) if collector else [],
        history=billed_per_period(ledger), preview_totals=dict(totals) if summary.dry_run else {},
        skipped=summary.skipped,
    )


def write_report(path: str | Path, data: ReportData) -> Path:
    target = Path(path)
    target.write_text(render_html(data), encoding="utf-8")
    return target


# ---------------------------------------------------------------------- the page

CSS = """
:root { --ink: #1d2430; --muted: #5f6b7a; --line: #dde3ea; --bg: #f5f7fa; --card: #fff;
        --bar: #2f6fde; --bar-preview: #9dbcf2; --ok: #1e7f4f; --bad: #b42318; --warn: #b54708; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.meta { color: var(--muted); margin-bottom: 16px; }
.meta code, td code { font: 12.5px ui-monospace, "DejaVu Sans Mono", monospace; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px 18px;
          margin-bottom: 16px; }
.banner { border-radius: 8px; padding: 10px 14px; margin-bottom: 16px; font-weight: 600; }
.banner.ok { background: #e7f6ee; color: var(--ok); border: 1px solid #b7e3c9; }
.banner.bad { background: #fdecea; color: var(--bad); border: 1px solid #f5c2bd; }
.banner.preview { background: #eef4fe; color: #1d4ea8; border: 1px solid #c6d8fb; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { flex: 1 1 160px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fbfcfe; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 650; }
.card .v small { font-size: 13px; font-weight: 500; color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { flex: 1 1 470px; }
.chart h3 { font-size: 13px; margin: 0 0 4px; color: var(--muted); }
.legend { color: var(--muted); font-size: 12px; margin-top: 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td code, td.p { white-space: nowrap; }
td { overflow-wrap: anywhere; }
tr.sub td { font-weight: 600; background: #f8fafc; }
.why { color: var(--bad); }
.none { color: var(--muted); }
.note { color: var(--muted); font-size: 12.5px; margin: 8px 0 0; }
"""


def _kind_label(data: ReportData) -> str:
    if data.kind == COLLECT:
        return "daily collection"
    if data.kind == CLOSE:
        return "close run (reads before the cut-off)"
    return "month-end billing" if data.kind == BILL else data.kind


def _money(amount: Decimal, currency: str) -> str:
    return f"{esc(fmt2(amount))} {esc(currency)}"


def _exact(amount: Decimal, currency: str) -> str:
    return f"{esc(f'{amount:f}')} {esc(currency)}"


def render_html(data: ReportData) -> str:
    title = ("Billing preview" if data.dry_run else "Billing run") + f" {data.period}"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched or run: the report is opened from mail attachments and archives.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<div class="meta">{esc(_kind_label(data))} as of <code>{esc(iso(data.as_of))}</code> · run '
        f"<code>{esc(data.run_id)}</code> · generated {esc(iso(data.generated_at))}</div>",
        _banner(data), _overview(data), _charts(data), _attention(data), _per_account(data), _pending(data),
        '<p class="note">Lines needing attention: search WHMCS (Billing &gt; Billable Items) for the '
        "<code>[ref …]</code>, then <code>cswhmcs billing resolve REF --billed ID</code> or "
        "<code>--resend</code>. Amounts are in the WHMCS client's currency, rounded half-up once per line.</p>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _banner(data: ReportData) -> str:
    notes = []
    if data.dry_run:
        notes.append('<div class="banner preview">Preview: nothing was written and nothing was sent to WHMCS; '
                     "this is what a run would bill.</div>")
    if data.skipped:
        notes.append(f'<div class="banner bad">Skipped: {esc(data.skipped)}</div>')
    if data.attention or data.failed:
        what = []
        if data.attention:
            what.append(f"{len(data.attention)} line(s) need attention")
        if data.failed:
            what.append(f"{len(data.failed)} account(s) failed")
        notes.append(f'<div class="banner bad">{esc(", ".join(what))}: see below.</div>')
    else:
        notes.append('<div class="banner ok">Nothing needs attention.</div>')
    return "\n".join(notes)


def _overview(data: ReportData) -> str:
    verb = "would be billed" if data.dry_run else "billed"
    cards = [f'<div class="card"><div class="k">{esc(verb)} · {esc(cur)}</div>'
             f'<div class="v">{esc(fmt2(total))} <small>{esc(cur)}</small></div></div>'
             for cur, total in sorted(data.totals.items())]
    if not cards:
        cards.append(f'<div class="card"><div class="k">{esc(verb)}</div><div class="v">0.00</div></div>')
    cards += [
        f'<div class="card"><div class="k">billable items</div><div class="v">{data.line_count}</div></div>',
        f'<div class="card"><div class="k">accounts</div><div class="v">{data.accounts} '
        f"<small>{data.accounts_read} read, {len(data.failed)} failed</small></div></div>",
        f'<div class="card"><div class="k">needing attention</div><div class="v">{len(data.attention)}</div></div>',
    ]
    return f'<section id="totals"><h2>Totals per currency</h2><div class="cards">{"".join(cards)}</div></section>'


# ---------------------------------------------------------------------- the chart


def _nice_step(top: Decimal, ticks: int = 4) -> Decimal:
    """A round step (1, 2, 2.5 or 5 × 10^n) so that ``ticks`` steps reach at least ``top``."""
    if top <= 0:
        return Decimal(1)
    raw = top / ticks
    exp = raw.adjusted()
    base = Decimal(10) ** exp
    for m in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if m * base >= raw:
            return m * base
    return 10 * base


def _periods(history: dict[str, Decimal], extra: Iterable[str]) -> list[str]:
    """The last CHART_PERIODS months up to the newest period with data, every month in between (an empty
    month is a visible gap, not a missing bar)."""
    known = sorted(p for p in set(history) | set(extra) if PERIOD.fullmatch(p))
    if not known:
        return []
    y, m = (int(x) for x in known[-1].split("-"))
    out = []
    for _ in range(CHART_PERIODS):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        if out[-1] <= known[0]:
            break
    return out[::-1]


def chart_svg(currency: str, billed: dict[str, Decimal], preview: dict[str, Decimal]) -> str:
    """Bars per period: billed (solid) and, in a preview, what would be billed (hatched), stacked."""
    periods = _periods(billed, preview)
    width, height, left, right, top, bottom = 470, 220, 52, 10, 18, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max((billed.get(p, ZERO) + preview.get(p, ZERO) for p in periods), default=ZERO)
    step = _nice_step(highest)
    ceiling = step * 4
    pid = "hatch-" + "".join(ch for ch in currency if ch.isalnum())
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" aria-label="{esc(f"Billed per period, {currency}")}">',
           f'<defs><pattern id="{esc(pid)}" width="6" height="6" patternUnits="userSpaceOnUse" '
           f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#dbe7fb"/>'
           f'<rect width="3" height="6" fill="#9dbcf2"/></pattern></defs>']
    for i in range(5):
        value = step * i
        y = top + plot_h - float(value / ceiling) * plot_h
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ef"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#5f6b7a">'
                   f"{esc(_short(value))}</text>")
    slot = plot_w / max(1, len(periods))
    bar_w = min(34.0, slot * 0.62)
    for i, period in enumerate(periods):
        x = left + slot * i + (slot - bar_w) / 2
        base = top + plot_h
        b, p = billed.get(period, ZERO), preview.get(period, ZERO)
        hb = float(b / ceiling) * plot_h
        hp = float(p / ceiling) * plot_h
        if b > 0:
            out.append(f'<rect class="bar billed" x="{x:.1f}" y="{base - hb:.1f}" width="{bar_w:.1f}" '
                       f'height="{max(hb, 1.0):.1f}" fill="#2f6fde"><title>{esc(period)}: {_money(b, currency)} '
                       "billed</title></rect>")
        if p > 0:
            out.append(f'<rect class="bar preview" x="{x:.1f}" y="{base - hb - hp:.1f}" width="{bar_w:.1f}" '
                       f'height="{max(hp, 1.0):.1f}" fill="url(#{esc(pid)})" stroke="#2f6fde" '
                       f'stroke-dasharray="3 2"><title>{esc(period)}: {_money(p, currency)} would be billed'
                       "</title></rect>")
        if b + p > 0:
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{base - hb - hp - 4:.1f}" text-anchor="middle" '
                       f'font-size="10.5" fill="#1d2430">{esc(fmt2(b + p))}</text>')
        label = period[2:] if len(periods) > 8 else period
        out.append(f'<text x="{left + slot * i + slot / 2:.1f}" y="{base + 16}" text-anchor="middle" '
                   f'font-size="11" fill="#5f6b7a">{esc(label)}</text>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#9aa5b1"/>')
    out.append("</svg>")
    return "".join(out)


def _short(value: Decimal) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value.normalize():f}" if value == value.to_integral() else f"{value:.2f}"


def _charts(data: ReportData) -> str:
    currencies = sorted(set(data.history) | set(data.preview_totals))
    if not currencies:
        return ('<section id="chart"><h2>Billed per period</h2><p class="none">Nothing billed yet: the ledger has '
                "no finished line.</p></section>")
    charts = []
    for cur in currencies:
        preview = {data.period: data.preview_totals[cur]} if cur in data.preview_totals else {}
        charts.append(f'<div class="chart"><h3>{esc(cur)}</h3>{chart_svg(cur, data.history.get(cur, {}), preview)}'
                      "</div>")
    legend = '<div class="legend"><i style="background:#2f6fde"></i>billed (ledger)'
    if data.preview_totals:
        legend += f'<i style="background:#9dbcf2"></i>would be billed by this preview ({esc(data.period)})'
    legend += "</div>"
    return (f'<section id="chart"><h2>Billed per period</h2><div class="charts">{"".join(charts)}</div>{legend}'
            "</section>")


# ---------------------------------------------------------------------- tables


def _attention(data: ReportData) -> str:
    head = '<section id="attention"><h2>Needing attention</h2>'
    if not data.attention and not data.failed:
        return head + '<p class="none">No line needs attention.</p></section>'
    out = [head]
    if data.attention:
        out.append("<table><thead><tr><th>ref</th><th>service</th><th>client</th><th>account</th><th>product</th>"
                   '<th>period</th><th class="n">amount</th><th>why</th><th>found by</th></tr></thead><tbody>')
        for r in data.attention:
            out.append(f"<tr><td><code>{esc(r.ref)}</code></td><td>{r.service_id}</td><td>{r.client_id}</td>"
                       f"<td>{esc(r.email)}</td><td>{esc(r.product)}</td><td class=\"p\">{esc(r.period)}</td>"
                       f'<td class="n">{_money(r.amount, r.currency)}</td><td class="why">{esc(r.reason)}</td>'
                       f'<td class="p">{esc(r.source)}</td></tr>')
        out.append("</tbody></table>")
    if data.failed:
        out.append('<h2 style="margin-top:14px">Failed accounts</h2><table><thead><tr><th>service</th>'
                   "<th>ComputeStacks user</th><th>error</th></tr></thead><tbody>")
        for service, user, message in data.failed[:MAX_TABLE_ROWS]:
            out.append(f'<tr><td>{service}</td><td>#{user}</td><td class="why">{esc(message)}</td></tr>')
        out.append("</tbody></table>")
        if len(data.failed) > MAX_TABLE_ROWS:
            out.append(f'<p class="note">… and {len(data.failed) - MAX_TABLE_ROWS} more failed accounts.</p>')
    out.append("</section>")
    return "".join(out)


def _per_account(data: ReportData) -> str:
    verb = "would be billed" if data.dry_run else "billed by this run"
    head = f'<section id="accounts"><h2>Per account and product ({esc(verb)})</h2>'
    if not data.lines:
        return head + '<p class="none">No billable item.</p></section>'
    by_account: dict[tuple[int, str, int], list[Any]] = defaultdict(list)
    for o in data.lines:
        by_account[(o.service_id, o.email, o.client_id)].append(o)
    out = [head, "<table><thead><tr><th>service</th><th>account</th><th>client</th><th>product</th><th>period</th>"
                 '<th class="n">amount</th><th>ref</th></tr></thead><tbody>']
    shown = 0
    for (service, email, client), lines in sorted(by_account.items()):
        if shown >= MAX_TABLE_ROWS:
            break
        for o in sorted(lines, key=lambda o: (o.product, o.period)):
            conv = (f' <span class="none">(from {_money(o.source_total, o.source_currency)})</span>'
                    if o.source_currency != o.currency else "")
            out.append(f"<tr><td>{service}</td><td>{esc(email)}</td><td>{client}</td><td>{esc(o.product)}</td>"
                       f'<td class="p">{esc(o.period)}</td><td class="n">{_money(o.amount, o.currency)}{conv}</td>'
                       f"<td><code>{esc(o.ref)}</code></td></tr>")
            shown += 1
        sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for o in lines:
            sums[o.currency] += o.amount
        if len(lines) > 1:
            total = ", ".join(_money(v, k) for k, v in sorted(sums.items()))
            out.append(f'<tr class="sub"><td>{service}</td><td colspan="4">{esc(email)}: account total</td>'
                       f'<td class="n">{total}</td><td></td></tr>')
    out.append("</tbody></table>")
    if len(data.lines) > shown:
        out.append(f'<p class="note">{shown} of {len(data.lines)} lines shown; the totals count all of them '
                   "(<code>--json</code> lists every line).</p>")
    out.append("</section>")
    return "".join(out)


def _pending(data: ReportData) -> str:
    emails = {o.service_id: o.email for o in data.lines}
    out = ['<section id="carried"><h2>Carried over and held</h2>']
    if not data.carried and not data.held:
        out.append('<p class="none">Nothing carried over or held: every eligible amount was billed.</p></section>')
        return "".join(out)
    out.append("<table><thead><tr><th>service</th><th>account</th><th>product</th><th class=\"n\">exact amount</th>"
               "<th>why</th></tr></thead><tbody>")
    rows = [(p, "carried over: under 0.01, stays in the running totals for a later run") for p in data.carried]
    rows += [(p, "held: this period's line exists already; billed with the next period's line") for p in data.held]
    for p, why in sorted(rows, key=lambda r: (r[0].service_id, r[0].product))[:MAX_TABLE_ROWS]:
        who = emails.get(p.service_id) or f"ComputeStacks user #{p.cs_user_id}"
        out.append(f"<tr><td>{p.service_id}</td><td>{esc(who)}</td><td>{esc(p.product)}</td>"
                   f'<td class="n">{_exact(p.amount, p.currency)}</td><td>{esc(why)}</td></tr>')
    out.append("</tbody></table>")
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for p, _ in rows:
        sums[p.currency] += p.amount
    out.append(f'<p class="note">Together: {", ".join(_exact(v, k) for k, v in sorted(sums.items()))} '
               "(exact, in the ComputeStacks users' currencies; nothing is lost, a later run bills it).</p>")
    out.append("</section>")
    return "".join(out)
