"""``cswhmcs billing run|preview|attention|resolve`` (API.md section 5).

``run`` and ``preview`` go through the same planner and worker code as the scheduled functions, in
this process (a thread pool instead of SQS). Exit codes: 0 fine, 3 something needs attention (lines
that may or may not exist in WHMCS, refused lines, failed accounts), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from cswhmcs.billing.messages import BILL, CLOSE, COLLECT
from cswhmcs.billing.usage import is_utc, parse_time, zone_or_none
from cswhmcs.errors import DomainError
from cswhmcs.money import fmt2


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO, *, enabled: bool | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.planned = 0
        self.done = 0
        self.failed = 0
        self._lock = threading.Lock()

    def add_planned(self, n: int) -> None:
        with self._lock:
            self.planned += n
            self._draw()

    def add_result(self, result: Any) -> None:
        with self._lock:
            self.done += 1
            self.failed += int(bool(result.error))
            if self.done % 10 == 0 or self.done == self.planned:
                self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        total = max(self.planned, 1)
        width = 30
        filled = int(width * min(self.done, total) / total)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.planned} accounts, {self.failed} failed ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _as_of(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None


def _runtime(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from cswhmcs.billing.options import BillingOptions
    from cswhmcs.billing.run import build_runtime
    from cswhmcs.config import get_settings

    settings = get_settings()
    options = BillingOptions.from_settings(settings)
    if getattr(args, "concurrency", None):
        options = replace(options, concurrency=int(args.concurrency))
    return build_runtime(settings, options=options)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The summary goes to stdout: keep the structured INFO logs out of it (unless a level is asked for)."""
    import os

    from cswhmcs.observability import logger

    if os.environ.get("POWERTOOLS_LOG_LEVEL"):
        yield
        return
    before = logger.log_level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(before)


def cmd_run(args: argparse.Namespace, *, dry_run: bool | None = None) -> int:
    with _quiet_logs():
        return _run(args, dry_run=dry_run)


def _run(args: argparse.Namespace, *, dry_run: bool | None) -> int:
    from cswhmcs.billing.run import run_billing

    dry = bool(args.dry_run) if dry_run is None else dry_run
    try:
        as_of = _as_of(args.as_of)
    except argparse.ArgumentTypeError as exc:
        print(f"cswhmcs billing: {exc}", file=sys.stderr)
        return 2
    timezone = (getattr(args, "timezone", None) or "").strip()
    if not is_utc(timezone) and zone_or_none(timezone) is None:
        print(f"cswhmcs billing: --timezone {timezone!r} is not an IANA time zone this system knows "
              "(e.g. Europe/Berlin, America/New_York; the stack's BillingTimezone).", file=sys.stderr)
        return 2
    try:
        runtime = _runtime(args)
    except DomainError as exc:
        print(f"cswhmcs billing: {_why(exc)}", file=sys.stderr)
        return 2
    report_path = getattr(args, "report", None)
    if report_path and (problem := _unwritable(report_path)):
        runtime.close()
        print(f"cswhmcs billing: cannot write the report to {report_path}: {problem}.", file=sys.stderr)
        return 2
    progress = Progress(sys.stderr)
    collector = None
    on_result = progress.add_result
    if report_path:
        from cswhmcs.billing.report import ReportCollector

        collector = ReportCollector()

        def on_result(result: Any) -> None:
            collector.add(result)
            progress.add_result(result)

    try:
        summary = run_billing(as_of=as_of, ledger=runtime.ledger, accounts=runtime.accounts, deps=runtime.deps,
                              kind=_kind(args), dry_run=dry, timezone=timezone,
                              on_planned=progress.add_planned, on_result=on_result,
                              keep_lines=dry or bool(getattr(args, "json", False)) or bool(report_path))
        progress.close()
        report_error = _write_report(report_path, summary, runtime.ledger, collector) if report_path else None
    except DomainError as exc:
        progress.close()
        print(f"cswhmcs billing: {_why(exc)}", file=sys.stderr)
        return 2
    finally:
        runtime.close()
    if getattr(args, "json", False):
        print(json.dumps(_summary_json(summary), indent=2))
    else:
        print(summary.render())
    if report_error:
        print(f"cswhmcs billing: the report could not be written to {report_path}: {report_error}.", file=sys.stderr)
        return max(summary.exit_code, 2)
    if report_path:
        print(f"report written to {report_path}", file=sys.stderr)
    return summary.exit_code


def _write_report(path: str, summary: Any, ledger: Any, collector: Any) -> str | None:
    """Write the run's HTML report; why not, if the file could not be written (the run itself is done)."""
    from cswhmcs.billing.report import build_report, write_report

    data = build_report(summary, ledger=ledger, collector=collector)
    try:
        write_report(path, data)
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def _unwritable(path: str) -> str | None:
    """Why ``path`` cannot take the report (checked before the run, so that a typo costs nothing); None if it can."""
    import os
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        return "it is a directory"
    parent = target.parent
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return "permission denied"
    return None


def _why(exc: DomainError) -> str:
    """The error's message; for a missing setting, with how to provide it (cswhmcs.cli.explain_setup_error)."""
    from cswhmcs.cli import explain_setup_error

    return explain_setup_error(exc) or exc.message


def _kind(args: argparse.Namespace) -> str:
    if getattr(args, "collect", False):
        return COLLECT
    return CLOSE if getattr(args, "close", False) else BILL


def cmd_preview(args: argparse.Namespace) -> int:
    return cmd_run(args, dry_run=True)


def _summary_json(summary: Any) -> dict[str, Any]:
    def line(o: Any) -> dict[str, Any]:
        return {"ref": o.ref, "service_id": o.service_id, "client_id": o.client_id, "email": o.email,
                "product": o.product, "period": o.period, "amount": fmt2(o.amount), "currency": o.currency,
                "source_total": f"{o.source_total:f}", "source_currency": o.source_currency,
                "billable_id": o.billable_id, "reason": o.reason, "status": o.status}

    return {
        "run": summary.run_id, "as_of": summary.as_of.isoformat(), "dry_run": summary.dry_run,
        "accounts": summary.accounts, "failed": [{"service_id": s, "cs_user_id": u, "message": m}
                                                 for s, u, m in summary.failed],
        "lines": [line(o) for o in (summary.would_bill if summary.dry_run else summary.created)],
        "totals": {k: fmt2(v) for k, v in summary.totals().items()},
        "attention": [line(o) for o in summary.attention], "open_attention": summary.open_attention,
        "carried_over": summary.carried,
        "held_for_next_period": {"lines": summary.held,
                                 "amounts": {k: f"{v:f}" for k, v in sorted(summary.held_amounts.items())}},
    }


def _ledger() -> Any:
    from cswhmcs.billing.ledger import Ledger
    from cswhmcs.config import get_settings

    return Ledger.from_settings(get_settings())


def cmd_attention(args: argparse.Namespace) -> int:
    lines = list(_ledger().attention())
    if args.json:
        print(json.dumps([{"ref": ln.ref, "service_id": ln.service_id, "client_id": ln.client_id,
                           "email": ln.email, "product": ln.product_name, "period": ln.period,
                           "amount": fmt2(ln.amount), "currency": ln.currency, "description": ln.description,
                           "reason": ln.reason, "attempts": ln.attempts, "sending_at": ln.sending_at}
                          for ln in lines], indent=2))
    elif not lines:
        print("No billing lines need attention.")
    else:
        print(f"{len(lines)} billing line(s) need attention. For each: search WHMCS (Billing > Billable Items)")
        print("for its [ref ...]; then `cswhmcs billing resolve REF --billed ID` or `... --resend`.")
        for ln in lines:
            print(f"  {ln.ref}  service {ln.service_id}  client {ln.client_id}  {fmt2(ln.amount)} {ln.currency}")
            print(f"      {ln.description}")
            print(f"      why: {ln.reason}")
    return 3 if lines else 0


def cmd_resolve(args: argparse.Namespace) -> int:
    ledger = _ledger()
    try:
        if args.billed is not None:
            line = ledger.resolve_billed(args.ref, args.billed, note=args.note or "")
            print(f"{line.ref}: recorded as billed by WHMCS billable item #{args.billed}.")
        else:
            line = ledger.resolve_resend(args.ref)
            print(f"{line.ref}: will be sent again (once) by the next billing run "
                  f"({fmt2(line.amount)} {line.currency}).")
    except (DomainError, ValueError) as exc:
        print(f"cswhmcs billing resolve: {getattr(exc, 'message', str(exc))}", file=sys.stderr)
        return 2
    return 0


TIMEZONE_HELP = ("the stack's BillingTimezone (IANA name, default UTC): the period's month is taken in it, as the "
                 "scheduled runs do")
REPORT_HELP = ("also write a self-contained HTML report of the run (totals per currency, per account and product, "
               "lines needing attention, carried-over amounts, billed totals per period); opens without network")


def add_billing_commands(subparsers: Any) -> None:
    """Called by ``cswhmcs.cli.build_parser``: adds ``billing`` and its sub-commands."""
    billing = subparsers.add_parser("billing", help="month-end usage billing (run, preview, attention, resolve)")
    sub = billing.add_subparsers(dest="billing_command", required=True)

    run = sub.add_parser("run", help="bill the period that ends at --as-of (same code as the scheduled run)")
    run.add_argument("--as-of", help="ISO-8601 time the period ends (default: now)")
    run.add_argument("--dry-run", action="store_true", help="show what would be billed; write nothing")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--collect", action="store_true", help="only collect usage (the daily pass), bill nothing")
    mode.add_argument("--close", action="store_true",
                      help="the reads before the month-end cut-off: --as-of is the coming cut-off; bills nothing "
                           "before it (the month-end run then bills each account read completely without reading it "
                           "again); an account reached at or after the cut-off is billed as the month-end run would")
    run.add_argument("--concurrency", type=int, help="accounts worked on at once (default 4)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--report", metavar="FILE.html", help=REPORT_HELP)
    run.add_argument("--timezone", metavar="ZONE", help=TIMEZONE_HELP)
    run.set_defaults(func=cmd_run)

    preview = sub.add_parser("preview", help="what `run` would bill, per account and product; writes nothing")
    preview.add_argument("--as-of", help="ISO-8601 time the period ends (default: now)")
    preview.add_argument("--concurrency", type=int)
    preview.add_argument("--json", action="store_true")
    preview.add_argument("--report", metavar="FILE.html", help=REPORT_HELP)
    preview.add_argument("--timezone", metavar="ZONE", help=TIMEZONE_HELP)
    preview.set_defaults(func=cmd_preview, dry_run=True, collect=False, close=False)

    attention = sub.add_parser("attention", help="list the lines that need an operator")
    attention.add_argument("--json", action="store_true")
    attention.set_defaults(func=cmd_attention)

    resolve = sub.add_parser("resolve", help="settle a line that needs attention, after checking WHMCS")
    resolve.add_argument("ref", help="the line's reference, <cs user id>:<YYYY-MM>:<product id>")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--billed", type=int, metavar="BILLABLE_ID",
                     help="WHMCS has the item: record its billable item id (nothing is sent)")
    how.add_argument("--resend", action="store_true", help="WHMCS does not have it: send it with the next run")
    resolve.add_argument("--note", help="a note kept with the line")
    resolve.set_defaults(func=cmd_resolve)
