"""One account's billing (or collection) for one run: the worker.

Steps for one message (docs/billing.md, "Worker"):

A. Open lines from earlier attempts: ``planned`` ones are sent; ``sending`` ones older than the
   lease were interrupted (nobody knows whether WHMCS created them): they become ``attention``.
B. Read the account's new usage rows (newest first, down to its scan floor) unless it was already
   read for this as-of, and absorb them (``grouping.absorb``).
C. Month-end only: group the eligible running totals per product into lines; convert the currency;
   lines under 0.01 carry over; the rest are claimed (the "intent") in the same conditional write.
D. Send each claimed line: ``sending`` (conditional) -> AddBillableItem -> ``done`` with the
   billableid; a timeout after sending -> ``attention`` (never re-sent automatically); a definite
   failure -> back to ``planned`` (sent again by the next delivery or run).

Every write to the account's state item is conditional on its version, so duplicate deliveries and
concurrent runs serialise; a row is absorbed once and a line is sent at most once.

Through the billing receiver (``deps.receiver``, WHMCS_RECEIVER_URL; ``process_accounts``): steps A-C
are the same, but every line to send (planned, or left ``sending`` on this path longer than the lease)
is marked ``sending`` in one write per account; the lines of all the accounts of the call then go to the
receiver together (up to 100 per request) and each answer is recorded. Every send is safe to repeat (a
ref creates at most one item), so an unknown outcome puts the lines back to ``planned`` (not counted)
instead of needing attention; only definite refusals are counted. docs/billing.md, "Sending through
the billing receiver".

Time: the worker runs inside a deadline (``cswhmcs.deadline``; the Lambda handler sets it to the
function's remaining time less a margin). A line is only marked ``sending`` when one whole WHMCS
attempt still fits; otherwise, or when WHMCS throttles longer than we may wait, the account is released
(``BillingAborted``: the message returns to the queue) with its lines ``planned``, never half-sent.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from cswhmcs import deadline, observability, ports
from cswhmcs.adapters.retry import MIN_ATTEMPT_SECONDS, OutOfTime, attempt_seconds
from cswhmcs.billing.currency import CurrencyTable, conversion_note
from cswhmcs.billing.grouping import (
    ATTENTION,
    DONE,
    PLANNED,
    SENDING,
    SETTLE,
    AccountState,
    Line,
    absorb,
    candidates,
    carry,
    claim,
    complete_for,
    describe,
    held,
    line_ref,
    needs_rows,
    redescribe,
    unclaim,
)
from cswhmcs.billing.ledger import Ledger, StateConflict
from cswhmcs.billing.messages import BILL, CLOSE, COLLECT, RunContext, WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.usage import NO_TIME, ZERO_KEY, RowKey, UsageRow, due_date, iso, parse_row, parse_time
from cswhmcs.errors import (
    ConfigurationError,
    DomainError,
    NotFound,
    RateLimited,
    UpstreamApiError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
)
from cswhmcs.money import cents
from cswhmcs.observability import logger

CENT = Decimal("0.01")
# Kept from the Lambda's remaining time for what follows the last upstream answer (ledger writes, the
# batch response): the worker's deadline is its remaining time less this.
WORKER_MARGIN_SECONDS = 10.0
RELEASED = "released"  # not sent after all (no time left, or throttled): back to planned, not counted
OUT_OF_TIME = ("Not enough of this invocation's time was left to send a billable item to WHMCS; "
               "the account will be retried.")


RECEIVER = "receiver"  # Line.via of lines sent through the billing receiver
VIA_RECEIVER_REASON = ("it was sent through the billing receiver, which is not configured now (WHMCS_RECEIVER_URL): "
                       "it may or may not have been created; search WHMCS billable items for [ref {ref}], or set "
                       "WHMCS_RECEIVER_URL again and resolve it with --resend (safe through the receiver)")


def _refused_reason(line: Line) -> str:
    return (f"WHMCS refused it {line.attempts} times (last: {line.last_error}); it was not created: fix the cause, "
            "then resolve it with --resend")


class BillingAborted(Exception):
    """This account could not be finished now; the message is retried (nothing is lost)."""


def _no_fault(point: str) -> None:
    return None


@dataclass
class WorkerDeps:
    cs: ports.ComputeStacksUsage
    whmcs: ports.WhmcsBilling
    ledger: Ledger
    billing_start: datetime | None = None
    due_day: int = 1
    invoice_action: str = "duedate"
    options: BillingOptions = field(default_factory=BillingOptions)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Tests inject crashes here: called at named points between ledger steps.
    faults: Callable[[str], None] = _no_fault
    # The run-level ComputeStacks credential stop (billing/credentials.py RunCredentialGate): checked
    # before each account; None: not guarded (tests with fakes).
    cs_gate: Any = None
    # The module's billing receiver (adapters/receiver.py ReceiverClient, API.md section 8), when
    # WHMCS_RECEIVER_URL is set: ``process_accounts`` then sends every line through it (safe to repeat).
    # None: the WHMCS API's AddBillableItem, exactly as without it.
    receiver: Any = None
    # The daily collection's username reconcile (accounts/webhook.py ``reconcile_from_billing``), run by the
    # handlers after an account's work succeeded; None: not done (the CLI's runs, tests with fakes).
    usernames: Callable[[WorkMessage, AccountResult], bool] | None = None
    _client_currency: dict[int, str] = field(default_factory=dict)  # bounded: see client_currency
    _currencies: CurrencyTable | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    CLIENT_CACHE = 20_000  # entries (a few bytes each); a worker lives for hours at month-end

    @classmethod
    def from_settings(cls, settings: Any, *, cs: Any, whmcs: Any, ledger: Ledger,
                      options: BillingOptions | None = None, **kw: Any) -> WorkerDeps:
        start = settings.BILLING_START
        return cls(cs=cs, whmcs=whmcs, ledger=ledger,
                   billing_start=datetime.combine(start, time(0), tzinfo=UTC) if start else None,
                   due_day=settings.BILLING_DUE_DAY, invoice_action=settings.BILLING_INVOICE_ACTION,
                   options=options or BillingOptions(), **kw)

    def client_currency(self, client_id: int, run: RunContext) -> str:
        """The WHMCS client's currency code, read once per process (services of one client share it)."""
        code = self.known_client_currency(client_id)
        if code is None:
            code = self.currency_table(run).code_of(self.whmcs.get_client(client_id))
            self.remember_client_currency(client_id, code)
        return code

    def known_client_currency(self, client_id: int) -> str | None:
        """The WHMCS client's currency code if this process has learnt it (read, or told by the receiver)."""
        with self._lock:
            return self._client_currency.get(client_id)

    def remember_client_currency(self, client_id: int, code: str) -> None:
        with self._lock:
            if client_id not in self._client_currency and len(self._client_currency) >= self.CLIENT_CACHE:
                for key in list(self._client_currency)[: self.CLIENT_CACHE // 2]:  # oldest half
                    del self._client_currency[key]
            self._client_currency[client_id] = code.upper()

    def currency_table(self, run: RunContext) -> CurrencyTable:
        if run.currencies:
            return CurrencyTable.from_list(run.currencies)
        with self._lock:
            if self._currencies is None:
                self._currencies = CurrencyTable.from_whmcs(self.whmcs.get_currencies())
            return self._currencies


@dataclass
class LineOutcome:
    ref: str
    status: str  # created | attention | failed | in_flight | would_bill | would_send
    service_id: int
    client_id: int
    email: str
    product: str
    period: str
    amount: Decimal
    currency: str
    source_total: Decimal
    source_currency: str
    description: str = ""
    billable_id: int | None = None
    reason: str = ""

    @classmethod
    def of(cls, line: Line, status: str, reason: str = "") -> LineOutcome:
        return cls(ref=line.ref, status=status, service_id=line.service_id, client_id=line.client_id,
                   email=line.email, product=line.product_name, period=line.period, amount=line.amount,
                   currency=line.currency, source_total=line.source_total, source_currency=line.source_currency,
                   description=line.description, billable_id=line.billable_id, reason=reason or line.reason)


@dataclass
class AccountResult:
    service_id: int
    cs_user_id: int
    lines: list[LineOutcome] = field(default_factory=list)
    carried: list[tuple[str, Decimal, str]] = field(default_factory=list)  # (product, exact amount, currency)
    # Eligible by the as-of, but the product's line for this period exists already (one per service,
    # product and period): waits for the next period's line. (product, exact amount, ComputeStacks
    # user's currency: it is converted when that line is claimed, at that run's rates.)
    held: list[tuple[str, Decimal, str]] = field(default_factory=list)
    rows_absorbed: int = 0
    rows_deferred: int = 0
    read: bool = False
    # A close run's read: whether it holds every row that can end before the cut-off (None: not a close read)
    complete: bool | None = None
    missing: bool = False  # ComputeStacks no longer has this user
    error: str | None = None
    # ComputeStacks' user as this run saw it, for free: the ``user`` of the first usage row listed (id, email,
    # external_id, labels), or the user the currency re-read returned. The collection's username reconcile
    # reads it (accounts/webhook.py ``reconcile_from_billing``); billing never does.
    cs_user: dict[str, Any] | None = None


# ---------------------------------------------------------------------- reading ComputeStacks


def read_new_rows(cs: Any, cs_user_id: int, *, floor: RowKey, billing_start: datetime | None,
                  per_page: int, on_user: Callable[[dict[str, Any]], None] | None = None) -> list[UsageRow]:
    """Rows above the account's scan floor, newest first. Stops below the floor (rows created at the
    floor's very instant are still read: the listing's order among equal times is arbitrary), or, on
    the first read of an account, a day before BILLING_START: older rows can never be billed.
    ``on_user`` is called once with the ``user`` the first row listed carries (even a row below the floor)."""
    stop_before = billing_start - timedelta(days=1) if billing_start else None
    rows: list[UsageRow] = []
    for raw in cs.iter_billing_usages(cs_user_id, per_page=per_page):
        if on_user is not None:
            user = raw.get("user") if isinstance(raw, dict) else None
            if isinstance(user, dict):
                on_user(dict(user))
            on_user = None
        row = parse_row(raw)
        if row.created_at < floor[0] or (row.created_at == floor[0] == NO_TIME and row.id <= floor[1]):
            break
        rows.append(row)
        if stop_before is not None and row.period_end < stop_before:
            break
    return rows


# HTTP answers to AddBillableItem that do not say whether the item was created. A 2xx means PHP ran the
# action (an answer that is not JSON, e.g. a PHP notice printed before it, or JSON without a result);
# 502/504 and Cloudflare's 520-524 mean a proxy gave up on PHP, which may have gone on and created it.
# Only WHMCS's own "result: error", a 5xx WHMCS itself sends (500, 503: nothing applied) and a request
# that never left count as definite failures, sent again later.
AMBIGUOUS_STATUSES = frozenset({502, 504, 520, 521, 522, 523, 524})


def ambiguous_answer(exc: UpstreamError) -> bool:
    if isinstance(exc, UpstreamApiError | UpstreamAuthFailed):
        return False  # WHMCS (or its auth layer) answered clearly: nothing was created
    status = exc.http_status
    return status is None or 200 <= status < 300 or status in AMBIGUOUS_STATUSES


def _user_currency(user: Any) -> str | None:
    if user is None:
        return None
    value = user.get("currency") if isinstance(user, dict) else getattr(user, "currency", None)
    return str(value).upper() if value else None


# ---------------------------------------------------------------------- the worker


class AccountWorker:
    def __init__(self, deps: WorkerDeps, message: WorkMessage, *, dry_run: bool = False) -> None:
        self.d = deps
        self.run = message.run
        self.account = message.account
        self.dry_run = dry_run
        self.result = AccountResult(self.account.service_id, self.account.cs_user_id)
        self._rows: list[UsageRow] | None = None
        self._read_at: datetime | None = None  # when the rows were listed
        self._state: AccountState | None = None  # as last read or written by us
        self._billing: bool | None = None  # decided once per message (see _bills)
        self._claim_mark: tuple[str, str, Line] | None = None  # the first new line, marked by the claim's write

    # ------------------------------------------------------------------ state item

    def _load(self) -> AccountState:
        """A working copy of the state. After our own successful write the copy in memory is what is
        stored (every write is conditional on the version), so it is read again only after a conflict."""
        if self._state is None:
            self._state = self.d.ledger.load(self.account.cs_user_id)
        return self._state.copy()

    def _save(self, state: AccountState, record: Line | list[Line] | None = None) -> None:
        try:
            if record is None:
                self.d.ledger.save(state)
            elif isinstance(record, list):
                self.d.ledger.save_with_records(state, record)
            else:
                self.d.ledger.save_with_record(state, record)
        except StateConflict:
            self._state = None  # someone else wrote: read it again
            raise
        self._state = state

    # ------------------------------------------------------------------ entry

    def process(self) -> AccountResult:
        try:
            if self.dry_run:
                self._preview()
            else:
                self._open_lines()
                claimed = self._collect_and_claim()
                self._send_all(claimed, marked=self._claim_mark)
        except BillingAborted as exc:
            self.result.error = str(exc)
        except DomainError as exc:
            self.result.error = exc.message
        if self.result.error is None and any(o.status == "failed" for o in self.result.lines):
            self.result.error = "WHMCS refused or failed a billable item; it will be sent again."
        return self.result

    # ------------------------------------------------------------------ A. open lines

    def _open_lines(self) -> None:
        state = self._load()
        for key in sorted(state.lines):
            line = state.lines[key]
            if line.status == PLANNED:
                self._send(key)
            elif line.status == SENDING:
                self._check_sending(key)

    def _stale(self, line: Line) -> bool:
        if not line.sending_at:
            return True
        return self.d.clock() - parse_time(line.sending_at) > self.d.options.sending_lease

    def _to_attention(self, state: AccountState, key: str, line: Line, reason: str) -> bool:
        """Move a line out of the state into its own "needs attention" item; False on a write conflict."""
        line.status = ATTENTION
        line.reason = reason
        del state.lines[key]
        try:
            self._save(state, line)
        except StateConflict:
            return False
        self.result.lines.append(LineOutcome.of(line, "attention"))
        return True

    def _check_sending(self, key: str) -> None:
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            line = state.lines.get(key)
            if line is None or line.status != SENDING:
                return
            if not self._stale(line):
                self.result.lines.append(LineOutcome.of(line, "in_flight"))
                return
            if not self._to_attention(state, key, line, "interrupted while sending to WHMCS: it may or may not "
                                      f"have been created; search WHMCS billable items for [ref {line.ref}]"):
                continue
            return
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    # ------------------------------------------------------------------ B + C. collect and claim

    def _cs_ready(self) -> None:
        """Called before this account's first ComputeStacks request: raises when the run may not use
        ComputeStacks (now). An account that needs no request (read by the close run, or again in the same
        run) is billed whatever the credentials' state, and costs the gate nothing."""
        if self.d.cs_gate is not None:
            self.d.cs_gate.check(self.run.run_id)

    def _rows_for(self, state: AccountState) -> list[UsageRow]:
        if self._rows is None:
            self._cs_ready()
            self._read_at = self.d.clock()
            try:
                self._rows = read_new_rows(self.d.cs, self.account.cs_user_id, floor=state.scan_floor,
                                           billing_start=self.d.billing_start, per_page=self.d.options.per_page,
                                           on_user=self._saw_user)
            except NotFound:
                # The user was deleted in ComputeStacks: nothing new to read; what was collected is still billed.
                self._rows = []
                self.result.missing = True
            self.result.read = True
        return self._rows

    def _saw_user(self, user: dict[str, Any]) -> None:
        if self.result.cs_user is None:
            self.result.cs_user = user

    def _bills(self) -> bool:
        """A month-end message bills; so does a close message reached at or after its cut-off (the close
        run still reading when the month-end run starts): it is then the same work for the same as-of and
        period, so the account is billed by whichever of its two messages comes first (section 3b)."""
        if self._billing is None:
            self._billing = self.run.kind == BILL or (self.run.kind == CLOSE and self.d.clock() >= self.run.as_of)
        return self._billing

    def _refresh_currency(self, state: AccountState) -> bool:
        """The ComputeStacks user's currency (amounts are in it): cached in the state, re-read now and
        then during collections, so a month-end run costs no extra request."""
        now = self.d.clock()
        stale = state.cs_currency_at is None or now - state.cs_currency_at > self.d.options.currency_refresh
        # Only a daily collection refreshes: at month-end (bill and close runs) every request counts.
        if state.cs_currency and not (stale and self.run.kind == COLLECT):
            return False
        from cswhmcs.adapters.computestacks import UserSelector

        self._cs_ready()
        user = self.d.cs.get_user(UserSelector.by_id(self.account.cs_user_id))
        if isinstance(user, dict):
            self.result.cs_user = dict(user)  # the full user: newer than a row's copy
        currency = _user_currency(user)
        currency = currency or state.cs_currency or self.account.currency
        if not currency:
            raise ConfigurationError(f"ComputeStacks user #{self.account.cs_user_id} has no currency.")
        changed = currency != state.cs_currency
        state.cs_currency, state.cs_currency_at = currency, now
        return changed or stale

    def _update(self, state: AccountState) -> tuple[bool, list[Line]]:
        """Steps B and C on ``state`` (in memory). Returns (changed, new lines). Run again from a fresh
        state after a conflict, so it reports from scratch."""
        changed = False
        self.result.carried = []
        self.result.held = []
        if needs_rows(state, self.run.as_of):
            floor_time = state.scan_floor[0] if state.scan_floor != ZERO_KEY else None
            rows = self._rows_for(state)
            read_at = self._read_at or self.d.clock()
            # The settling margin counts back from when the rows were listed: a run read before its as-of
            # (an operator's --as-of in the future, a close run) must not move the floor past rows not yet
            # committed.
            early = self.run.as_of - read_at
            before = state.absorbed_upto
            absorption = absorb(state, rows, as_of=self.run.as_of, billing_start=self.d.billing_start,
                                settle=SETTLE + max(early, timedelta(0)))
            self.result.rows_absorbed = len(absorption.absorbed)
            self.result.rows_deferred = len(absorption.deferred)
            if self.run.kind == CLOSE:
                # Read before the cut-off: the month-end run bills without reading again only if nothing
                # more can end before the cut-off (section 3b); otherwise it reads the account again.
                self.result.complete = complete_for(rows, as_of=self.run.as_of, read_at=read_at,
                                                    history_from=floor_time,
                                                    interval=self.d.options.cs_collect_interval)
                if not self.result.complete:
                    state.absorbed_upto = max(before, read_at) if before is not None else read_at
            changed = True
        if not self._bills():
            if state.rows_absorbed and self._refresh_currency(state):
                changed = True
            return changed, []
        # Reported only (what is billed does not change): rows of a period whose line was already
        # claimed, e.g. by an operator's run in the middle of the month, wait for the next period.
        held_currency = state.cs_currency or self.account.currency or ""
        self.result.held = [(c.product_label, c.total, held_currency)
                            for c in held(state, as_of=self.run.as_of, period=self.run.period)]
        found = candidates(state, as_of=self.run.as_of, period=self.run.period)
        if not found:
            return changed, []
        if self._refresh_currency(state):
            changed = True
        if self.account.client_id is None:
            raise ConfigurationError(f"Service #{self.account.service_id} has no WHMCS client id in its mapping.")
        source = state.cs_currency or ""
        target = self._target_currency(self.account.client_id, state)
        table = self.d.currency_table(self.run) if source != target else CurrencyTable([])
        lines = []
        now = iso(self.d.clock())
        for cand in found:
            exact, factor = table.convert(cand.total, source, target)
            if exact < CENT:  # 1 cent is the smallest unit billed: the rows wait for the next run
                changed = carry(state, cand) or changed
                self.result.carried.append((cand.product_label, exact, target))
                continue
            ref = line_ref(self.account.cs_user_id, self.run.period, cand.product_id)
            note = conversion_note(cand.total, source, target, factor) if source != target else ""
            line = Line(
                period=self.run.period, product_id=cand.product_id, product_name=cand.product_label,
                description=describe(product_name=cand.product_name, product_label=cand.product_label,
                                     first_start=cand.first_start, last_end=cand.last_end, period=self.run.period,
                                     email=self.account.email, cs_user_id=self.account.cs_user_id, ref=ref,
                                     conversion=note),
                amount=cents(exact), currency=target, source_total=cand.total, source_currency=source,
                rate=factor, quantity=cand.qty, unit_mode=self.run.unit_mode,
                invoice_action=self.d.invoice_action,
                due_date=due_date(self.run.period, self.d.due_day).isoformat(),
                client_id=self.account.client_id, service_id=self.account.service_id,
                cs_user_id=self.account.cs_user_id, email=self.account.email, rows=cand.rows,
                first_start=iso(cand.first_start), last_end=iso(cand.last_end), run_id=self.run.run_id,
                created_at=now,
            )
            claim(state, cand, line)
            lines.append(line)
            changed = True
        return changed, lines

    def _before_claim_save(self, state: AccountState, keys: list[str]) -> None:
        """The last change to the claim's write (of the new lines ``keys``): it also marks the first line
        ``sending`` when it may be sent (one write fewer; a crash after it is the crash after that line's
        own mark, docs/billing.md section 5). The receiver path marks every line in it instead."""
        self._claim_mark = None
        line = state.lines.get(keys[0]) if keys else None
        if line is not None and self._markable(line):
            token = uuid.uuid4().hex
            self._mark_in(line, token)
            self._claim_mark = (keys[0], token, line)

    def _forget_claim_marks(self) -> None:
        """The claim's write failed: what ``_before_claim_save`` did to it is void."""
        self._claim_mark = None

    def _target_currency(self, client_id: int, state: AccountState) -> str:
        """The WHMCS client's currency, in which its lines are billed (GetClientsDetails, once per process)."""
        return self.d.client_currency(client_id, self.run)

    def _collect_and_claim(self) -> list[str]:
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            changed, lines = self._update(state)
            if not changed:
                return []
            self._before_claim_save(state, [line.key for line in lines])
            self.d.faults("claim.before_save")
            try:
                self._save(state)  # the intent: rows claimed by lines, running totals advanced
            except StateConflict:
                self._forget_claim_marks()
                continue
            self.d.faults("claim.after_save")
            return [line.key for line in lines]
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    # ------------------------------------------------------------------ D. send

    def _send(self, key: str) -> None:
        self._send_all([key])

    def _send_all(self, keys: list[str], *, marked: tuple[str, str, Line] | None = None) -> None:
        """Send the lines ``keys`` one after another. The write that records a line's answer also marks the
        next line ``sending`` (one write instead of two, docs/billing.md section 5): a crash after it is the
        crash after a mark of the next line's own, so it leaves nothing worse than that did. ``marked``
        (key, token, line): the first line, when the claim's write marked it."""
        for i, key in enumerate(keys):
            if marked is not None and marked[0] == key:
                token, line = marked[1], marked[2]
            else:
                got = self._mark_for_send(key)
                if got is None:
                    marked = None
                    continue
                token, line = got
            marked = self._deliver(key, token, line, then=keys[i + 1] if i + 1 < len(keys) else None)

    def _time_to_send(self) -> bool:
        return deadline.current().remaining() >= max(MIN_ATTEMPT_SECONDS, attempt_seconds(self.d.whmcs))

    def _markable(self, line: Line | None) -> bool:
        """Whether ``line`` may be marked ``sending`` as it is (``_mark_for_send`` handles every other case)."""
        return (line is not None and line.status == PLANNED and line.attempts < self.d.options.max_send_attempts
                and line.via != RECEIVER and self._time_to_send())

    def _mark_in(self, line: Line, token: str) -> None:
        line.status, line.token, line.sending_at = SENDING, token, iso(self.d.clock())
        line.attempts += 1

    def _mark_for_send(self, key: str) -> tuple[str, Line] | None:
        """Mark the line ``key`` ``sending`` with a new token (its own write); None when it is not to be sent
        (finished or in flight elsewhere, or moved to attention here)."""
        token = uuid.uuid4().hex
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            line = state.lines.get(key)
            if line is None:
                return None  # finished by someone else meanwhile
            if line.status != PLANNED:
                self.result.lines.append(LineOutcome.of(line, "in_flight"))
                return None
            if line.attempts >= self.d.options.max_send_attempts:
                if not self._to_attention(state, key, line, _refused_reason(line)):
                    continue
                return None
            if line.via == RECEIVER:
                # It may have reached the billing receiver (which is no longer configured): AddBillableItem
                # has no ref, so sending it here could bill it twice.
                if not self._to_attention(state, key, line, VIA_RECEIVER_REASON.format(ref=line.ref)):
                    continue
                return None
            if not self._time_to_send():
                raise BillingAborted(OUT_OF_TIME)  # before "sending": nothing is left half-sent
            self._mark_in(line, token)
            try:
                self._save(state)
            except StateConflict:
                continue
            return token, line
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    def _deliver(self, key: str, token: str, line: Line, *, then: str | None) -> tuple[str, str, Line] | None:
        """Send the marked ``line`` and record the answer; returns the next line ``then`` if that write
        marked it too."""
        self.d.faults("send.after_mark")
        outcome, billable_id, reason = self._call_whmcs(line)
        self.d.faults("send.after_call")
        follow = self._finish(key, token, outcome, billable_id, reason, then=None if outcome == RELEASED else then)
        if outcome == RELEASED:
            raise BillingAborted(reason)
        return follow

    def _call_whmcs(self, line: Line) -> tuple[str, int | None, str]:
        try:
            billable_id = self.d.whmcs.add_billable_item(
                client_id=line.client_id, description=line.description, amount=line.amount,
                quantity=line.quantity, unit_mode=line.unit_mode, invoice_action=line.invoice_action,
                due_date=datetime.fromisoformat(line.due_date).date() if line.due_date else None,
            )
            return DONE, int(billable_id), ""
        except OutOfTime:  # the client sent nothing
            return RELEASED, None, OUT_OF_TIME
        except RateLimited as exc:  # refused before anything was applied
            return RELEASED, None, f"{exc.message} The account will be retried."
        except UpstreamTimeout as exc:
            if exc.maybe_applied:
                return ATTENTION, None, (f"{exc.message} It may or may not have been created: search WHMCS "
                                         f"billable items for [ref {line.ref}]")
            return "failed", None, exc.message
        except UpstreamError as exc:
            if ambiguous_answer(exc):
                return ATTENTION, None, (f"{exc.message} It may or may not have been created: search WHMCS "
                                         f"billable items for [ref {line.ref}]")
            return "failed", None, exc.message
        except DomainError as exc:
            return "failed", None, exc.message
        except Exception as exc:  # an unknown error after the request may have left: ambiguous
            return ATTENTION, None, (f"unexpected {type(exc).__name__} while sending; search WHMCS billable "
                                     f"items for [ref {line.ref}]")

    def _record_answer(self, key: str, token: str, outcome: str, billable_id: int | None, late_reason: str,
                       where: Callable[[], tuple[str, int]], apply: Callable[[AccountState, Line], None]) -> None:
        """Record one send's answer on the stored line ``key`` with ``apply`` (loaded again after a
        conflict) while the line is still this send's (``token``). Another worker moved it meanwhile (it
        judged the send interrupted and reported it, or sent it itself): left as it is, but a success
        settles a report (the line's ``where``: period and product id)."""
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            line = state.lines.get(key)
            if line is None or line.token != token:
                if outcome == DONE and billable_id is not None:
                    period, product = where()
                    record = self.d.ledger.get_line(self.account.cs_user_id, period, product)
                    if record is not None and record.status == ATTENTION:
                        self.d.ledger.mark_done_late(record, billable_id)
                        record.billable_id = billable_id
                        self.result.lines.append(LineOutcome.of(record, "created", late_reason))
                return
            try:
                apply(state, line)
            except StateConflict:
                continue
            self.d.faults("send.after_finish")
            return
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    def _finish(self, key: str, token: str, outcome: str, billable_id: int | None, reason: str, *,
                then: str | None = None) -> tuple[str, str, Line] | None:
        """Record one send's answer; in the same write mark the line ``then`` ``sending`` when it may be
        sent as it is. Returns that line (key, token, line) if the write marked it."""
        follow: tuple[str, str, Line] | None = None

        def apply(state: AccountState, line: Line) -> None:
            nonlocal follow
            follow = None
            nxt = state.lines.get(then) if then is not None and then != key else None
            nxt_token = uuid.uuid4().hex
            if nxt is not None and self._markable(nxt):
                self._mark_in(nxt, nxt_token)
            else:
                nxt = None
            if outcome == DONE:
                line.status, line.billable_id, line.token = DONE, billable_id, ""
                del state.lines[key]
                self._save(state, line)
                self.result.lines.append(LineOutcome.of(line, "created"))
            elif outcome == ATTENTION:
                line.status, line.reason = ATTENTION, reason
                del state.lines[key]
                self._save(state, line)
                self.result.lines.append(LineOutcome.of(line, "attention"))
            elif outcome == RELEASED:  # never sent: as it was before this attempt
                line.status, line.token, line.sending_at = PLANNED, "", ""
                line.attempts = max(0, line.attempts - 1)
                self._save(state)
            else:
                line.status, line.token, line.sending_at, line.last_error = PLANNED, "", "", reason
                self._save(state)
                self.result.lines.append(LineOutcome.of(line, "failed", reason))
            if nxt is not None and then is not None:
                follow = (then, nxt_token, nxt)

        self._record_answer(key, token, outcome, billable_id, "",
                            lambda: (key.split("#")[0], int(key.split("#p")[1])), apply)
        return follow

    # ------------------------------------------------------------------ preview

    def _preview(self) -> None:
        """What a run would do, reading only: nothing is written, nothing is sent."""
        state = self.d.ledger.load(self.account.cs_user_id)
        for line in state.lines.values():
            if line.status == PLANNED or (line.status == SENDING and not self._stale(line)):
                self.result.lines.append(LineOutcome.of(line, "would_send" if line.status == PLANNED else "in_flight"))
            else:
                self.result.lines.append(LineOutcome.of(line, "attention", "interrupted while sending"))
        _, lines = self._update(state)
        self.result.lines += [LineOutcome.of(line, "would_bill") for line in lines]


def process_account(message: WorkMessage, deps: WorkerDeps, *, dry_run: bool = False) -> AccountResult:
    """One account. With a receiver (and not a preview) it goes the receiver's way, so that no caller
    mixes the two paths: a line that may have reached the receiver is never sent by AddBillableItem."""
    if deps.receiver is not None and not dry_run:
        return observe_results(_ReceiverBatch(deps, [message]).process())[0]
    result = AccountWorker(deps, message, dry_run=dry_run).process()
    return result if dry_run else observe_results([result])[0]


def observe_results(results: list[AccountResult]) -> list[AccountResult]:
    """Count what these accounts did (``cswhmcs.observability``): ``LinesBilled`` and ``AmountBilled`` (per
    currency) for the billable items created, ``LinesNeedingAttention``, and ``AccountsFailed`` for the
    accounts not finished. A preview is never counted."""
    billed: dict[str, Decimal] = {}
    lines = attention = failed = 0
    for result in results:
        failed += bool(result.error)
        for outcome in result.lines:
            if outcome.status == "created":
                lines += 1
                billed[outcome.currency] = billed.get(outcome.currency, Decimal(0)) + outcome.amount
            elif outcome.status == "attention":
                attention += 1
    if lines:
        observability.count(observability.LINES_BILLED, lines)
    for currency, amount in billed.items():
        observability.add_amount(observability.AMOUNT_BILLED, float(amount), currency=currency or "unknown")
    if attention:
        observability.count(observability.LINES_NEEDING_ATTENTION, attention)
    if failed:
        observability.count(observability.ACCOUNTS_FAILED, failed)
    return results



# ---------------------------------------------------------------------- through the billing receiver

# Currency refusals converted again with fresh rates and sent again within one call; a line still
# refused after these is a definite failure (counted, like any other refusal).
MAX_RECONVERSIONS = 2
RECEIVER_LOST = ("The billing receiver's answer was lost or it could not be asked ({why}); the lines will be sent "
                 "again with the same ref (safe: a ref creates at most one billable item).")
RECEIVER_REFUSED = "The billing receiver refused a billable item; it will be sent again."


@dataclass
class _Marked:
    """One line marked ``sending`` by this call (``token``): what is sent, and whose it is."""

    worker: ReceiverAccountWorker
    key: str
    token: str
    line: Line

    def item(self) -> Any:
        from cswhmcs.adapters.receiver import ReceiverItem

        line = self.line
        return ReceiverItem(ref=line.ref, client_id=line.client_id, description=line.description,
                            amount=line.amount, currency=line.currency, quantity=line.quantity,
                            unit=line.unit_mode, invoice_action=line.invoice_action,
                            due_date=line.due_date or None)


class ReceiverAccountWorker(AccountWorker):
    """One account on the receiver path (docs/billing.md, "Sending through the billing receiver").

    The same steps and conditional writes as ``AccountWorker``, except that sending is split: ``prepare``
    marks every line to send ``sending`` in one write (``_ReceiverBatch`` then sends the lines of all its
    accounts together), and the ``settle_*`` methods record each answer. A lost answer is not a
    "needs attention": the same ref is sent again, and the receiver answers ``existing``.
    """

    def __init__(self, deps: WorkerDeps, message: WorkMessage) -> None:
        super().__init__(deps, message)
        self.marked: list[_Marked] = []
        self._stamped: tuple[list[str], list[str], str] | None = None  # marked by the claim's write

    def guarded(self, step: Callable[[], Any]) -> Any:
        """Run one step of this account; a failure of it ends this account only (it is retried)."""
        try:
            return step()
        except BillingAborted as exc:
            self.result.error = self.result.error or str(exc)
        except DomainError as exc:
            self.result.error = self.result.error or exc.message
        except Exception as exc:  # e.g. DynamoDB refusing: this account fails, the others go on
            logger.warning("billing account failed", extra={"service_id": self.account.service_id,
                                                            "error": type(exc).__name__})
            self.result.error = self.result.error or f"{type(exc).__name__}: {str(exc)[:200]}"
        return None

    # ------------------------------------------------------------------ A-C and the mark

    def prepare(self) -> None:
        def steps() -> None:
            self._receiver_open_lines()
            self._collect_and_claim()
            self._mark()

        self.guarded(steps)

    def _receiver_open_lines(self) -> None:
        """Lines needing an operator: refused too often, or left ``sending`` by the API path (the
        receiver cannot know about an AddBillableItem). The others are marked by ``_mark``."""
        state = self._load()
        for key in sorted(state.lines):
            line = state.lines[key]
            if line.status == PLANNED and line.attempts >= self.d.options.max_send_attempts:
                self._give_up(key)
            elif line.status == SENDING and line.via != RECEIVER:
                self._check_sending(key)

    def _give_up(self, key: str) -> None:
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            line = state.lines.get(key)
            if line is None or line.status != PLANNED or line.attempts < self.d.options.max_send_attempts:
                return
            if self._to_attention(state, key, line, _refused_reason(line)):
                return
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    def _target_currency(self, client_id: int, state: AccountState) -> str:
        """No GetClientsDetails on this path: the receiver checks the currency and, when it is not the
        client's, says which it is (``reconvert``). Until then: what this process learnt, else the
        mapping's (the client's currency when the service was created), else the user's."""
        code = self.d.known_client_currency(client_id) or self.account.currency or state.cs_currency
        if not code:
            raise ConfigurationError(f"ComputeStacks user #{self.account.cs_user_id} has no currency.")
        return code.upper()

    def _fits(self) -> bool:
        return deadline.current().remaining() >= max(MIN_ATTEMPT_SECONDS, attempt_seconds(self.d.receiver))

    def _stamp(self, state: AccountState) -> tuple[list[str], list[str], str]:
        """On ``state`` (in memory): every line to send -> ``sending`` (one token, ``via=receiver``):
        planned lines, and ``sending`` ones of this path left longer than the lease (sent again with the
        same ref: safe). Returns (keys to send, keys in flight elsewhere, token). Raises when no whole
        receiver attempt fits any more, before anything is stamped (nothing is left half-sent)."""
        todo: list[str] = []
        flying: list[str] = []
        for key in sorted(state.lines):
            line = state.lines[key]
            if line.status == PLANNED and line.attempts < self.d.options.max_send_attempts:
                todo.append(key)
            elif line.status == SENDING and line.via == RECEIVER:
                (todo if self._stale(line) else flying).append(key)
        token = uuid.uuid4().hex
        if todo:
            if not self._fits():
                raise BillingAborted(OUT_OF_TIME)
            stamp = iso(self.d.clock())
            for key in todo:
                line = state.lines[key]
                line.status, line.token, line.sending_at, line.via = SENDING, token, stamp, RECEIVER
        return todo, flying, token

    def _before_claim_save(self, state: AccountState, keys: list[str]) -> None:
        # The claim's own write also marks the lines: one DynamoDB request fewer per account. Out of time,
        # the lines are claimed as planned only (the next delivery sends them), never half-marked.
        self._stamped = None
        if any(line.status == PLANNED for line in state.lines.values()) and self._fits():
            self._stamped = self._stamp(state)

    def _forget_claim_marks(self) -> None:
        self._stamped = None

    def _mark(self) -> None:
        """Every line to send -> ``sending`` in one conditional write (see ``_stamp``), unless the claim's
        write just did it. Attempts are counted only when the receiver refuses."""
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            stamped, self._stamped = self._stamped, None
            if stamped is not None:
                todo, flying, token = stamped  # written with the claim: ``state`` is what is stored
            else:
                todo, flying, token = self._stamp(state)
                if todo:
                    try:
                        self._save(state)
                    except StateConflict:
                        continue
            self.result.lines += [LineOutcome.of(state.lines[key], "in_flight") for key in flying]
            self.marked = [_Marked(self, key, token, state.lines[key].copy()) for key in todo]
            if todo:
                self.d.faults("send.after_mark")
            return
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    # ------------------------------------------------------------------ answers

    def _settle(self, m: _Marked, outcome: str, *, billable_id: int | None = None, reason: str = "") -> None:
        """Record one answer: ``DONE``, ``RELEASED`` (unknown / not sent: planned again, not counted) or
        "failed" (a definite refusal: planned again, counted)."""
        def apply(state: AccountState, line: Line) -> None:
            if outcome == DONE:
                line.status, line.billable_id, line.token = DONE, billable_id, ""
                del state.lines[m.key]
                self._save(state, line)
                self.result.lines.append(LineOutcome.of(line, "created", reason))
            elif outcome == RELEASED:
                line.status, line.token, line.sending_at = PLANNED, "", ""
                self._save(state)
                self.result.error = self.result.error or reason
            else:
                line.status, line.token, line.sending_at, line.last_error = PLANNED, "", "", reason
                line.attempts += 1
                self._save(state)
                self.result.lines.append(LineOutcome.of(line, "failed", reason))

        self._record_answer(m.key, m.token, outcome, billable_id, reason,
                            lambda: (m.line.period, m.line.product_id), apply)

    def settle(self, m: _Marked, outcome: str, *, billable_id: int | None = None, reason: str = "") -> None:
        self.guarded(lambda: self._settle(m, outcome, billable_id=billable_id, reason=reason))

    def settle_done(self, done: list[tuple[_Marked, int, str]]) -> None:
        """Several ``DONE`` answers of this account in one write (the state and every finished line's item,
        atomically): what ``_settle`` does for each, with one DynamoDB request instead of one per line."""
        if len(done) == 1:
            m, billable_id, reason = done[0]
            self.settle(m, DONE, billable_id=billable_id, reason=reason)
            return
        self.guarded(lambda: self._settle_done(done))

    def _settle_done(self, done: list[tuple[_Marked, int, str]]) -> None:
        size = self.d.ledger.MAX_RECORDS_PER_WRITE
        for start in range(0, len(done), size):
            self._settle_done_chunk(done[start:start + size])

    def _settle_done_chunk(self, done: list[tuple[_Marked, int, str]]) -> None:
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            mine: list[tuple[Line, str]] = []
            moved: list[tuple[_Marked, int, str]] = []
            for m, billable_id, reason in done:
                line = state.lines.get(m.key)
                if line is None or line.token != m.token:
                    moved.append((m, billable_id, reason))  # another worker moved it: settled one by one
                    continue
                line.status, line.billable_id, line.token = DONE, billable_id, ""
                del state.lines[m.key]
                mine.append((line, reason))
            if mine:
                try:
                    self._save(state, [line for line, _ in mine])
                except StateConflict:
                    continue
                self.result.lines += [LineOutcome.of(line, "created", reason) for line, reason in mine]
                self.d.faults("send.after_finish")
            for m, billable_id, reason in moved:
                self._settle(m, DONE, billable_id=billable_id, reason=reason)
            return
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    def reconvert(self, m: _Marked, code: str, fresh: CurrencyTable) -> _Marked | None:
        """The receiver refused the line's currency: the same ref, converted from the ComputeStacks
        amount into the client's currency ``code`` with fresh rates, marked ``sending`` again (or left
        planned when no attempt fits any more). None when it is not to be sent again in this call."""
        result: _Marked | None = self.guarded(lambda: self._reconvert(m, code, fresh))
        return result

    def _reconvert(self, m: _Marked, code: str, fresh: CurrencyTable) -> _Marked | None:
        code = code.upper()
        self.d.remember_client_currency(m.line.client_id, code)
        for _ in range(self.d.options.max_conflicts):
            state = self._load()
            line = state.lines.get(m.key)
            if line is None or line.token != m.token:
                return None  # moved meanwhile; refused: nothing was created, nothing to record
            try:
                exact, factor = fresh.convert(line.source_total, line.source_currency, code)
            except DomainError as exc:  # e.g. WHMCS lists no such currency: counted like a refusal
                self._settle(m, "failed", reason=exc.message)
                return None
            if exact < CENT:
                # Under a cent in the client's real currency: carried over like any sub-cent amount.
                unclaim(state, line)
                try:
                    self._save(state)
                except StateConflict:
                    continue
                self.result.carried.append((line.product_name, exact, code))
                return None
            had = line.source_currency.upper() != line.currency.upper()
            note = conversion_note(line.source_total, line.source_currency, code, factor) \
                if line.source_currency.upper() != code else ""
            line.description = redescribe(line.description, line.ref, note, had_conversion=had)
            line.amount, line.currency, line.rate = cents(exact), code, factor
            fits = self._fits()
            token = uuid.uuid4().hex if fits else ""
            line.status = SENDING if fits else PLANNED
            line.token, line.sending_at = token, iso(self.d.clock()) if fits else ""
            try:
                self._save(state)
            except StateConflict:
                continue
            if not fits:
                self.result.error = self.result.error or OUT_OF_TIME
                return None
            self.d.faults("send.after_mark")
            return _Marked(self, m.key, token, line.copy())
        raise BillingAborted("The account's billing state kept changing; it will be retried.")

    def conclude(self) -> AccountResult:
        if self.result.error is None and any(o.status == "failed" for o in self.result.lines):
            self.result.error = RECEIVER_REFUSED
        return self.result


class _ReceiverBatch:
    """The accounts of one ``process_accounts`` call: each prepared (claimed and marked), then all
    their lines sent together, up to ``MAX_ITEMS`` per request, and each answer recorded."""

    def __init__(self, deps: WorkerDeps, messages: Sequence[WorkMessage]) -> None:
        self.d = deps
        self.receiver = deps.receiver
        self.workers = [ReceiverAccountWorker(deps, m) for m in messages]
        self._fresh: CurrencyTable | None = None

    def process(self) -> list[AccountResult]:
        marked: list[_Marked] = []
        for worker in self.workers:
            # The lines are sent after every account is prepared: an account is only started while the
            # sends still fit behind it (a few whole receiver attempts); the rest are retried untouched.
            if marked and deadline.current().remaining() < self._send_reserve():
                worker.result.error = OUT_OF_TIME
                continue
            worker.prepare()
            marked += worker.marked
        for round_ in range(MAX_RECONVERSIONS + 1):
            if not marked:
                break
            marked = self._send_round(marked, last=round_ == MAX_RECONVERSIONS)
        return [worker.conclude() for worker in self.workers]

    SEND_RESERVE_ATTEMPTS = 3

    def _send_reserve(self) -> float:
        return self.SEND_RESERVE_ATTEMPTS * max(MIN_ATTEMPT_SECONDS, attempt_seconds(self.receiver))

    def _send_round(self, marked: list[_Marked], *, last: bool) -> list[_Marked]:
        size = max(1, int(getattr(self.receiver, "MAX_ITEMS", 100)))
        again: list[_Marked] = []
        for start in range(0, len(marked), size):
            again += self._send_chunk(marked[start:start + size], last=last)
        return again

    def _call(self, chunk: list[_Marked]) -> tuple[list[Any] | None, BaseException | None]:
        try:
            return list(self.receiver.send([m.item() for m in chunk])), None
        except Exception as exc:  # judged by the caller
            return None, exc
        finally:
            self.d.faults("send.after_call")

    def _send_chunk(self, chunk: list[_Marked], *, last: bool) -> list[_Marked]:
        from cswhmcs.adapters.receiver import ReceiverBadRequest

        sendable: list[_Marked] = []
        for m in chunk:
            try:
                m.item().to_json()
            except ValueError as bad:  # the receiver could only refuse it: never sent, counted
                m.worker.settle(m, "failed", reason=f"not sent to the billing receiver: {bad}")
            else:
                sendable.append(m)
        chunk = sendable
        if not chunk:
            return []
        answers, exc = self._call(chunk)
        if isinstance(exc, ReceiverBadRequest):
            # The whole body was refused, nothing written: find the item(s) it is about, so that the
            # others are not counted as refused with it.
            if len(chunk) > 1:
                half = len(chunk) // 2
                return self._send_chunk(chunk[:half], last=last) + self._send_chunk(chunk[half:], last=last)
            chunk[0].worker.settle(chunk[0], "failed", reason=exc.message)
            return []
        if exc is not None or answers is None:
            why = exc.message if isinstance(exc, DomainError) else f"unexpected {type(exc).__name__}"
            for m in chunk:
                m.worker.settle(m, RELEASED, reason=RECEIVER_LOST.format(why=why.rstrip(".")))
            return []
        by_ref: dict[str, Any] = {}
        for answer in answers:
            by_ref.setdefault(str(answer.ref), answer)
        again: list[_Marked] = []
        done: dict[int, list[tuple[_Marked, int, str]]] = {}  # per account (worker): settled in one write each
        for m in chunk:
            answer = by_ref.get(m.line.ref)
            status = getattr(answer, "status", None)
            if answer is None or (status in ("created", "existing") and answer.billable_id is None):
                m.worker.settle(m, RELEASED, reason=RECEIVER_LOST.format(why="no answer for this item"))
            elif status in ("created", "existing"):
                done.setdefault(id(m.worker), []).append(
                    (m, int(answer.billable_id), "existing" if status == "existing" else ""))
            elif status == "refused" and answer.code == "currency_mismatch" and not last:
                nxt = self._reconvert(m, answer)
                if nxt is not None:
                    again.append(nxt)
            else:
                message = str(getattr(answer, "message", "") or "") or "refused by the billing receiver"
                m.worker.settle(m, "failed", reason=f"billing receiver: {message}")
        for answered in done.values():
            answered[0][0].worker.settle_done(answered)
        return again

    def _reconvert(self, m: _Marked, answer: Any) -> _Marked | None:
        """Fresh rates (read once per call) and the client's currency (from the answer, else WHMCS)."""
        try:
            fresh = self.fresh_rates()
            code = str(answer.currency or "").strip().upper()
            if not code:
                code = fresh.code_of(self.d.whmcs.get_client(m.line.client_id))
        except DomainError as exc:  # WHMCS could not tell now: sent again later, not counted
            m.worker.settle(m, RELEASED, reason=f"The line must be converted again, but {exc.message}")
            return None
        return m.worker.reconvert(m, code, fresh)

    def fresh_rates(self) -> CurrencyTable:
        if self._fresh is None:
            self._fresh = CurrencyTable.from_whmcs(self.d.whmcs.get_currencies())
        return self._fresh


def process_accounts(messages: Sequence[WorkMessage], deps: WorkerDeps) -> list[AccountResult]:
    """Several accounts at once (results in message order). Without a receiver: ``process_account``
    for each. With one (``deps.receiver``): each account claimed and marked as usual, then the lines
    of all of them sent to the receiver together (``MAX_ITEMS`` per request), so that a month-end costs
    about one WHMCS request per ~50 lines instead of one per line plus one per account."""
    if deps.receiver is None:
        return [process_account(m, deps) for m in messages]
    return observe_results(_ReceiverBatch(deps, messages).process())
