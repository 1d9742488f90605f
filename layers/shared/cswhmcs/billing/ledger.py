"""The billing ledger in DynamoDB (LedgerTable): the only DynamoDB code for billing.

Items (docs/billing.md, "Ledger"):

* ``pk=user#<cs user id>, sk=state``: the account's billing state (``grouping.AccountState`` as JSON:
  scan floor, per-subscription-product marks, running totals, open lines) and ``version``. Every
  write is conditional on ``version`` (optimistic concurrency): two workers on one account cannot
  both absorb the same rows or both send the same line.
* ``pk=user#<cs user id>, sk=line#<YYYY-MM>#p<product id>``: a finished line, ``done`` (with the
  WHMCS ``billable_id``) or ``attention`` (sparse GSI ``gsi1``: ``gsi1pk=attention``). Written in the
  same transaction that removes the open line from the state item.
* ``pk=run#<kind>#<as-of>, sk=run``: one per run (duplicate triggers find it), with the values read
  once per run (WHMCS unit mode, currency rates). ``pk=runs, sk=last#bill``: the latest month-end run.
* ``pk=run#<kind>#<as-of>, sk=cs-credentials``: the run's ComputeStacks credential verdicts
  (``billing/credentials.py``): 401s counted, fingerprints of rejected and good pairs (never a
  secret), the probe being made.

* ``pk=pacer#computestacks, sk=window``: the billing workers' ComputeStacks requests per second of the last
  301 s, their one budget (``cswhmcs.adapters.pacing.SharedWindow`` writes it; this module never reads it).

* ``pk=client#<WHMCS client id>, sk=overdue#s<service id>#i<invoice id>``: one suspension this backend made
  (or is making) of a service for an overdue usage invoice (``billing/overdue.py``, API.md section 9):
  ``status`` suspending (claimed, with a lease) -> suspended -> lifting (claimed) -> lifted, or failed
  (ModuleSuspend refused or unanswered: the next collection tries again), ended (WHMCS showed the service
  no longer suspended: lifted by someone else), superseded (suspended again for another reason: never
  lifted by us). While suspended or lifting it is in the sparse index ``gsi1`` under ``overdue-held``
  (``gsi1sk=<client>#<service>#<invoice>``), so the daily collection finds every suspension it may have to
  lift without reading anything else. Keyed by client: the InvoicePaid hook, which knows the client,
  reads them with one Query. Which invoice lines are ours is read from the finished lines themselves
  (``billed_lines``: the line's ref, in the invoice line's description, and its ``billable_id`` = the
  line's ``relid``): nothing is written for it on the billing path.

Money is stored as decimal strings, never as floats.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from cswhmcs.billing.credentials import RunCredentialState
from cswhmcs.billing.grouping import ATTENTION, DONE, PLANNED, AccountState, Line, line_key, line_ref, parse_ref
from cswhmcs.billing.usage import iso, parse_time
from cswhmcs.errors import Conflict, NotFound

ATTENTION_INDEX = "gsi1"
ATTENTION_PK = "attention"
OVERDUE_HELD_PK = "overdue-held"  # gsi1pk of the suspensions this backend made and has not lifted
SUSPENDING, SUSPENDED, SUSPEND_FAILED = "suspending", "suspended", "failed"
LIFTING, LIFTED, ENDED, SUPERSEDED = "lifting", "lifted", "ended", "superseded"
OVERDUE_LEASE = timedelta(minutes=10)  # a claimed suspension or lift, longer than any ModuleSuspend call


class StateConflict(Exception):
    """The item changed since it was read: reload and try again."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _cancelled_by_condition(exc: ClientError) -> bool:
    if _code(exc) == "ConditionalCheckFailedException":
        return True
    if _code(exc) != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    if reasons:
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return "ConditionalCheckFailed" in str(exc)


@dataclass
class RunRecord:
    run_id: str
    kind: str
    as_of: datetime
    status: str  # planning | planned
    context: dict[str, Any]
    accounts: int = 0
    outcome: str = "new"  # new | resumed | done | busy (what begin_run found)


@dataclass(frozen=True)
class LineSummary:
    """What the overview shows of one finished line (no buckets, no description)."""

    period: str
    product_id: int
    product: str
    status: str  # done | attention
    amount: Decimal
    currency: str
    billable_id: int | None
    ref: str
    reason: str


@dataclass
class AccountLedger:
    """One account's partition as the overview reads it: the state item (None before the first run that
    read the account) and its finished lines, in key order (oldest period first)."""

    state: AccountState | None
    lines: list[LineSummary]


# The attributes the overview reads (the line items' buckets and descriptions stay behind: a few hundred
# bytes per line, so even years of lines are one Query page).
_OVERVIEW_NAMES = {"#sk": "sk", "#st": "state", "#v": "version", "#s": "status", "#pe": "period",
                   "#pi": "product_id", "#pn": "product_name", "#a": "amount", "#c": "currency",
                   "#b": "billable_id", "#r": "reason"}


class Ledger:
    def __init__(self, table: Any, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.table = table
        self.clock = clock
        self._client = table.meta.client
        self._name = table.name

    @classmethod
    def from_settings(cls, settings: Any, resource: Any | None = None, *,
                      clock: Callable[[], datetime] = utcnow) -> Ledger:
        from cswhmcs.adapters.dynamo import dynamodb_resource

        return cls((resource or dynamodb_resource(settings)).Table(settings.LEDGER_TABLE), clock=clock)

    # ------------------------------------------------------------------ account state

    @staticmethod
    def _state_key(cs_user_id: int) -> dict[str, str]:
        return {"pk": f"user#{cs_user_id}", "sk": "state"}

    def load(self, cs_user_id: int) -> AccountState:
        item = self.table.get_item(Key=self._state_key(cs_user_id), ConsistentRead=True).get("Item")
        if not item:
            return AccountState(cs_user_id=cs_user_id)
        return AccountState.from_dict(json.loads(item["state"]), version=int(item["version"]))

    def _state_put(self, state: AccountState) -> dict[str, Any]:
        """The conditional Put of the state item (as a transaction element)."""
        item = {**self._state_key(state.cs_user_id), "version": state.version + 1,
                "state": json.dumps(state.to_dict(), separators=(",", ":")),
                "updated_at": iso(self.clock())}
        if state.version == 0:
            return {"TableName": self._name, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
        return {"TableName": self._name, "Item": item, "ConditionExpression": "#v = :v",
                "ExpressionAttributeNames": {"#v": "version"}, "ExpressionAttributeValues": {":v": state.version}}

    def save(self, state: AccountState) -> None:
        """Write the state if nobody else did since it was read; bumps ``state.version``."""
        put = self._state_put(state)
        kwargs = {k: v for k, v in put.items() if k != "TableName"}
        try:
            self.table.put_item(**kwargs)
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise StateConflict() from None
            raise
        state.version += 1

    def save_with_record(self, state: AccountState, record: Line) -> None:
        """Atomically: the state (conditional on its version) and a finished line's own item."""
        item = self._line_item(record)
        try:
            self._client.transact_write_items(TransactItems=[
                {"Put": self._state_put(state)},
                {"Put": {"TableName": self._name, "Item": item}},
            ])
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise StateConflict() from None
            raise
        state.version += 1

    # DynamoDB takes at most 100 actions per transaction: the state and 99 lines.
    MAX_RECORDS_PER_WRITE = 99

    def save_with_records(self, state: AccountState, records: list[Line]) -> None:
        """Atomically: the state (conditional on its version) and several finished lines' own items (one
        account's lines answered by one receiver request: one write instead of one per line)."""
        if len(records) == 1:
            self.save_with_record(state, records[0])
            return
        if not records or len(records) > self.MAX_RECORDS_PER_WRITE:
            raise ValueError(f"save_with_records takes 1 to {self.MAX_RECORDS_PER_WRITE} lines, not {len(records)}.")
        actions: list[dict[str, Any]] = [{"Put": self._state_put(state)}]
        actions += [{"Put": {"TableName": self._name, "Item": self._line_item(r)}} for r in records]
        try:
            self._client.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise StateConflict() from None
            raise
        state.version += 1

    # ------------------------------------------------------------------ finished lines

    @staticmethod
    def _line_key(cs_user_id: int, period: str, product_id: int) -> dict[str, str]:
        return {"pk": f"user#{cs_user_id}", "sk": f"line#{line_key(period, product_id)}"}

    def _line_item(self, line: Line) -> dict[str, Any]:
        data = line.to_dict()
        data["buckets"] = json.dumps(line.buckets, separators=(",", ":"))
        item = {k: v for k, v in data.items() if v is not None and v != ""}
        item.update(self._line_key(line.cs_user_id, line.period, line.product_id))
        item["ref"] = line.ref
        item["updated_at"] = iso(self.clock())
        if line.status == ATTENTION:
            item["gsi1pk"] = ATTENTION_PK
            item["gsi1sk"] = f"{line.period}#{line.ref}"
        return item

    @staticmethod
    def _line_from_item(item: dict[str, Any]) -> Line:
        data = {k: v for k, v in item.items() if k not in ("pk", "sk", "gsi1pk", "gsi1sk", "ref", "updated_at")}
        raw = data.get("buckets")
        data["buckets"] = json.loads(raw) if isinstance(raw, str) else []
        for key in ("description", "product_name", "currency", "source_currency", "unit_mode", "invoice_action",
                    "due_date", "email", "first_start", "last_end", "status", "period"):
            data.setdefault(key, "")
        return Line.from_dict(data)

    def get_line(self, cs_user_id: int, period: str, product_id: int) -> Line | None:
        item = self.table.get_item(Key=self._line_key(cs_user_id, period, product_id),
                                   ConsistentRead=True).get("Item")
        return self._line_from_item(item) if item else None

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of one DynamoDB Query, page after page (``LastEvaluatedKey``), each page read when the
        one before is used up."""
        while True:
            page = self.table.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def lines_of(self, cs_user_id: int) -> list[Line]:
        """Every finished line of one account (operator tools and tests; not used by runs)."""
        return [self._line_from_item(i) for i in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :line)",
            ExpressionAttributeValues={":pk": f"user#{cs_user_id}", ":line": "line#"},
            ConsistentRead=True)]

    def account_ledger(self, cs_user_id: int) -> AccountLedger:
        """The account's state and finished lines in one Query over its partition (read only; the overview).
        Eventually consistent: a line finished a moment ago may show on the next read."""
        state: AccountState | None = None
        lines: list[LineSummary] = []
        for item in self._query(KeyConditionExpression="pk = :pk",
                                ExpressionAttributeValues={":pk": f"user#{cs_user_id}"},
                                ProjectionExpression=", ".join(_OVERVIEW_NAMES),
                                ExpressionAttributeNames=_OVERVIEW_NAMES):
            sk = str(item.get("sk", ""))
            if sk == "state" and item.get("state"):
                state = AccountState.from_dict(json.loads(item["state"]), version=int(item.get("version", 0)))
            elif sk.startswith("line#") and item.get("status") in (DONE, ATTENTION):
                period, product_id = str(item.get("period", "")), int(item.get("product_id", 0))
                billable = item.get("billable_id")
                lines.append(LineSummary(
                    period=period, product_id=product_id, product=str(item.get("product_name", "")),
                    status=str(item["status"]), amount=Decimal(str(item.get("amount", "0"))),
                    currency=str(item.get("currency", "")),
                    billable_id=int(billable) if billable is not None else None,
                    ref=line_ref(cs_user_id, period, product_id), reason=str(item.get("reason", ""))))
        return AccountLedger(state, lines)

    def attention(self) -> Iterator[Line]:
        """Lines needing an operator, oldest period first (sparse index: reads only those)."""
        for item in self._query(IndexName=ATTENTION_INDEX, KeyConditionExpression="gsi1pk = :a",
                                ExpressionAttributeValues={":a": ATTENTION_PK}):
            yield self._line_from_item(item)

    def count_attention(self) -> int:
        return sum(1 for _ in self.attention())

    def mark_done_late(self, line: Line, billable_id: int) -> bool:
        """A line another worker gave up on (attention) turned out created: record it as done."""
        try:
            self.table.update_item(
                Key=self._line_key(line.cs_user_id, line.period, line.product_id),
                UpdateExpression="SET #s = :done, billable_id = :b, updated_at = :t REMOVE gsi1pk, gsi1sk",
                ConditionExpression="#s = :att",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":done": DONE, ":att": ATTENTION, ":b": billable_id,
                                           ":t": iso(self.clock())},
            )
            return True
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                return False
            raise

    # ------------------------------------------------------------------ operator resolutions

    def _attention_line(self, ref: str) -> Line:
        user, period, product = parse_ref(ref)
        line = self.get_line(user, period, product)
        if line is None:
            raise NotFound(f"There is no billing line {ref}.", code="line_not_found")
        if line.status != ATTENTION:
            raise Conflict(f"Billing line {ref} does not need attention (it is {line.status}).")
        return line

    def resolve_billed(self, ref: str, billable_id: int, note: str = "") -> Line:
        """The operator found the item in WHMCS: record its id; the rows stay billed."""
        line = self._attention_line(ref)
        try:
            self.table.update_item(
                Key=self._line_key(line.cs_user_id, line.period, line.product_id),
                UpdateExpression=("SET #s = :done, billable_id = :b, resolved = :r, resolved_at = :t, updated_at = :t "
                                  "REMOVE gsi1pk, gsi1sk"),
                ConditionExpression="#s = :att",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":done": DONE, ":att": ATTENTION, ":b": int(billable_id),
                                           ":r": note or "billed (operator)", ":t": iso(self.clock())},
            )
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise Conflict(f"Billing line {ref} changed meanwhile; look again.") from None
            raise
        line.status, line.billable_id = DONE, int(billable_id)
        return line

    def resolve_resend(self, ref: str) -> Line:
        """The operator checked WHMCS and the item is not there: the next run sends it (once)."""
        line = self._attention_line(ref)
        for _ in range(8):
            state = self.load(line.cs_user_id)
            if line.key in state.lines:
                raise Conflict(f"Billing line {ref} is already open again.")
            # A fresh start: a line that needed attention after max_send_attempts refusals would otherwise be
            # reported again at once, never sent, however often the operator asked for it.
            line.status, line.token, line.sending_at, line.reason, line.attempts = PLANNED, "", "", "", 0
            line.via = ""  # the operator checked WHMCS: it is not there, whichever path sent it before
            line.last_error = "re-send requested by an operator"
            state.lines[line.key] = line
            try:
                self._client.transact_write_items(TransactItems=[
                    {"Put": self._state_put(state)},
                    {"Delete": {"TableName": self._name,
                                "Key": self._line_key(line.cs_user_id, line.period, line.product_id),
                                "ConditionExpression": "#s = :att",
                                "ExpressionAttributeNames": {"#s": "status"},
                                "ExpressionAttributeValues": {":att": ATTENTION}}},
                ])
                return line
            except ClientError as exc:
                if not _cancelled_by_condition(exc):
                    raise
                line = self._attention_line(ref)
        raise Conflict(f"Billing line {ref} kept changing; try again.")

    # ------------------------------------------------------------------ runs

    @staticmethod
    def _run_key(run_id: str) -> dict[str, str]:
        return {"pk": f"run#{run_id}", "sk": "run"}

    def begin_run(self, run_id: str, *, kind: str, as_of: datetime, lease: timedelta) -> RunRecord:
        """Create the run's record, or find it: ``outcome`` new, resumed (an earlier attempt died while
        planning), done (already planned: a duplicate trigger) or busy (another planner holds it)."""
        now = self.clock()
        until = iso(now + lease)
        try:
            self.table.put_item(
                Item={**self._run_key(run_id), "kind": kind, "as_of": iso(as_of), "status": "planning",
                      "lease_until": until, "owner": uuid.uuid4().hex, "started_at": iso(now), "attempts": 1},
                ConditionExpression="attribute_not_exists(pk)",
            )
            if kind == "bill":
                self.table.put_item(Item={"pk": "runs", "sk": "last#bill", "run_id": run_id, "as_of": iso(as_of),
                                          "started_at": iso(now)})
            return RunRecord(run_id, kind, as_of, "planning", {}, outcome="new")
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise
        item = self.table.get_item(Key=self._run_key(run_id), ConsistentRead=True).get("Item") or {}
        record = RunRecord(run_id, kind, as_of, str(item.get("status", "planning")),
                           json.loads(item.get("context", "{}")), int(item.get("accounts", 0)))
        if record.status == "planned":
            record.outcome = "done"
            return record
        if str(item.get("lease_until", "")) > iso(now):
            record.outcome = "busy"
            return record
        try:
            self.table.update_item(
                Key=self._run_key(run_id),
                UpdateExpression="SET lease_until = :u, attempts = attempts + :one",
                ConditionExpression="lease_until = :old AND #s = :planning",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":u": until, ":one": 1, ":old": item.get("lease_until", ""),
                                           ":planning": "planning"},
            )
            record.outcome = "resumed"
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise
            record.outcome = "busy"
        return record

    def release_run(self, run_id: str) -> None:
        """A planner that failed gives its lease up, so that the retry (Lambda retries a failed asynchronous
        invocation after 1-2 minutes, well inside the lease) resumes the plan instead of finding it busy."""
        try:
            self.table.update_item(
                Key=self._run_key(run_id), UpdateExpression="SET lease_until = :t",
                ConditionExpression="#s = :planning",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":t": iso(self.clock()), ":planning": "planning"},
            )
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise

    def set_run_context(self, run_id: str, context: dict[str, Any]) -> None:
        self.table.update_item(
            Key=self._run_key(run_id), UpdateExpression="SET #c = :c",
            ExpressionAttributeNames={"#c": "context"},
            ExpressionAttributeValues={":c": json.dumps(context, separators=(",", ":"))},
        )

    def finish_run_planning(self, run_id: str, accounts: int) -> None:
        self.table.update_item(
            Key=self._run_key(run_id), UpdateExpression="SET #s = :p, accounts = :n, planned_at = :t",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": "planned", ":n": accounts, ":t": iso(self.clock())},
        )

    def last_bill_run_start(self) -> datetime | None:
        item = self.table.get_item(Key={"pk": "runs", "sk": "last#bill"}, ConsistentRead=True).get("Item")
        return parse_time(item["started_at"]) if item and item.get("started_at") else None

    # ------------------------------------------------------------------ a run's ComputeStacks credentials

    @staticmethod
    def _cs_key(run_id: str) -> dict[str, str]:
        return {"pk": f"run#{run_id}", "sk": "cs-credentials"}

    # Attribute names through placeholders: some of these words are reserved in DynamoDB expressions.
    _CS_NAMES = {"#f": "failures", "#r": "rejected", "#g": "good", "#o": "probe_owner", "#u": "probe_until",
                 "#p": "probe_fp"}

    @staticmethod
    def _stamp(dt: datetime) -> str:
        """Fixed-width UTC time: compares as a string."""
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def cs_credential_state(self, run_id: str) -> RunCredentialState:
        item = self.table.get_item(Key=self._cs_key(run_id), ConsistentRead=True).get("Item") or {}
        return RunCredentialState(failures=int(item.get("failures", 0)),
                                  rejected=frozenset(str(f) for f in item.get("rejected", ())),
                                  good=frozenset(str(f) for f in item.get("good", ())))

    def claim_cs_probe(self, run_id: str, fp: str, owner: str, *, lease: timedelta, max_failures: int) -> bool:
        """Become the one worker that checks pair ``fp`` in this run (nobody else probing, the pair not
        judged yet, the run not stopped)."""
        now = self.clock()
        try:
            self.table.update_item(
                Key=self._cs_key(run_id),
                UpdateExpression="SET #o = :o, #u = :u, #p = :fp",
                ConditionExpression=("(attribute_not_exists(#u) OR #u < :now) "
                                     "AND (attribute_not_exists(#f) OR #f < :max) "
                                     "AND (attribute_not_exists(#r) OR NOT contains(#r, :fp)) "
                                     "AND (attribute_not_exists(#g) OR NOT contains(#g, :fp))"),
                ExpressionAttributeNames=self._CS_NAMES,
                ExpressionAttributeValues={":o": owner, ":u": self._stamp(now + lease), ":now": self._stamp(now),
                                           ":fp": fp, ":max": max_failures},
            )
            return True
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                return False
            raise

    def release_cs_probe(self, run_id: str, owner: str) -> None:
        try:
            self.table.update_item(Key=self._cs_key(run_id), UpdateExpression="REMOVE #o, #u, #p",
                                   ConditionExpression="#o = :o",
                                   ExpressionAttributeNames={k: self._CS_NAMES[k] for k in ("#o", "#u", "#p")},
                                   ExpressionAttributeValues={":o": owner})
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise

    def mark_cs_good(self, run_id: str, fp: str) -> None:
        self.table.update_item(Key=self._cs_key(run_id), UpdateExpression="ADD #g :fp",
                               ExpressionAttributeNames={"#g": "good"}, ExpressionAttributeValues={":fp": {fp}})

    def record_cs_rejection(self, run_id: str, fp: str) -> int:
        """Count one 401 of the run (atomically); the run's failures so far."""
        answer = self.table.update_item(Key=self._cs_key(run_id), UpdateExpression="ADD #f :one, #r :fp",
                                        ExpressionAttributeNames={"#f": "failures", "#r": "rejected"},
                                        ExpressionAttributeValues={":one": 1, ":fp": {fp}},
                                        ReturnValues="UPDATED_NEW")
        return int(answer.get("Attributes", {}).get("failures", 1))

    # ------------------------------------------------------------------ overdue usage: lines and suspensions

    def billed_lines(self, keys: Any) -> dict[str, dict[str, Any]]:
        """``(ref, billable id)`` pairs (from invoice lines: the ref in the description, the relid) -> the
        finished lines that are ``done`` with exactly that billable id, by ref (BatchGetItem, 100 keys a call;
        strongly consistent). A ref the ledger does not hold, or whose billable id differs, is left out."""
        wanted: dict[str, int] = {}
        for ref, billable_id in keys:
            wanted.setdefault(ref, int(billable_id))
        found: dict[str, dict[str, Any]] = {}
        refs = list(wanted)
        names = {"#s": "status", "#b": "billable_id", "#sv": "service_id", "#c": "client_id", "#u": "cs_user_id",
                 "#pe": "period", "#pi": "product_id", "#pk": "pk"}
        for start in range(0, len(refs), 100):
            request: dict[str, Any] = {self._name: {
                "Keys": [self._line_key(*parse_ref(ref)) for ref in refs[start:start + 100]],
                "ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names,
                "ConsistentRead": True}}
            for _ in range(10):
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._name, []):
                    line_ref_ = line_ref(int(item["cs_user_id"]), str(item["period"]), int(item["product_id"]))
                    billable = item.get("billable_id")
                    if item.get("status") == DONE and billable is not None and int(billable) == wanted.get(line_ref_):
                        found[line_ref_] = {"ref": line_ref_, "billable_id": int(billable),
                                            "service_id": int(item.get("service_id", 0)),
                                            "client_id": int(item.get("client_id", 0))}
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise RuntimeError("DynamoDB left billing lines unread after 10 attempts.")
        return found

    @staticmethod
    def _suspension_key(client_id: int, service_id: int, invoice_id: int) -> dict[str, str]:
        return {"pk": f"client#{client_id}", "sk": f"overdue#s{service_id}#i{invoice_id}"}

    @staticmethod
    def _suspension(item: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in item.items() if k not in ("pk", "sk", "gsi1pk", "gsi1sk")}
        for key in ("client_id", "service_id", "invoice_id", "attempts"):
            if key in out:
                out[key] = int(out[key])
        return out

    def suspension(self, client_id: int, service_id: int, invoice_id: int) -> dict[str, Any] | None:
        item = self.table.get_item(Key=self._suspension_key(client_id, service_id, invoice_id),
                                   ConsistentRead=True).get("Item")
        return self._suspension(item) if item else None

    def client_suspensions(self, client_id: int) -> list[dict[str, Any]]:
        """Every suspension record of one client, whatever its status (one Query, strongly consistent)."""
        return [self._suspension(i) for i in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :o)",
            ExpressionAttributeValues={":pk": f"client#{client_id}", ":o": "overdue#"},
            ConsistentRead=True)]

    def held_suspensions(self) -> Iterator[dict[str, Any]]:
        """The suspensions made and not lifted (suspended or being lifted), from the sparse index."""
        for item in self._query(IndexName=ATTENTION_INDEX, KeyConditionExpression="gsi1pk = :h",
                                ExpressionAttributeValues={":h": OVERDUE_HELD_PK}):
            yield self._suspension(item)

    def _overdue_update(self, key: dict[str, str], update: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self.table.update_item(Key=key, UpdateExpression=update, ConditionExpression=condition,
                                   ExpressionAttributeNames={"#s": "status", "#l": "lease_until"},
                                   ExpressionAttributeValues=values)
            return True
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                return False
            raise

    def claim_suspension(self, client_id: int, service_id: int, invoice_id: int, reason: str) -> bool:
        """Become the one caller suspending this service for this invoice: a new record, one that failed
        before, or one whose claimer's lease ran out. False: suspended already, or being suspended."""
        now = self.clock()
        return self._overdue_update(
            self._suspension_key(client_id, service_id, invoice_id),
            "SET #s = :suspending, #l = :until, client_id = :c, service_id = :sv, invoice_id = :i, reason = :r, "
            "attempts = if_not_exists(attempts, :zero) + :one, created_at = if_not_exists(created_at, :now), "
            "updated_at = :now",
            "attribute_not_exists(pk) OR #s = :failed OR (#s = :suspending AND #l < :now)",
            {":suspending": SUSPENDING, ":failed": SUSPEND_FAILED, ":until": iso(now + OVERDUE_LEASE),
             ":now": iso(now), ":c": client_id, ":sv": service_id, ":i": invoice_id, ":r": reason, ":zero": 0,
             ":one": 1})

    def finish_suspension(self, client_id: int, service_id: int, invoice_id: int) -> None:
        """ModuleSuspend succeeded (or WHMCS showed it had): suspended, and listed as held."""
        now = iso(self.clock())
        self.table.update_item(
            Key=self._suspension_key(client_id, service_id, invoice_id),
            UpdateExpression="SET #s = :suspended, suspended_at = :now, updated_at = :now, gsi1pk = :h, gsi1sk = :hs "
                             "REMOVE #l, last_error",
            ExpressionAttributeNames={"#s": "status", "#l": "lease_until"},
            ExpressionAttributeValues={":suspended": SUSPENDED, ":now": now, ":h": OVERDUE_HELD_PK,
                                       ":hs": f"{client_id}#{service_id}#{invoice_id}"})

    def fail_suspension(self, client_id: int, service_id: int, invoice_id: int, error: str) -> None:
        """ModuleSuspend failed (or its answer was lost): the next collection tries again."""
        self._overdue_update(
            self._suspension_key(client_id, service_id, invoice_id),
            "SET #s = :failed, last_error = :e, failed_at = :now, updated_at = :now REMOVE #l",
            "#s = :suspending",
            {":failed": SUSPEND_FAILED, ":suspending": SUSPENDING, ":e": error[:500], ":now": iso(self.clock())})

    def claim_lift(self, record: dict[str, Any]) -> bool:
        """Become the one caller lifting this suspension (the hook and a collection may meet here)."""
        now = self.clock()
        return self._overdue_update(
            self._suspension_key(record["client_id"], record["service_id"], record["invoice_id"]),
            "SET #s = :lifting, #l = :until, updated_at = :now",
            "#s = :suspended OR (#s = :lifting AND #l < :now)",
            {":lifting": LIFTING, ":suspended": SUSPENDED, ":until": iso(now + OVERDUE_LEASE), ":now": iso(now)})

    def finish_lift(self, record: dict[str, Any], outcome: str, by: str) -> None:
        """``outcome``: lifted (ModuleUnsuspend succeeded), ended (WHMCS showed it not suspended any more) or
        superseded (suspended for another reason now); no longer held."""
        now = iso(self.clock())
        self._overdue_update(
            self._suspension_key(record["client_id"], record["service_id"], record["invoice_id"]),
            "SET #s = :outcome, lifted_at = :now, lifted_by = :by, updated_at = :now "
            "REMOVE #l, gsi1pk, gsi1sk, last_error",
            "#s = :lifting",
            {":outcome": outcome, ":now": now, ":by": by[:200], ":lifting": LIFTING})

    def release_lift(self, record: dict[str, Any], error: str) -> None:
        """ModuleUnsuspend failed: suspended again (held), for the next hook or collection."""
        self._overdue_update(
            self._suspension_key(record["client_id"], record["service_id"], record["invoice_id"]),
            "SET #s = :suspended, last_error = :e, updated_at = :now REMOVE #l",
            "#s = :lifting",
            {":suspended": SUSPENDED, ":lifting": LIFTING, ":e": error[:500], ":now": iso(self.clock())})
