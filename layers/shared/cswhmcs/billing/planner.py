"""The planner: one scheduled trigger -> one run -> one work message per account.

* The run's as-of is the trigger's ``scheduled_time`` (never now()), so a trigger retried an hour
  later still bills the same period. ``pk=run#<kind>#<as-of>`` makes duplicate or retried triggers
  one run: a finished plan is not repeated, a planner that died half-way is resumed (re-sending
  messages is harmless: the worker is idempotent per account).
* The values read once per run (WHMCS version -> unit mode, currency rates) are stored in the run
  record and carried by every message.
* Accounts are paged from AccountsTable (parallel scan segments) and sent in batches as they come:
  memory holds a few pages at most, whatever the number of accounts.
* Time (``cswhmcs.deadline``; the Lambda handler sets the function's remaining time less
  ``PLANNER_MARGIN_SECONDS``): the WHMCS reads draw from it, and no page is sent once it has run out.
  A planner out of time raises ``PlanningOutOfTime`` after giving its lease up, like any failed
  planner, so the retry of the invocation (or the next trigger of the same run) resumes the plan.
* The month-end deadline check (``mode: "check"``, a schedule ``MonthEndDeadlineMinutes`` after the
  cut-off): is the month's bill run planned and its work queue drained? It emits ``MonthEndUnfinished``
  (1 or 0), which the template alarms on; it plans nothing (``check_month_end``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cswhmcs import deadline, observability
from cswhmcs.billing.currency import CurrencyTable
from cswhmcs.billing.ledger import Ledger
from cswhmcs.billing.messages import BILL, CLOSE, COLLECT, KINDS, Account, RunContext, WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.usage import is_utc, iso, parse_time, unit_mode_for, zone_or_none
from cswhmcs.errors import InvalidInput
from cswhmcs.observability import logger

PLANNER_LEASE = timedelta(minutes=14)
# Kept from the planner Lambda's remaining time (900 s timeout) for what follows the last page: giving the
# lease up, the messages already in flight, the open-credit sweep's last request. Its deadline is the
# remaining time less this.
PLANNER_MARGIN_SECONDS = 30.0


class PlanningOutOfTime(Exception):
    """The planner's time ran out before every account had its message; the run is left to be resumed."""

    def __init__(self, run_id: str, sent: int) -> None:
        super().__init__(f"The billing planner ran out of time after enqueuing {sent} accounts of run {run_id}; "
                         "the run was released and the next attempt resumes it.")
        self.run_id = run_id
        self.sent = sent


class WorkSink(Protocol):
    """Where work messages go: SQS in AWS, a thread pool in-process."""

    def send(self, messages: list[WorkMessage]) -> None: ...

    def flush(self) -> None: ...


@dataclass
class Trigger:
    kind: str
    as_of: datetime
    execution_id: str = ""
    timezone: str = ""  # the schedule's zone (ScheduleExpressionTimezone), when the trigger names it

    @property
    def run_id(self) -> str:
        return f"{self.kind}#{iso(self.as_of)}"


# The close run's default lead: from ComputeStacks' last collection before a 23:00 cut-off (21:20) to the cut-off.
CLOSE_LEAD_MINUTES = 100
MAX_CLOSE_LEAD_MINUTES = 720


def _scheduled_time(event: Mapping[str, Any], what: str, keys: tuple[str, ...]) -> datetime:
    """The time of a Scheduler input, to the second: the first of ``keys`` it has (``scheduled_time``,
    then the older names); ``what`` is the input in the messages ("The billing trigger")."""
    raw: Any = None
    for key in keys:
        raw = raw or event.get(key)
    if not raw:
        raise InvalidInput(f"{what} has no scheduled_time.", field="scheduled_time")
    try:
        return parse_time(raw).replace(microsecond=0)
    except ValueError:
        raise InvalidInput(f"{what}'s scheduled_time is not a time.", field="scheduled_time") from None


def parse_trigger(event: Mapping[str, Any]) -> Trigger:
    """The Scheduler input: ``{"mode": "bill"|"collect"|"close", "scheduled_time": ..., "execution_id": ...}``.

    ``close`` (the reads before the month-end cut-off, docs/billing.md section 3b) also takes
    ``"lead_minutes"`` (default 100): its as-of is the cut-off, ``scheduled_time`` + the lead, so that the
    month-end trigger's as-of (the same instant) finds the accounts it read."""
    if not isinstance(event, Mapping):
        raise InvalidInput("The billing trigger is not a JSON object.", field="event")
    kind = str(event.get("mode") or BILL)
    if kind not in KINDS:
        raise InvalidInput(f"Unknown billing mode {kind!r}: use bill, collect or close.", field="mode")
    as_of = _scheduled_time(event, "The billing trigger", ("scheduled_time", "as_of", "time"))
    if kind == CLOSE:
        as_of += timedelta(minutes=_lead_minutes(event.get("lead_minutes", CLOSE_LEAD_MINUTES)))
    elif "lead_minutes" in event:
        raise InvalidInput("lead_minutes is only for the close mode.", field="lead_minutes")
    timezone = str(event.get("timezone") or "").strip()
    if timezone and zone_or_none(timezone) is None:
        if not is_utc(timezone):
            logger.warning("billing trigger names an unknown time zone; periods are UTC months",
                           extra={"timezone": timezone[:64]})
        timezone = ""
    return Trigger(kind=kind, as_of=as_of, execution_id=str(event.get("execution_id") or ""), timezone=timezone)


def _lead_minutes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput("lead_minutes must be a whole number of minutes.", field="lead_minutes")
    try:
        minutes = int(value)
    except ValueError:
        raise InvalidInput("lead_minutes must be a whole number of minutes.", field="lead_minutes") from None
    if not 1 <= minutes <= MAX_CLOSE_LEAD_MINUTES:
        raise InvalidInput(f"lead_minutes must be between 1 and {MAX_CLOSE_LEAD_MINUTES}.", field="lead_minutes")
    return minutes


def read_run_context(whmcs: Any, kind: str) -> dict[str, Any]:
    """Read once per run. A collection sends nothing new to WHMCS, so it reads nothing there; a close run
    may bill (its messages reached after the cut-off), so it reads what a month-end run reads."""
    if kind == COLLECT:
        return {"unit": "hours", "cur": []}
    version = whmcs.version()
    return {"unit": unit_mode_for(version), "version": version or "",
            "cur": CurrencyTable.from_whmcs(whmcs.get_currencies()).to_list()}


@dataclass
class PlanResult:
    run: RunContext | None
    accounts: int = 0
    skipped: str = ""  # why nothing was planned: "done", "busy", "after-bill"


def plan_run(trigger: Trigger, *, ledger: Ledger | None, accounts: Any, whmcs: Any, sink: WorkSink,
             options: BillingOptions | None = None, force: bool = False, segments: int = 4,
             page_size: int = 1000, on_page: Callable[[int], None] | None = None) -> PlanResult:
    """Plan one run. ``ledger=None`` is a dry run: no run record is written."""
    options = options or BillingOptions()
    if ledger is None:
        return _plan(trigger, ledger=None, context=read_run_context(whmcs, trigger.kind), accounts=accounts,
                     sink=sink, segments=segments, page_size=page_size, on_page=on_page)
    if trigger.kind == COLLECT and not force:
        last_bill = ledger.last_bill_run_start()
        if last_bill is not None and timedelta(0) <= trigger.as_of - last_bill <= options.collect_skip_after_bill:
            logger.info("billing collection skipped: a month-end run just read every account",
                        extra={"run": trigger.run_id})
            return PlanResult(None, skipped="after-bill")
    record = ledger.begin_run(trigger.run_id, kind=trigger.kind, as_of=trigger.as_of, lease=PLANNER_LEASE)
    if record.outcome in ("done", "busy") and not force:
        logger.info("billing run already planned or being planned", extra={"run": trigger.run_id,
                                                                            "outcome": record.outcome})
        return PlanResult(None, accounts=record.accounts, skipped=record.outcome)
    try:
        _check_time(trigger.run_id, 0)
        context = record.context
        if not context:
            context = read_run_context(whmcs, trigger.kind)
            ledger.set_run_context(trigger.run_id, context)
        return _plan(trigger, ledger=ledger, context=context, accounts=accounts, sink=sink, segments=segments,
                     page_size=page_size, on_page=on_page)
    except BaseException as exc:
        # Give the lease up: Lambda's retry of this invocation (1-2 minutes later) resumes the plan
        # instead of finding it "busy" and leaving the accounts not yet enqueued without their message.
        ledger.release_run(trigger.run_id)
        if isinstance(exc, PlanningOutOfTime):
            logger.warning("billing planner out of time: the run is released for the next attempt to resume",
                           extra={"run": trigger.run_id, "accounts_sent": exc.sent})
        raise


def _plan(trigger: Trigger, *, ledger: Ledger | None, context: dict[str, Any], accounts: Any, sink: WorkSink,
          segments: int, page_size: int, on_page: Callable[[int], None] | None) -> PlanResult:
    run = RunContext(run_id=trigger.run_id, kind=trigger.kind, as_of=trigger.as_of,
                     unit_mode=str(context.get("unit", "hours")), currencies=list(context.get("cur", [])),
                     timezone=trigger.timezone)

    count = 0
    count_lock = threading.Lock()
    limit = deadline.current()  # read here: the scan threads do not inherit this context

    def scan(segment: int) -> None:
        nonlocal count
        for page in accounts.scan_pages(page_size=page_size, segment=segment, total_segments=segments):
            with count_lock:
                sent = count
            _check_time(trigger.run_id, sent, limit)
            messages = [WorkMessage(run, Account.from_mapping(m)) for m in page]
            sink.send(messages)
            with count_lock:
                count += len(messages)
            if on_page is not None:
                on_page(len(messages))

    if segments <= 1:
        scan(0)
    else:
        with ThreadPoolExecutor(max_workers=segments, thread_name_prefix="plan-scan") as pool:
            for f in [pool.submit(scan, s) for s in range(segments)]:
                f.result()
    sink.flush()
    if ledger is not None:
        ledger.finish_run_planning(trigger.run_id, count)
    logger.info("billing run planned", extra={"run": trigger.run_id, "accounts": count})
    return PlanResult(run, accounts=count)


def _check_time(run_id: str, sent: int, limit: deadline.Deadline | None = None) -> None:
    """Raise ``PlanningOutOfTime`` once the planner's deadline has passed."""
    if (limit or deadline.current()).expired():
        raise PlanningOutOfTime(run_id, sent)


class SqsSink:
    """SendMessageBatch (10 per call) from a small thread pool; bounded, so memory stays flat."""

    def __init__(self, sqs: Any, queue_url: str, *, threads: int = 8, max_in_flight: int = 64) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="plan-sqs")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, messages: list[WorkMessage]) -> None:
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            self._slots.acquire()
            future = self._pool.submit(self._send_batch, chunk)
            future.add_done_callback(lambda _f: self._slots.release())
            with self._lock:
                self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
                self._futures.append(future)

    def _send_batch(self, chunk: list[WorkMessage]) -> None:
        entries = [{"Id": str(i), "MessageBody": m.to_json()} for i, m in enumerate(chunk)]
        for _attempt in range(5):
            answer = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = {f["Id"] for f in answer.get("Failed", [])}
            with self._lock:
                self.sent += len(entries) - len(failed)
            entries = [e for e in entries if e["Id"] in failed]
            if not entries:
                return
        raise RuntimeError(f"SQS refused {len(entries)} billing messages after 5 attempts.")

    def flush(self) -> None:
        with self._lock:
            futures = list(self._futures)
        for f in futures:
            f.result()
        self._pool.shutdown(wait=True)


def lambda_trigger(event: Mapping[str, Any], *, ledger: Ledger, accounts: Any, whmcs: Any, sqs: Any,
                   queue_url: str, options: BillingOptions | None = None) -> dict[str, Any]:
    trigger = parse_trigger(event)
    started = time.monotonic()
    sink = SqsSink(sqs, queue_url)
    result = plan_run(trigger, ledger=ledger, accounts=accounts, whmcs=whmcs, sink=sink, options=options)
    if not result.skipped:
        # The planner's part of the run (the workers' part: LinesBilled, AccountsFailed, ...).
        observability.measure(observability.RUN_DURATION_SECONDS, time.monotonic() - started)
    return {"run": trigger.run_id, "accounts": result.accounts, "skipped": result.skipped,
            "planned_at": datetime.now(UTC).isoformat(timespec="seconds")}



# ---------------------------------------------------------------------- the month-end deadline check

CHECK = "check"  # not a run kind: the schedule that checks the month-end run finished in time
DEFAULT_DEADLINE_MINUTES = 240
MAX_DEADLINE_MINUTES = 1440
QUEUE_DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                          "ApproximateNumberOfMessagesDelayed")


@dataclass
class MonthEndCheck:
    run_id: str
    cut_off: datetime
    finished: bool
    reason: str  # finished | not-started | planning | queued
    accounts: int = 0  # planned
    queued: int = 0  # work messages still in the queue (waiting, being worked or delayed)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": CHECK, "run": self.run_id, "cut_off": iso(self.cut_off), "finished": self.finished,
                "reason": self.reason, "accounts": self.accounts, "queued": self.queued}


def check_cut_off(event: Mapping[str, Any]) -> datetime:
    """The month-end cut-off a check is about: its ``scheduled_time`` less ``deadline_minutes``, counted on
    the schedule zone's clock (``timezone``), so that a daylight-saving change in between still finds the
    23:00 run."""
    if not isinstance(event, Mapping):
        raise InvalidInput("The billing trigger is not a JSON object.", field="event")
    at = _scheduled_time(event, "The month-end check", ("scheduled_time", "time"))
    value = event.get("deadline_minutes", DEFAULT_DEADLINE_MINUTES)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise InvalidInput("deadline_minutes must be a whole number of minutes.", field="deadline_minutes")
    minutes = int(value)
    if not 1 <= minutes <= MAX_DEADLINE_MINUTES:
        raise InvalidInput(f"deadline_minutes must be between 1 and {MAX_DEADLINE_MINUTES}.",
                           field="deadline_minutes")
    zone = zone_or_none(str(event.get("timezone") or ""))
    if zone is None:
        return at - timedelta(minutes=minutes)
    wall = at.astimezone(zone).replace(tzinfo=None) - timedelta(minutes=minutes)
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _run_record(ledger: Ledger, run_id: str) -> dict[str, Any]:
    item: dict[str, Any] = ledger.table.get_item(Key={"pk": f"run#{run_id}", "sk": "run"},
                                                 ConsistentRead=True).get("Item") or {}
    return item


def check_month_end(event: Mapping[str, Any], *, ledger: Ledger, queue_depth: Callable[[], int]) -> MonthEndCheck:
    """Has the month-end run of this check's cut-off finished? Finished = its run record is planned (every
    account has its work message) and the work queue holds no message any more (every account worked;
    one that failed 5 times is in the dead-letter queue, alarmed by itself). Emits ``MonthEndUnfinished``
    (1 unfinished, else 0) and logs an unfinished run as an error."""
    cut_off = check_cut_off(event)
    run_id = Trigger(kind=BILL, as_of=cut_off).run_id
    record = _run_record(ledger, run_id)
    accounts = int(record.get("accounts", 0) or 0)
    if not record:
        check = MonthEndCheck(run_id, cut_off, False, "not-started")
    elif record.get("status") != "planned":
        check = MonthEndCheck(run_id, cut_off, False, "planning", accounts)
    else:
        queued = queue_depth()
        check = MonthEndCheck(run_id, cut_off, queued == 0, "finished" if queued == 0 else "queued", accounts, queued)
    observability.count(observability.MONTH_END_UNFINISHED, 0 if check.finished else 1)
    if check.finished:
        logger.info("month-end billing run finished in time", extra=check.to_dict())
    else:
        logger.error("month-end billing run not finished by its deadline (see docs/billing.md)", extra=check.to_dict())
    return check


def sqs_queue_depth(sqs: Any, queue_url: str) -> Callable[[], int]:
    """The messages of the queue waiting, being worked and delayed (SQS GetQueueAttributes, approximate)."""

    def depth() -> int:
        answer = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(QUEUE_DEPTH_ATTRIBUTES))
        attributes = answer.get("Attributes") or {}
        return sum(int(attributes.get(name, 0) or 0) for name in QUEUE_DEPTH_ATTRIBUTES)

    return depth
