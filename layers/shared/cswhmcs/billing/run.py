"""Run billing in this process: the same planner and worker code as in AWS, with a thread pool in
place of SQS. Used by ``cswhmcs billing run|preview``, the integration tests and the benchmarks.

With the billing receiver (``deps.receiver``), accounts are handed to the pool in groups of
``BillingOptions.batch_accounts`` (one ``process_accounts`` call each, like one SQS batch), so that their
lines share receiver requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from cswhmcs import observability
from cswhmcs.billing.ledger import Ledger
from cswhmcs.billing.messages import BILL, CLOSE, WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.planner import Trigger, plan_run
from cswhmcs.billing.usage import iso, period_of
from cswhmcs.billing.worker import AccountResult, LineOutcome, WorkerDeps, process_account, process_accounts
from cswhmcs.money import fmt2
from cswhmcs.observability import logger

ZERO = Decimal(0)


@dataclass
class Summary:
    run_id: str
    as_of: datetime
    dry_run: bool
    kind: str = BILL
    accounts: int = 0
    accounts_read: int = 0
    accounts_missing: int = 0  # mapped, but no longer in ComputeStacks
    # A close run: accounts whose read holds every row that can end before the cut-off (billed by the
    # month-end run without another read), and those the month-end run reads again.
    accounts_complete: int = 0
    accounts_incomplete: int = 0
    failed: list[tuple[int, int, str]] = field(default_factory=list)  # (service, cs user, message)
    # Every line is kept only when asked (preview lists them); otherwise counts and totals, so a run's
    # memory does not grow with the number of accounts.
    keep_lines: bool = True
    created: list[LineOutcome] = field(default_factory=list)
    would_bill: list[LineOutcome] = field(default_factory=list)
    created_count: int = 0
    would_bill_count: int = 0
    _totals: dict[str, Decimal] = field(default_factory=dict)
    attention: list[LineOutcome] = field(default_factory=list)  # became ambiguous/refused in this run
    in_flight: int = 0
    carried: int = 0
    carried_amounts: dict[str, Decimal] = field(default_factory=dict)
    # Eligible usage of products whose line for this period was already billed (e.g. by a run in the
    # middle of the month): it waits for the next period's line. Per (account, product); amounts exact,
    # in the ComputeStacks users' currencies.
    held: int = 0
    held_amounts: dict[str, Decimal] = field(default_factory=dict)
    open_attention: int = 0  # lines needing attention in the whole ledger after the run
    rows_absorbed: int = 0
    skipped: str = ""
    elapsed: float = 0.0
    cs_requests: int = 0
    whmcs_requests: int = 0  # the WHMCS API's and the billing receiver's together
    receiver_requests: int = 0
    used_receiver: bool = False

    @property
    def period(self) -> str:
        return period_of(self.as_of)

    def totals(self) -> dict[str, Decimal]:
        """Amounts per currency of the items created (or, in a preview, that would be)."""
        return dict(sorted(self._totals.items()))

    @property
    def items(self) -> int:
        return self.would_bill_count if self.dry_run else self.created_count

    @property
    def needs_attention(self) -> bool:
        return bool(self.attention or self.open_attention or self.failed)

    @property
    def exit_code(self) -> int:
        return 3 if self.needs_attention else 0

    def add(self, result: AccountResult) -> None:
        self.accounts += 1
        self.accounts_read += int(result.read)
        self.accounts_missing += int(result.missing)
        if result.complete is not None:
            self.accounts_complete += int(result.complete)
            self.accounts_incomplete += int(not result.complete)
        self.rows_absorbed += result.rows_absorbed
        if result.error:
            self.failed.append((result.service_id, result.cs_user_id, result.error))
        for o in result.lines:
            if o.status == "created":
                self.created_count += 1
                if self.keep_lines:
                    self.created.append(o)
                if not self.dry_run:
                    self._totals[o.currency] = self._totals.get(o.currency, ZERO) + o.amount
            elif o.status in ("would_bill", "would_send"):
                self.would_bill_count += 1
                if self.keep_lines:
                    self.would_bill.append(o)
                if self.dry_run:
                    self._totals[o.currency] = self._totals.get(o.currency, ZERO) + o.amount
            elif o.status == "attention":
                self.attention.append(o)
            elif o.status == "in_flight":
                self.in_flight += 1
        for _product, amount, currency in result.carried:
            self.carried += 1
            self.carried_amounts[currency] = self.carried_amounts.get(currency, ZERO) + amount
        for _product, amount, currency in result.held:
            self.held += 1
            self.held_amounts[currency] = self.held_amounts.get(currency, ZERO) + amount

    def render(self, *, lines: bool | None = None) -> str:
        """The human summary (what the CLI prints)."""
        show_lines = self.dry_run if lines is None else lines
        head = "PREVIEW (nothing written, nothing sent)" if self.dry_run else "billing run"
        out = [f"{head}: {self.kind} as of {iso(self.as_of)} (period {self.period}), run {self.run_id}"]
        if self.skipped:
            out.append(f"  skipped: {self.skipped}")
        out.append(f"  accounts: {self.accounts} ({self.accounts_read} read from ComputeStacks, "
                   f"{self.rows_absorbed} new usage rows), {len(self.failed)} failed")
        if self.kind == CLOSE:
            out.append(f"  read before the cut-off: {self.accounts_complete} complete (billed at the cut-off "
                       f"without another read), {self.accounts_incomplete} to read again at the cut-off")
        if self.accounts_missing:
            out.append(f"  {self.accounts_missing} mapped accounts no longer exist in ComputeStacks "
                       "(usage collected before is still billed)")
        listed = self.would_bill if self.dry_run else self.created
        verb = "would be created" if self.dry_run else "created"
        out.append(f"  billable items {verb}: {self.items}")
        if show_lines and listed:
            out.append("  per account and product:")
            for o in sorted(listed, key=lambda o: (o.service_id, o.product, o.period)):
                conv = f" (from {fmt2(o.source_total)} {o.source_currency})" if o.source_currency != o.currency else ""
                out.append(f"    service {o.service_id} {o.email}  {o.product}  {o.period}  "
                           f"{fmt2(o.amount)} {o.currency}{conv}  [{o.ref}]")
        totals = self.totals()
        if totals:
            out.append("  totals per currency: " + ", ".join(f"{fmt2(v)} {k}" for k, v in totals.items()))
        if self.carried:
            carried = ", ".join(f"{v:f} {k}" for k, v in sorted(self.carried_amounts.items()))
            out.append(f"  carried over (under 0.01): {self.carried} lines ({carried})")
        if self.held:
            held = ", ".join(f"{v:f} {k}" for k, v in sorted(self.held_amounts.items()))
            out.append(f"  held for the next period (a line for this period was already billed): "
                       f"{self.held} lines ({held})")
        if self.in_flight:
            out.append(f"  being sent by another worker: {self.in_flight}")
        out.append(f"  needing attention: {len(self.attention)} from this run, "
                   f"{self.open_attention} open in the ledger")
        for o in self.attention:
            out.append(f"    {o.ref}  service {o.service_id}  {fmt2(o.amount)} {o.currency}  {o.reason}")
        for service, user, message in self.failed[:50]:
            out.append(f"    failed: service {service} (ComputeStacks #{user}): {message}")
        if len(self.failed) > 50:
            out.append(f"    ... and {len(self.failed) - 50} more failed accounts")
        if self.needs_attention:
            out.append("  see `cswhmcs billing attention` and `cswhmcs billing resolve`")
        through = f" ({self.receiver_requests} through the billing receiver)" if self.used_receiver else ""
        out.append(f"  {self.elapsed:.1f} s, {self.cs_requests} ComputeStacks and {self.whmcs_requests} WHMCS "
                   f"requests{through}")
        return "\n".join(out)


class InProcessSink:
    """Runs each message through the worker on a bounded thread pool (the SQS stand-in)."""

    def __init__(self, deps: WorkerDeps, summary: Summary, *, concurrency: int, dry_run: bool,
                 on_result: Callable[[AccountResult], None] | None = None, batch: int = 1) -> None:
        self.deps = deps
        self.summary = summary
        self.dry_run = dry_run
        self.on_result = on_result
        # Groups of accounts only on the receiver path (a preview sends nothing: one by one).
        self.grouped = deps.receiver is not None and not dry_run
        self.batch = max(1, batch)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="billing")
        self._slots = threading.BoundedSemaphore(concurrency * 4)
        self._lock = threading.Lock()
        self._pending: set[Future[None]] = set()
        self._buffer: list[WorkMessage] = []

    def send(self, messages: list[WorkMessage]) -> None:
        if not self.grouped:
            for message in messages:
                self._submit(self._work, message)
            return
        for message in messages:  # the planner's scan threads call this at once
            with self._lock:
                self._buffer.append(message)
                full = self._take() if len(self._buffer) >= self.batch else None
            if full:
                self._submit(self._work_group, full)

    def _take(self) -> list[WorkMessage]:
        taken, self._buffer = self._buffer, []
        return taken

    def _submit(self, work: Callable[[Any], None], arg: Any) -> None:
        self._slots.acquire()
        future = self._pool.submit(work, arg)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
        self._slots.release()

    def _work(self, message: WorkMessage) -> None:
        try:
            result = process_account(message, self.deps, dry_run=self.dry_run)
        except Exception as exc:  # one account's failure never stops the run; it is reported
            logger.warning("billing account failed", extra={"service_id": message.account.service_id,
                                                             "error": type(exc).__name__})
            result = AccountResult(message.account.service_id, message.account.cs_user_id,
                                   error=f"{type(exc).__name__}: {str(exc)[:200]}")
        self._record(result)

    def _work_group(self, messages: list[WorkMessage]) -> None:
        try:
            results = process_accounts(messages, self.deps)
        except Exception as exc:  # the group's accounts are reported failed; the next run retries them
            logger.warning("billing accounts failed", extra={"accounts": len(messages), "error": type(exc).__name__})
            results = [AccountResult(m.account.service_id, m.account.cs_user_id,
                                     error=f"{type(exc).__name__}: {str(exc)[:200]}") for m in messages]
        for result in results:
            self._record(result)

    def _record(self, result: AccountResult) -> None:
        with self._lock:
            self.summary.add(result)
        if self.on_result is not None:
            self.on_result(result)

    def flush(self) -> None:
        with self._lock:
            rest = self._take()
        if rest:
            self._submit(self._work_group, rest)
        self._pool.shutdown(wait=True)


def run_billing(*, as_of: datetime, ledger: Ledger, accounts: Any, deps: WorkerDeps, kind: str = BILL,
                dry_run: bool = False, concurrency: int | None = None, options: BillingOptions | None = None,
                on_planned: Callable[[int], None] | None = None,
                on_result: Callable[[AccountResult], None] | None = None, keep_lines: bool = True,
                timezone: str = "") -> Summary:
    """Plan and work one run in-process. ``dry_run`` reads only (no ledger write, no WHMCS write).
    ``keep_lines=False`` keeps counts and totals only (flat memory, whatever the number of accounts).
    ``timezone``: the schedules' zone (``BillingTimezone``), in which the period's month is taken; "" = UTC."""
    options = options or deps.options
    started = time.monotonic()
    trigger = Trigger(kind=kind, as_of=as_of.replace(microsecond=0), timezone=timezone)
    summary = Summary(run_id=trigger.run_id, as_of=trigger.as_of, dry_run=dry_run, kind=kind,
                      keep_lines=keep_lines)
    cs0, wh0, rc0 = _count(deps.cs), _count(deps.whmcs), _count(deps.receiver)
    sink = InProcessSink(deps, summary, concurrency=concurrency or options.concurrency, dry_run=dry_run,
                         on_result=on_result, batch=options.batch_accounts)
    result = plan_run(trigger, ledger=None if dry_run else ledger, accounts=accounts, whmcs=deps.whmcs,
                      sink=sink, options=options, force=True, on_page=on_planned)
    summary.skipped = result.skipped
    summary.open_attention = ledger.count_attention()
    summary.elapsed = time.monotonic() - started
    summary.cs_requests = _count(deps.cs) - cs0
    summary.receiver_requests = _count(deps.receiver) - rc0
    summary.whmcs_requests = _count(deps.whmcs) - wh0 + summary.receiver_requests
    summary.used_receiver = deps.receiver is not None and not dry_run
    if not dry_run and not summary.skipped:
        observability.measure(observability.RUN_DURATION_SECONDS, summary.elapsed)
    return summary


def _count(client: Any) -> int:
    return int(getattr(client, "request_count", 0) or 0)


@dataclass
class Runtime:
    """Everything a run needs, built from the settings (CLI, tests, benchmarks)."""

    ledger: Ledger
    accounts: Any
    deps: WorkerDeps
    options: BillingOptions

    def close(self) -> None:
        for client in (self.deps.cs, self.deps.whmcs, self.deps.receiver):
            close = getattr(client, "close", None)
            if callable(close):
                close()


_BUILD = object()  # build_runtime(receiver=...) not given: from the settings


def build_runtime(settings: Any, *, options: BillingOptions | None = None, cs: Any = None, whmcs: Any = None,
                  resource: Any = None, receiver: Any = _BUILD, **deps_kw: Any) -> Runtime:
    """In-process wiring. One process shares one ComputeStacks bucket (the whole budget) and one WHMCS
    bucket between its threads; ``concurrency`` threads work on accounts at once. The clients come from
    ``cswhmcs.factory``; the ComputeStacks one behind a credential gate kept in memory (one process
    is the run's only worker: at most 2 failed logins per run, see billing/credentials.py). The billing
    receiver (``WHMCS_RECEIVER_URL``; None: not used) draws from the WHMCS bucket; tests pass ``receiver``."""
    from cswhmcs import factory
    from cswhmcs.adapters.dynamo import AccountsRepo, dynamodb_resource
    from cswhmcs.adapters.pacing import TokenBucket
    from cswhmcs.billing.credentials import MemoryCredentialStore, guarded_client

    options = options or BillingOptions.from_settings(settings)
    if cs is None:
        budget = options.cs_limit * options.cs_share
        burst = max(1, min(options.cs_burst, int(budget // 10)))
        cs, gate = guarded_client(settings, MemoryCredentialStore(),
                                  pacer=TokenBucket((budget - burst) / options.cs_window, burst))
        deps_kw.setdefault("cs_gate", gate)
    whmcs_bucket = TokenBucket(options.whmcs_rate, options.whmcs_burst)
    if whmcs is None:
        whmcs = factory.whmcs_client(settings, pacer=whmcs_bucket)
    if receiver is _BUILD:
        receiver = factory.receiver_client(settings, pacer=whmcs_bucket)
    resource = resource or dynamodb_resource(settings)
    ledger = Ledger.from_settings(settings, resource, **({"clock": deps_kw["clock"]} if "clock" in deps_kw else {}))
    accounts = AccountsRepo.from_settings(settings, resource)
    deps = WorkerDeps.from_settings(settings, cs=cs, whmcs=whmcs, ledger=ledger, options=options, receiver=receiver,
                                    **deps_kw)
    return Runtime(ledger=ledger, accounts=accounts, deps=deps, options=options)
