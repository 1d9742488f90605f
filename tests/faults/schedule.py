"""One fault schedule, from a seed: provisioning, a deposit credit and month-end billing, with faults.

1. Provisioning: 2-5 WHMCS services are created, then suspended, unsuspended, re-passworded, moved to
   another package or terminated, through the route handlers of template.yaml (signed API Gateway events,
   exactly as `cswhmcs serve` invokes them). Each request may meet upstream faults or a crash, may be sent
   twice or twice at once; a failed request is sent again (the admin clicks again) once the faults are gone.
2. Deposit credit: one paid (sometimes unpaid) order of those services is delivered to the OrderPaid route
   with faults; recovery is the daily sweep of open credits (``retry_open_credits``).
3. Billing: usage rows in ComputeStacks for some of the accounts; daily collections and the month-end
   run (1-2 months) through the planner and the worker, with SQS-like delivery: failed or crashed messages
   come back after the visibility timeout (at most 5 receives), copies are delivered twice, sometimes at
   once, and sometimes two runs go at once. Recovery: the leftover messages again, a collection, the
   operator's run until nothing fails; then the operator settles what needs attention and a final run.

About a third of the seeds (``path_of``: drawn from the seed alone, so a replay takes the same path) bill
through the module's billing receiver (API.md section 8, docs/billing.md section 5b): WHMCS_RECEIVER_URL is
the FaultProxy in front of the real billing.php, the worker gets a ReceiverClient through it, SQS batches go
to ``handle_batch`` as the Lambda worker hands them over, and the billing rounds also arm the proxy's faults
(answers dropped after PHP committed, connections dropped before, 502/504 pages, HTML instead of JSON,
latency beyond the client's timeout). There no line may ever need attention, and the receiver's refs table
must match WHMCS's items and the ledger's done lines one for one.

After each part the invariants are checked (see ``Outcome``); a violation names the seed's replay command.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import traceback
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from tests.faults.injection import CS_KINDS, RECEIVER_KINDS, WHMCS_KINDS, Crash, CrashCounter, CrashProxy, Faults
from tests.faults.world import SENT_HEADER, SIGNING_SECRET, TIMEOUT, FaultDeps, World
from tests.support.clocks import Clock

OCT_END = datetime(2026, 10, 31, 23, tzinfo=UTC)
NOV_END = datetime(2026, 11, 30, 23, tzinfo=UTC)
DEC_END = datetime(2026, 12, 31, 23, tzinfo=UTC)
RATES = {"USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79")}
TOTALS = ("0.02054795", "0.00685", "0.0001", "1.23456789", "0.0225", "0.04109589", "0.00333333")
PRODUCTS = ("containerm", "containerl", "storage", "bandwidth")
VISIBILITY = timedelta(minutes=90)  # the work queue's visibility timeout (template: 6 x 900 s)
MAX_RECEIVES = 5  # the work queue's maxReceiveCount, then the dead-letter queue
CREDIT_ACTIONS = ["GetInvoice", "GetClientsDetails", "GetClientsProducts", "GetProducts", "AddCredit", "GetCredits"]
BILLING_ACTIONS = ["AddBillableItem", "GetClientsDetails", "WhmcsDetails", "GetCurrencies"]
CENT = Decimal("0.01")
API, RECEIVER = "api", "receiver"  # how a schedule's billing reaches WHMCS
RECEIVER_SHARE = 1 / 3  # of the seeds billing through the receiver
SQS_BATCHES = (1, 3, 10)  # records per SQS batch on the receiver path (the event source's BatchSize is 10)
_sp_ids = itertools.count(10_000_000)  # subscription product ids: unique in the sandbox across schedules
_sp_lock = threading.Lock()


def path_of(seed: int) -> str:
    """The path a seed bills on: from the seed alone (a random stream of its own, so that the API-path
    seeds draw exactly what they drew before the receiver existed, and a replay takes the same path)."""
    return RECEIVER if random.Random(f"billing-path-{seed}").random() < RECEIVER_SHARE else API


def replay_command(seed: int, size: str = "small", path: str | None = None) -> str:
    prefix = f"SCHEDULE_SIZE={size} " if size != "small" else ""
    if path is not None and path != path_of(seed):
        prefix += f"SCHEDULE_PATH={path} "
    return f"{prefix}SCHEDULE_SEED={seed} .venv/bin/pytest tests/faults -k replay -s"


def open_order_ids(records: Any) -> set[int]:
    """The orders the daily sweep will deliver again (``open_orders`` yields records or tuples)."""
    return {int(getattr(o, "order_id", None) or o[0]) for o in records.open_orders()}


def cents(d: Decimal) -> Decimal:
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Outcome:
    """What one schedule found. ``duplicates``: billable items or credits beyond one per line/order, CS users
    beyond one per service, rows counted twice. ``lost``: eligible usage rows in no line and no running
    total, deposits neither credited nor open. ``attention``: lines (and open credits) left for an operator
    after recovery (on the receiver path every such line is also a violation, counted in
    ``receiver_attention``). ``violations``: every broken invariant, in words. ``skipped``: why the schedule
    did not run (its path needs what this machine lacks)."""

    seed: int
    size: str = "small"
    path: str = API
    skipped: str = ""
    receiver_attention: int = 0
    duplicates: int = 0
    lost: int = 0
    attention: int = 0
    violations: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    secrets: list[str] = field(default_factory=list)  # passwords and signatures used (for the log scan)
    kinds: dict[str, int] = field(default_factory=dict)  # how often each fault kind and mode was used
    # Deposits not credited because the hook's delivery died right after its first read, before it wrote
    # anything: nobody can know such a delivery came (only the caller retrying could help); counted apart
    # unless the schedule is strict.
    unrecorded: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations and self.duplicates == 0 and self.lost == 0

    def report(self) -> str:
        head = (f"schedule seed {self.seed} ({self.path} path): {self.duplicates} duplicates, {self.lost} lost, "
                f"{self.attention} needing attention; replay: {replay_command(self.seed, self.size, self.path)}")
        return "\n".join([head, *(f"  VIOLATION {v}" for v in self.violations),
                          "  trace:", *(f"    {t}" for t in self.trace[-60:])])

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "duplicates": self.duplicates, "lost": self.lost, "attention": self.attention,
                "violations": self.violations, "elapsed": round(self.elapsed, 3), "kinds": self.kinds,
                "unrecorded": self.unrecorded, "path": self.path, "skipped": self.skipped,
                "receiver_attention": self.receiver_attention,
                "report": "" if self.ok else self.report()}


@dataclass(frozen=True)
class Size:
    """How big a schedule is: `make test` runs small ones, `make soak` full ones."""

    services: tuple[int, int]  # WHMCS services provisioned (min, max)
    months: tuple[float, float]  # probabilities of a 2nd and a 3rd month-end
    collects: int  # daily collections before a month-end, at most
    usage_accounts: int  # accounts with usage rows, at most


SIZES = {"small": Size((2, 4), (0.3, 0.0), 1, 2), "full": Size((2, 5), (0.5, 0.3), 2, 3)}


@dataclass
class Row:
    id: int
    product: str
    total: Decimal
    end: datetime


@dataclass
class Svc:
    sid: int
    client_id: int
    currency: str
    username: str
    password: str
    group: int | None
    active: bool = True
    created: bool = False
    cs_user_id: int | None = None
    cs_currency: str = ""
    rows: list[Row] = field(default_factory=list)
    imported: int | None = None  # a ComputeStacks user made before the mapping existed (found by lookup)


class ListSink:
    """The work queue as the planner sees it: message bodies, in order."""

    def __init__(self, counter: CrashCounter | None = None) -> None:
        self.bodies: list[str] = []
        self.counter = counter

    def send(self, messages: list[Any]) -> None:
        self.bodies += [m.to_json() for m in messages]
        if self.counter is not None:
            self.counter.tick("sqs.send_message_batch")

    def flush(self) -> None:
        pass


class Schedule:
    def __init__(self, world: World, seed: int, *, size: str = "small", strict: bool = False,
                 path: str | None = None) -> None:
        self.w = world
        self.strict = strict
        self.path = path or path_of(seed)
        if self.path not in (API, RECEIVER):
            raise ValueError(f"path must be {API!r} or {RECEIVER!r}, not {path!r}")
        self.statuses: list[int | None] = []  # every answer of the last deliver()
        self.seed = seed
        self.size = SIZES[size]
        self.rng = random.Random(seed)
        self.out = Outcome(seed, size=size, path=self.path)
        self.counter = CrashCounter(random.Random(seed * 7919 + 1))
        self.faults = Faults(world.cs, world.whmcs, self.rng, timeout=TIMEOUT)  # rebuilt by run(), after a restart
        self.sqs_batch = 1  # records per SQS batch handed to the worker (1: handle_record, as the API path)
        self._nonce = itertools.count(1)
        self.services: list[Svc] = []
        self.clients: dict[int, str] = {}  # WHMCS client id -> currency code
        self.billing_start: date | None = None
        self.settings: Any = None
        self.deps: FaultDeps | None = None
        self.clock = Clock(OCT_END - timedelta(days=10))
        self._lock = threading.Lock()
        self._started = time.monotonic()
        # Per service id: (sent, answered) wall-clock times of every request sent for it (late_landing).
        self.windows: dict[int, list[tuple[float, float]]] = defaultdict(list)

    # ------------------------------------------------------------------ helpers

    def note(self, text: str) -> None:
        with self._lock:
            self.out.trace.append(f"{time.monotonic() - self._started:6.2f} {text}")

    def count(self, *kinds: str) -> None:
        with self._lock:
            for kind in kinds:
                name = kind.split("@")[0]
                self.out.kinds[name] = self.out.kinds.get(name, 0) + 1

    def violation(self, text: str) -> None:
        with self._lock:
            self.out.violations.append(text)

    def arm_crash(self) -> str:
        after = self.rng.randint(1, 6)
        self.counter.arm(after=after)
        return f"crash@{after}"

    def calm(self) -> None:
        self.faults.clear()
        self.counter.disarm()

    @property
    def via_receiver(self) -> bool:
        return self.path == RECEIVER

    def run(self) -> Outcome:
        started = time.monotonic()
        if self.via_receiver and not self.w.has_receiver:
            self.out.skipped = f"a receiver-path schedule, and {self.w.receiver_reason}"
            self.note(f"path: receiver; skipped: {self.w.receiver_reason}")
            return self.out
        self.w.next_schedule()  # may restart the sandboxes: the faults are armed on the running ones
        self.faults = Faults(self.w.cs, self.w.whmcs, self.rng, timeout=TIMEOUT,
                             proxy=self.w.proxy if self.via_receiver else None)
        tables = self.w.new_tables()
        self.tables = tables
        if self.rng.random() < 0.3:
            self.billing_start = date(2026, 10, self.rng.choice([25, 27, 29]))
        extra: dict[str, Any] = {"BILLING_START": self.billing_start.isoformat()} if self.billing_start else {}
        if self.via_receiver:
            extra["WHMCS_RECEIVER_URL"] = self.w.proxy.url
            self.sqs_batch = self.rng.choice(SQS_BATCHES)
            self.note(f"path: receiver (billing.php on MariaDB behind the fault proxy {self.w.proxy.url}; SQS "
                      f"batches of {self.sqs_batch})")
        else:
            self.note("path: api (AddBillableItem)")
        self.count(f"path {self.path}")
        self.settings = self.w.settings(*tables, **extra)
        self.deps = FaultDeps(self.settings, self.counter, resource=self.w.resource, clients=self.w.clients(3)[2])
        self.w.deps = self.deps
        try:
            self.provision()
            self.credit()
            self.bill()
        except Exception as exc:  # the product (or the simulator) raised where nothing should
            self.violation(f"unexpected {type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=8))
        finally:
            self.calm()
            self.w.deps = None
            self.w.drop_tables(tables)
        self.out.elapsed = time.monotonic() - started
        return self.out

    # ------------------------------------------------------------------ one request through a route

    def send(self, route: str, body: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
        """One signed delivery to the route's own handler; ``None``: the function crashed."""
        from cswhmcs.signing import sign_headers

        payload = {**body, "delivery": next(self._nonce)}  # an unknown key (ignored): every body is new
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Host": "127.0.0.1:3000",
                   **sign_headers(SIGNING_SECRET, route, raw, now=int(time.time()))}
        with self._lock:
            self.out.secrets.append(headers["X-CSW-Signature"].removeprefix("v1="))
        sent = time.time()
        try:
            status, _, data, _ = self.w.api.invoke("POST", route, headers, raw, "127.0.0.1")
        except Crash:
            return None, {}
        finally:
            if isinstance(body.get("serviceid"), int):
                with self._lock:
                    self.windows[body["serviceid"]].append((sent, time.time()))
        answer = json.loads(data)
        if status != 200:
            if set(answer) != {"result", "message", "code"} or answer["result"] != "error" or not answer["message"]:
                self.violation(f"{route} answered {status} outside the API.md error shape: {answer}")
            if status == 500:
                self.violation(f"{route} answered 500 ({answer.get('message')}) under faults")
        elif answer.get("result") != "success":
            self.violation(f"{route} answered 200 without result success: {answer}")
        return status, answer

    def deliver(self, route: str, body: dict[str, Any], *, label: str, cs_kinds: tuple[str, ...] = CS_KINDS,
                whmcs_kinds: tuple[str, ...] = (), actions: list[str] | None = None,
                clean_retries: int = 3) -> dict[str, Any] | None:
        """Send with faults (once, twice, or twice at once); then, faults gone, again until it succeeds."""
        armed = self.faults.arm(cs_kinds=cs_kinds, whmcs_kinds=whmcs_kinds, whmcs_actions=actions,
                                crash=self.arm_crash)
        mode = self.rng.choice(["once", "once", "once", "twice", "at_once"])
        crashes = len(self.counter.crashes)
        if mode == "at_once":
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda _: self.send(route, body), range(2)))
        else:
            answers = [self.send(route, body) for _ in range(2 if mode == "twice" else 1)]
        self.calm()
        self.statuses = [a[0] for a in answers]
        self.count(*armed.kinds, f"request {mode}")
        died = f" (crashed after {', '.join(self.counter.crashes[crashes:])})" if len(self.counter.crashes) > crashes \
            else ""
        self.note(f"{label}: {armed} {mode} -> {[a[0] for a in answers]}{died}")
        good = [a for s, a in answers if s == 200]
        if good:
            return good[-1]
        for _ in range(clean_retries):
            status, answer = self.send(route, body)
            self.note(f"{label}: again -> {status} {answer.get('message', '')[:80]}")
            self.statuses.append(status)
            if status == 200:
                return answer
        return None

    # ------------------------------------------------------------------ 1. provisioning

    def _currency_id(self, code: str) -> int:
        for cur in self.w.whmcs.currencies:
            if cur["code"] == code:
                return int(cur["id"])
        raise AssertionError(code)

    def params(self, svc: Svc, **extra: Any) -> dict[str, Any]:
        cd: dict[str, Any] = {"client_id": svc.client_id, "userid": svc.client_id, "firstname": "Ann",
                              "lastname": f"Lee{svc.sid}", "email": f"client{svc.client_id}@example.org",
                              "country": "US", "city": "Portland", "currency": self._currency_id(svc.currency)}
        if svc.sid % 3:  # otherwise only the currency id: the backend asks WHMCS for its code
            cd["currency_code"] = svc.currency
        return {"serviceid": svc.sid, "userid": svc.client_id, "pid": self.w.product_id, "username": svc.username,
                "status": "Active", "configoption1": str(svc.group or ""), "configoption2": "on",
                "serverhostname": "127.0.0.1:3000", "serversecure": False, "clientsdetails": cd, **extra}

    def provision(self) -> None:
        rng = self.rng
        n = rng.randint(*self.size.services)
        client_ids: list[int] = []
        for _ in range(rng.randint(1, min(n, 3))):
            currency = rng.choice(["USD", "USD", "EUR", "GBP"])
            client = self.w.whmcs.add_client("Ann", "Lee", f"ann.{self.seed}.{len(client_ids)}@example.org",
                                             currency_code=currency)
            client_ids.append(int(client["id"]))
            self.clients[int(client["id"])] = currency
        for _ in range(n):
            cid = rng.choice(client_ids)
            sid = int(self.w.whmcs.add_service(cid, self.w.product_id)["id"])
            username = rng.choice(["", f"u{sid}.s{self.seed}@example.org"])
            svc = Svc(sid, cid, self.clients[cid], username, self._password(), rng.choice([None, *self.w.groups]))
            if rng.random() < 0.2:
                self.import_account(svc)
            self.services.append(svc)
        for svc in self.services:
            self.lifecycle(svc)
        self.check_mappings()

    def _password(self) -> str:
        password = f"Pw-{self.rng.randrange(10**8):08d}-Xq{self.seed}"
        self.out.secrets.append(password)
        return password

    def import_account(self, svc: Svc) -> None:
        """A ComputeStacks user that exists before the backend knows it (the old module, the Server Sync
        Tool): found by the service username (its email), its external id or its label."""
        how = self.rng.choice(["email", "external_id", "label"])
        email = f"old{svc.sid}.s{self.seed}@example.org"
        if how == "email":
            svc.username = email
        user = self.w.cs.add_user(email, "Ann", f"Old{svc.sid}", currency=svc.currency,
                                  external_id=str(svc.sid) if how == "external_id" else None,
                                  labels={"whmcs": {"service_id": svc.sid}} if how == "label" else None)
        svc.imported, svc.password, svc.group = int(user["id"]), str(user["password"]), None
        self.out.secrets.append(svc.password)
        self.note(f"service {svc.sid}: imported user #{user['id']} (found by {how})")

    def lifecycle(self, svc: Svc) -> None:
        rng = self.rng
        if svc.imported is None:
            answer = self.deliver("/v1/accounts/create",
                                  self.params(svc, status="Pending", password=svc.password),
                                  label=f"create {svc.sid}", whmcs_kinds=("wh_5xx", "wh_slow", "wh_drop"),
                                  actions=["GetCurrencies"])
            if answer is None:
                self.violation(f"service {svc.sid}: create kept failing after the faults were gone")
                return
            svc.created, svc.cs_user_id = True, int(answer["cs_user_id"])
        for op in rng.choices(["suspend", "unsuspend", "change-password", "change-package", "terminate"],
                              k=rng.randint(0 if svc.imported is None else 1, 3)):
            extra: dict[str, Any] = {}
            password, group = svc.password, svc.group
            if op == "change-password":
                password = self._password()
                extra["password"] = password
            if op == "change-package":
                group = rng.choice(self.w.groups)
                extra["configoption1"] = str(group)
            answer = self.deliver(f"/v1/accounts/{op}", self.params(svc, **extra), label=f"{op} {svc.sid}")
            if answer is None:
                self.violation(f"service {svc.sid}: {op} kept failing after the faults were gone")
                continue
            svc.password, svc.group = password, group
            if op in ("suspend", "terminate", "unsuspend"):
                svc.active = op == "unsuspend"
            if svc.imported is not None:
                svc.created, svc.cs_user_id = True, svc.imported

    def check_mappings(self) -> None:
        """Each mapping names a ComputeStacks user that exists and is linked to that service, and no
        service has two users; each user is in the state the last successful request left."""
        assert self.deps is not None
        users = self.w.cs.users
        accounts = self.deps.plain_accounts
        for svc in self.services:
            if not svc.created:
                continue
            mapping = accounts.get(svc.sid)
            if mapping is None:
                self.violation(f"service {svc.sid}: created (user #{svc.cs_user_id}) but no mapping is stored")
                continue
            user = users.get(mapping.cs_user_id)
            if user is None:
                self.violation(f"service {svc.sid}: its mapping names user #{mapping.cs_user_id}, which "
                               "ComputeStacks does not have")
                continue
            svc.cs_currency = str(user.get("currency") or svc.currency)
            labels = (user.get("labels") or {}).get("whmcs") or {}
            if str(user.get("external_id")) != str(svc.sid) or str(labels.get("service_id")) != str(svc.sid):
                self.violation(f"service {svc.sid}: user #{user['id']} is not linked to it "
                               f"(external_id {user.get('external_id')!r}, labels {labels!r})")
            if mapping.cs_user_id != svc.cs_user_id:
                self.violation(f"service {svc.sid}: create answered user #{svc.cs_user_id}, the mapping says "
                               f"#{mapping.cs_user_id}")
            if mapping.client_id != svc.client_id or mapping.email != user.get("email"):
                self.violation(f"service {svc.sid}: mapping {mapping} disagrees with user {user.get('email')} / "
                               f"client {svc.client_id}")
            twins = [u["id"] for u in users.values() if u["id"] != user["id"] and (
                str(u.get("external_id")) == str(svc.sid)
                or str(((u.get("labels") or {}).get("whmcs") or {}).get("service_id")) == str(svc.sid))]
            if twins:
                self.out.duplicates += len(twins)
                self.violation(f"service {svc.sid}: more than one ComputeStacks user: #{user['id']} and {twins}")
            if bool(user.get("active")) != svc.active:
                self.mismatch(svc, user, "active", f"service {svc.sid}: user #{user['id']} "
                              f"active={user.get('active')}, expected {svc.active} after the last request")
            if user.get("password") != svc.password:
                self.mismatch(svc, user, "password",
                              f"service {svc.sid}: user #{user['id']} does not have the last password set")
            if svc.group is not None and int(user.get("user_group_id") or 0) != svc.group:
                self.mismatch(svc, user, "user_group_id", f"service {svc.sid}: user #{user['id']} is in group "
                              f"{user.get('user_group_id')}, expected {svc.group}")

    def mismatch(self, svc: Svc, user: dict[str, Any], key: str, text: str) -> None:
        """A user not in the state the last request left: a violation, unless the write that set ``key`` last
        was an attempt ComputeStacks carried out after its own request had answered (``late_landing``)."""
        late = self.late_landing(svc, int(user["id"]), key)
        if late is None:
            self.violation(text)
        else:
            self.count("late landing")
            self.note(f"{text}: {late} (not the backend's doing)")

    def late_landing(self, svc: Svc, user_id: int, key: str) -> str | None:
        """When the last write ComputeStacks applied that set ``key`` on the user was sent while one of the
        service's requests was running and carried out only after that request had answered: how so, else
        None. An HTTP request whose answer a client gave up on (a read timeout) may still be carried out
        later, after requests sent after it (on a loaded machine the in-process sandbox reads a new
        connection late); no client of an API without conditional updates can prevent that. A write the
        backend sent after its request had answered, or one ComputeStacks read sooner than the client's read
        timeout after it was sent (its request answered without waiting for it), is not such a landing, and
        stays a violation."""
        path = f"/api/admin/users/{user_id}"
        last = None
        for r in self.w.cs.requests:
            fields = r["json"].get("user") if isinstance(r.get("json"), dict) else None
            if r["method"] == "PATCH" and r["path"] == path and r["status"] == 200 and isinstance(fields, dict) \
                    and key in fields:
                last = r
        if last is None:
            return None
        try:
            sent = float(last["headers"].get(SENT_HEADER) or "nan")
        except ValueError:
            return None
        # ComputeStacks read it later than the client's read timeout (so its client had given up on it, not
        # answered without waiting), and every request running when it was sent (two at once: either may
        # have sent it) had answered by then.
        if last["at"] - sent < TIMEOUT:
            return None
        running = [(start, end) for start, end in self.windows.get(svc.sid, []) if start <= sent <= end]
        if not running or max(end for _, end in running) >= last["at"]:
            return None
        start, end = min(running)[0], max(end for _, end in running)
        return (f"an attempt sent at +{sent - start:.2f} s into a request that answered at +{end - start:.2f} s "
                f"was carried out at +{last['at'] - start:.2f} s")

    # ------------------------------------------------------------------ 2. deposit credit

    def credit(self) -> None:
        from cswhmcs.credit import description, retry_open_credits

        assert self.deps is not None
        rng = self.rng
        by_client: dict[int, list[Svc]] = defaultdict(list)
        for svc in self.services:
            by_client[svc.client_id].append(svc)
        client_id, svcs = rng.choice(sorted(by_client.items()))
        amounts = [rng.choice(["25.00", "10.50", "7.35", "0.00"]) for _ in svcs]
        paid = rng.random() < 0.9
        order_id, invoice_id = self.w.whmcs.add_order(client_id, [s.sid for s in svcs], amounts=amounts,
                                                      status="Paid" if paid else "Unpaid")
        body: dict[str, Any] = {"orderId": order_id, "invoiceId": invoice_id, "userId": client_id}
        style = rng.choice(["lines", "lines", "one_off", "no_lines"])
        apply = [True] * len(svcs)
        if style != "no_lines":
            if style == "one_off":
                apply[rng.randrange(len(svcs))] = False
            body["lines"] = [{"serviceid": s.sid, "apply_credit": a} for s, a in zip(svcs, apply, strict=True)]
        expected = sum((Decimal(a) for a, on in zip(amounts, apply, strict=True) if on), Decimal(0)) if paid \
            else Decimal(0)
        self.note(f"order {order_id}: {style} {amounts} paid={paid} expect {expected}")
        crashes = len(self.counter.crashes)
        for k in range(rng.choice([1, 1, 2])):
            answer = self.deliver("/v1/hooks/order-paid", body, label=f"order-paid #{k + 1}", cs_kinds=(),
                                  whmcs_kinds=WHMCS_KINDS, actions=CREDIT_ACTIONS, clean_retries=0)
            if answer is not None and Decimal(answer["credited"]) not in (expected, Decimal(0)):
                self.violation(f"order {order_id}: answered credited {answer['credited']}, expected {expected}")
        # A delivery that died right after its first read wrote nothing: as if it never arrived.
        unseen = "order_credits.get" in self.counter.crashes[crashes:]
        # Recovery: the daily sweeps (each a day later, past any claim's lease), faults gone.
        records = self.deps.plain_order_credits
        for _ in range(3):
            if order_id not in open_order_ids(records):
                break
            self.w.wall.offset += 86_400
            outcomes = retry_open_credits(self.deps)
            self.note(f"sweep: {outcomes}")
        credits = [c for c in self.w.whmcs.credits
                   if int(c["clientid"]) == client_id and c["description"] == description(order_id)]
        still_open = order_id in open_order_ids(records)
        record = records.get(order_id)
        if len(credits) > 1:
            self.out.duplicates += len(credits) - 1
            self.violation(f"order {order_id}: credited {len(credits)} times ({[c['amount'] for c in credits]})")
        if credits and Decimal(credits[0]["amount"]) != expected:
            self.violation(f"order {order_id}: credited {credits[0]['amount']}, expected {expected}")
        if expected > 0 and not credits:
            if still_open:
                self.out.attention += 1
                self.note(f"order {order_id}: still open after the sweeps ({record})")
            elif record is None and unseen and not self.strict:
                self.out.unrecorded += 1
                self.note(f"order {order_id}: {expected} not credited: its delivery died before it wrote anything")
            else:
                self.out.lost += 1
                self.violation(f"order {order_id}: {expected} never credited and not kept open for the sweep "
                               f"(record {record})")
        if record is not None and record.status == "done" and not credits and expected > 0:
            self.violation(f"order {order_id}: recorded done but WHMCS has no credit")

    # ------------------------------------------------------------------ 3. billing

    def worker_deps(self, *, faulty: bool, cs: Any, whmcs: Any, receiver: Any = None) -> Any:
        """A worker's deps; on the receiver path with ``receiver`` (a ReceiverClient through the proxy), whose
        ``send`` may be followed by a crash like any other dependency's call (after PHP committed)."""
        from cswhmcs.billing.ledger import Ledger
        from cswhmcs.billing.worker import WorkerDeps

        ledger: Any = Ledger(self.ledger_table, clock=self.clock)
        faults: Any = self.counter.point
        if faulty:
            cs = CrashProxy(cs, "cs", self.counter)
            whmcs = CrashProxy(whmcs, "whmcs", self.counter)
            ledger = CrashProxy(ledger, "ledger", self.counter)
            if receiver is not None:
                receiver = CrashProxy(receiver, "receiver", self.counter)
        else:
            def faults(point: str) -> None:
                return None

        return WorkerDeps.from_settings(self.settings, cs=cs, whmcs=whmcs, ledger=ledger, options=self.options,
                                        clock=self.clock, faults=faults, receiver=receiver)

    def seed_usage(self, svc: Svc, months: list[datetime]) -> None:
        rng = self.rng
        assert svc.cs_user_id is not None
        for product in rng.sample(PRODUCTS, rng.randint(1, 3)):
            for _ in range(rng.choice([1, 1, 2])):
                with _sp_lock:
                    sp = next(_sp_ids)
                total = rng.choice(TOTALS)
                every = timedelta(hours=rng.choice([6, 12, 24]) * len(months))
                t = OCT_END - timedelta(days=rng.randint(2, 7), hours=rng.choice([0, 1, 5]))
                last = months[-1] + timedelta(hours=rng.choice([0, 2, 30]))
                while t + every <= last:
                    row = self.w.cs.add_usage(svc.cs_user_id, product_name=product, subscription_product_id=sp,
                                              total=total, qty="1", period_start=t, period_end=t + every,
                                              product_label=product.title())
                    svc.rows.append(Row(int(row["id"]), product, Decimal(total), t + every))
                    t += every

    def bill(self) -> None:
        from cswhmcs.adapters.dynamo import AccountsRepo
        from cswhmcs.billing.ledger import Ledger
        from cswhmcs.billing.options import BillingOptions

        rng = self.rng
        self.ledger_table = self.w.resource.Table(self.tables[1])
        self.accounts = AccountsRepo(self.w.resource.Table(self.tables[0]))
        self.ledger = Ledger(self.ledger_table, clock=self.clock)
        self.options = BillingOptions(cs_limit=10**7, whmcs_rate=10_000, whmcs_burst=100, concurrency=2)
        self.clients_cs = self.w.clients(3)[:2]
        self.clients_rc: list[Any] = self.w.receivers(2) if self.via_receiver else [None, None]
        mapped = [s for s in self.services if s.created and s.cs_currency]
        if not mapped:
            return
        months = [OCT_END]
        if rng.random() < self.size.months[0]:
            months.append(NOV_END)
            if rng.random() < self.size.months[1]:
                months.append(DEC_END)
        self.usage = rng.sample(mapped, rng.randint(1, min(self.size.usage_accounts, len(mapped))))
        for svc in self.usage:
            self.seed_usage(svc, months)
            if rng.random() < 0.3:  # a ComputeStacks user whose currency is not the WHMCS client's
                svc.cs_currency = rng.choice([c for c in RATES if c != svc.currency])
                self.w.cs.set_user_fields(svc.cs_user_id, currency=svc.cs_currency)
        self.note(f"billing: months {[m.date().isoformat() for m in months]}, start {self.billing_start}, "
                  f"accounts {[(s.sid, s.cs_user_id, s.cs_currency, s.currency, len(s.rows)) for s in self.usage]}")
        self.leftover: list[str] = []
        self.runs: list[datetime] = []  # every as-of billed, in order (the rules depend on it)
        for month in months:
            for days in sorted(rng.sample([1, 2, 3], rng.randint(0, self.size.collects)), reverse=True):
                self.faulty_round("collect", datetime.combine((month - timedelta(days=days)).date(),
                                                              dtime(0, 30), UTC))
            if rng.random() < 0.15:  # an operator bills in the middle of the month: later rows are held
                mid = month - timedelta(days=rng.choice([1, 2]))
                self.runs.append(mid)
                self.faulty_round("bill", mid, operator=True)
                self.recover(mid)
            if rng.random() < 0.35:  # the close run before the cut-off (docs/billing.md 3b), or still going after it
                self.faulty_round("close", month, at=month - timedelta(minutes=rng.choice([95, 60, 1]))
                                  if rng.random() < 0.7 else None)
            if rng.random() < 0.15:  # the month-end run is late: a collection read past the cut-off
                self.faulty_round("collect", datetime.combine(month.date() + timedelta(days=2), dtime(0, 30),
                                                              UTC))
            self.runs.append(month)
            for _ in range(rng.choice([1, 1, 2])):
                self.faulty_round("bill", month)
            self.recover(month)
        self.check_billing(self.runs)

    def plan(self, kind: str, as_of: datetime, deps: Any, *, force: bool, faulty: bool) -> list[str]:
        """The planner as the scheduled trigger runs it (Lambda retries a failed invocation twice)."""
        from cswhmcs.billing.planner import Trigger, plan_run

        sink = ListSink(self.counter if faulty else None)
        for attempt in range(3):
            try:
                ledger = CrashProxy(self.ledger, "ledger", self.counter) if faulty else self.ledger
                plan_run(Trigger(kind, as_of), ledger=ledger, accounts=self.accounts, whmcs=deps.whmcs, sink=sink,
                         options=self.options, force=force, segments=2)
                break
            except (Crash, Exception) as exc:
                self.note(f"planner {kind} attempt {attempt + 1}: {type(exc).__name__}: {str(exc)[:80]}")
                self.clock.advance(timedelta(minutes=2))
        return sink.bodies

    def deliver_one(self, body: str, deps: Any) -> str:
        """One receive of one message by a worker: ok | failed | crash."""
        from cswhmcs.billing.handlers import AccountFailed, handle_record

        try:
            handle_record(body, deps)
            return "ok"
        except Crash:
            return "crash"
        except AccountFailed:
            return "failed"
        except Exception as exc:  # the batch processor would return it to the queue; but why did it raise?
            self.violation(f"the worker raised {type(exc).__name__}: {str(exc)[:200]}")
            return "failed"

    def deliver_batch(self, bodies: list[str], deps: Any) -> list[str]:
        """One receive of an SQS batch by a worker on the receiver path, as the Lambda worker hands it over
        (``handle_batch``: the lines of all its accounts go to the receiver together): per record ok |
        failed | crash (a crash kills the whole invocation: every record of the batch comes back)."""
        from cswhmcs.billing.handlers import handle_batch

        if not self.via_receiver:
            return [self.deliver_one(body, deps) for body in bodies]
        event = {"Records": [{"messageId": f"m{i}", "body": body} for i, body in enumerate(bodies)]}
        try:
            answer = handle_batch(event, deps, None)
        except Crash:
            return ["crash"] * len(bodies)
        except Exception as exc:  # the Lambda would fail the whole batch; but why did it raise?
            self.violation(f"the worker's batch raised {type(exc).__name__}: {str(exc)[:200]}")
            return ["failed"] * len(bodies)
        failed = {f.get("itemIdentifier") for f in answer.get("batchItemFailures", [])}
        return ["failed" if f"m{i}" in failed else "ok" for i in range(len(bodies))]

    def drain(self, bodies: list[str], deps: list[Any], *, dup_p: float, rounds: int) -> list[str]:
        """SQS: each message is received until a worker finishes it (at most MAX_RECEIVES times, then
        the dead-letter queue); a copy may go to a second worker at the same time. Returns what is left.
        On the receiver path the messages are received in batches of ``sqs_batch``."""
        queue: deque[tuple[str, int]] = deque((b, 0) for b in bodies)
        size = max(1, self.sqs_batch)
        for _ in range(rounds):
            if not queue:
                break
            batch = list(queue)
            queue.clear()
            for start in range(0, len(batch), size):
                chunk = batch[start:start + size]
                group = [body for body, _ in chunk]
                copies = 2 if dup_p and self.rng.random() < dup_p else 1
                if copies == 2:
                    with ThreadPoolExecutor(2) as pool:
                        results = list(pool.map(self.deliver_batch, [group, group], deps[:2]))
                else:
                    results = [self.deliver_batch(group, deps[0])]
                for i, (body, receives) in enumerate(chunk):
                    if "ok" in [r[i] for r in results]:
                        continue
                    if receives + 1 < MAX_RECEIVES:
                        queue.append((body, receives + 1))
                    else:
                        self.note("a message went to the dead-letter queue")
            if queue:
                self.clock.advance(VISIBILITY)
        return [b for b, _ in queue]

    def faulty_round(self, kind: str, as_of: datetime, *, operator: bool = False, at: datetime | None = None) -> None:
        """One scheduled run (or an operator's, ``operator``) of ``kind`` with faults armed, worked at ``at``
        (default: 5 minutes after its as-of; a close run may be worked before its cut-off)."""
        self.clock.set(at or as_of + timedelta(minutes=5))
        crashes = len(self.counter.crashes)

        def crash() -> str:
            if self.rng.random() < 0.5:
                self.counter.arm(point_p=0.2)
                return "crash@points"
            return self.arm_crash()

        armed = self.faults.arm(whmcs_kinds=(*WHMCS_KINDS, "wh_error"), whmcs_actions=BILLING_ACTIONS, crash=crash,
                                p_fault=0.8, most=3)
        if self.via_receiver and kind in ("bill", "close"):  # and between the backend and billing.php
            armed.kinds += self.faults.arm(cs_kinds=(), whmcs_kinds=(), receiver_kinds=RECEIVER_KINDS, p_fault=0.8,
                                           most=2).kinds
        modes = ["single", "duplicates", "two_runs_at_once"] + (["with_collect"] if kind == "bill" else [])
        mode = self.rng.choice(modes)
        (cs1, wh1), (cs2, wh2) = self.clients_cs
        rc1, rc2 = self.clients_rc
        deps1 = self.worker_deps(faulty=True, cs=cs1, whmcs=wh1, receiver=rc1)
        deps2 = self.worker_deps(faulty=True, cs=cs2, whmcs=wh2, receiver=rc2)
        if mode in ("two_runs_at_once", "with_collect"):
            # two_runs_at_once: the scheduled run and an operator's run of the same as-of; with_collect: the
            # next daily collection (past the cut-off) while the month-end run is still going.
            second = (kind, as_of, True) if mode == "two_runs_at_once" else (
                "collect", datetime.combine(as_of.date() + timedelta(days=1), dtime(0, 30), UTC), False)

            def one(deps: Any, what: tuple[str, datetime, bool]) -> list[str]:
                bodies = self.plan(what[0], what[1], deps, force=what[2], faulty=True)
                return self.drain(bodies, [deps, deps], dup_p=0.0, rounds=3)

            with ThreadPoolExecutor(2) as pool:
                left = pool.map(one, [deps1, deps2], [(kind, as_of, operator), second])
                self.leftover += [b for part in left for b in part]
        else:
            bodies = self.plan(kind, as_of, deps1, force=operator, faulty=True)
            self.leftover += self.drain(bodies, [deps1, deps2], dup_p=0.5 if mode == "duplicates" else 0.0,
                                        rounds=3)
        self.calm()
        self.count(*armed.kinds, f"{kind} {mode}")
        self.note(f"{kind} {as_of.isoformat()}{f' at {at.isoformat()}' if at else ''}"
                  f"{' (operator)' if operator else ''}: {armed} {mode}; crashes "
                  f"{self.counter.crashes[crashes:]}; {len(self.leftover)} messages left")

    def recover(self, month: datetime) -> None:
        """Faults gone: the leftover messages again, maybe a collection, then the operator's run until
        nothing fails; every item whose line is not done is reported; the operator settles; a final run."""
        from cswhmcs.billing.grouping import DONE
        from cswhmcs.billing.run import run_billing

        (cs1, wh1), (cs2, wh2) = self.clients_cs
        clean = self.worker_deps(faulty=False, cs=cs1, whmcs=wh1, receiver=self.clients_rc[0])
        self.clock.advance(timedelta(minutes=20))
        left = self.drain(self.leftover, [clean], dup_p=0.0, rounds=MAX_RECEIVES)
        self.leftover = []
        if left:
            self.note(f"recovery: {len(left)} messages still failing without faults")
        if self.rng.random() < 0.3:  # the next daily collection comes before the operator looks
            after = datetime.combine(month.date() + timedelta(days=1), dtime(0, 30), UTC)
            self.clock.set(after + timedelta(minutes=5))
            left = self.drain(self.plan("collect", after, clean, force=False, faulty=False), [clean], dup_p=0.0,
                              rounds=MAX_RECEIVES)
            self.note(f"recovery: collection {after.isoformat()}, {len(left)} messages failing")
        for attempt in range(3):
            summary = run_billing(as_of=month, ledger=self.ledger, accounts=self.accounts, deps=clean,
                                  concurrency=2)
            open_attention = [ln.ref for ln in self.ledger.attention()]
            if summary.open_attention != len(open_attention):
                self.violation(f"run summary says {summary.open_attention} open attention, the ledger lists "
                               f"{len(open_attention)}")
            if not {o.ref for o in summary.attention} <= set(open_attention):
                self.violation(f"the run reported {[o.ref for o in summary.attention]} needing attention, "
                               f"the ledger lists {open_attention}")
            if summary.exit_code != (3 if summary.needs_attention else 0):
                self.violation(f"exit code {summary.exit_code} with needs_attention={summary.needs_attention}")
            self.note(f"recovery run {attempt + 1}: created {summary.created_count}, failed {summary.failed}, "
                      f"attention {len(summary.attention)}/{summary.open_attention}")
            if not summary.failed:
                break
            self.clock.advance(timedelta(minutes=20))
        else:
            self.violation(f"month {month.date()}: accounts kept failing without faults: {summary.failed}")

        # Every item WHMCS holds whose line is not done is listed as needing attention.
        items = self.items_by_ref()
        done = {ln.ref for s in self.usage for ln in self.ledger.lines_of(s.cs_user_id) if ln.status == DONE}
        attention = [ln for ln in self.ledger.attention()]
        listed = {ln.ref for ln in attention}
        for ref in items:
            if ref not in done and ref not in listed:
                self.violation(f"item [ref {ref}] exists in WHMCS but its line is neither done nor reported")
        for s in self.usage:
            state = self.ledger.load(s.cs_user_id)
            if state.lines:
                self.violation(f"account {s.cs_user_id}: lines still open after recovery: "
                               f"{[(k, ln.status) for k, ln in state.lines.items()]}")
        self.out.attention += len(attention)
        if self.via_receiver and attention:  # docs/billing.md 5b: no fault of this path needs an operator
            self.out.receiver_attention += len(attention)
            for line in attention:
                self.violation(f"line {line.ref} needs attention on the receiver path "
                               f"({'its item exists' if items.get(line.ref) else 'no item'}): {line.reason}")

        # The operator looks each reported line up in WHMCS and settles it, then runs again (on the receiver
        # path there must be nothing to settle: see above).
        for line in attention:
            found = items.get(line.ref, [])
            if found:
                self.ledger.resolve_billed(line.ref, int(found[0]["id"]))
            else:
                self.ledger.resolve_resend(line.ref)
        if attention:
            self.note(f"operator settled {[(ln.ref, bool(items.get(ln.ref))) for ln in attention]}")
            final = run_billing(as_of=month, ledger=self.ledger, accounts=self.accounts, deps=clean, concurrency=2)
            if final.failed or final.attention or final.open_attention:
                self.violation(f"month {month.date()}: the run after the operator settled everything still "
                               f"failed {final.failed} / needs attention {final.attention} {final.open_attention}")
        _ = (cs2, wh2)

    def items_by_ref(self) -> dict[str, list[dict[str, Any]]]:
        import re

        ref_re = re.compile(r"\[ref (\d+:\d{4}-\d{2}:\d+)\]")
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in self.w.whmcs.billable_items:
            if int(item["clientid"]) not in self.clients:
                continue
            match = ref_re.search(item["description"])
            if not match:
                self.violation(f"billable item {item['id']} without a [ref ...]: {item['description']}")
                continue
            out[match.group(1)].append(item)
        return out

    def expected_lines(self, svc: Svc, runs: list[datetime]) -> tuple[dict[tuple[str, str], Decimal], set[int]]:
        """Per (period, product) the amount API.md section 6 gives for these runs, and the rows billed: each
        run bills, per product without a line for its period yet, every row not billed before that ended
        by its as-of (and after BILLING_START); under 0.01 after conversion it carries over; a product whose
        line for the period exists already holds its rows for the next period's line."""
        start = datetime.combine(self.billing_start, dtime(0), UTC) if self.billing_start else None
        billed: set[int] = set()
        last_period: dict[str, str] = {}
        out: dict[tuple[str, str], Decimal] = {}
        for as_of in runs:
            period = as_of.strftime("%Y-%m")
            for product in sorted({r.product for r in svc.rows}):
                if last_period.get(product, "") >= period:
                    continue  # held
                rows = [r for r in svc.rows if r.product == product and r.id not in billed and r.end <= as_of
                        and (start is None or r.end >= start)]
                if not rows:
                    continue
                exact = sum((r.total for r in rows), Decimal(0))
                if svc.cs_currency != svc.currency:
                    with localcontext() as ctx:
                        ctx.prec = 50
                        exact = exact * RATES[svc.currency] / RATES[svc.cs_currency]
                if exact < CENT:
                    continue  # carried over
                out[(period, product)] = cents(exact)
                billed |= {r.id for r in rows}
                last_period[product] = period
        return out, billed

    def check_billing(self, months: list[datetime]) -> None:
        start = datetime.combine(self.billing_start, dtime(0), UTC) if self.billing_start else None
        items = self.items_by_ref()
        for ref, found in items.items():
            if len(found) > 1:
                self.out.duplicates += len(found) - 1
                self.violation(f"[ref {ref}] billed {len(found)} times: {[i['amount'] for i in found]}")
        refs_seen: set[str] = set()
        for svc in self.usage:
            assert svc.cs_user_id is not None
            lines = self.ledger.lines_of(svc.cs_user_id)
            state = self.ledger.load(svc.cs_user_id)
            want, billed_ids = self.expected_lines(svc, months)
            want_rows = len(billed_ids)
            got: dict[tuple[str, str], Decimal] = {}
            for ln in lines:
                refs_seen.add(ln.ref)
                if ln.status != "done":
                    self.violation(f"line {ln.ref} is {ln.status} at the end")
                found = items.get(ln.ref, [])
                if not found:
                    self.violation(f"line {ln.ref} is done (billable {ln.billable_id}) but WHMCS has no such item")
                    continue
                if ln.billable_id != int(found[0]["id"]):
                    self.violation(f"line {ln.ref} records billable {ln.billable_id}, WHMCS has {found[0]['id']}")
                product = found[0]["description"].split(":")[0].split(" (")[0].lower()
                got[(ln.period, product)] = Decimal(found[0]["amount"])
            if got != want:
                self.violation(f"account {svc.cs_user_id}: billed {sorted(got.items())}, the rules give "
                               f"{sorted(want.items())}")
            # Conservation: every absorbed row is in exactly one line or running total.
            upto = state.absorbed_upto or months[-1]
            absorbed = [r for r in svc.rows if r.end <= upto and (start is None or r.end >= start)]
            counted = sum(ln.rows for ln in lines) + state.pending_rows()
            total = sum((ln.source_total for ln in lines), Decimal(0)) + state.pending_total()
            if counted < len(absorbed):
                self.out.lost += len(absorbed) - counted
                self.violation(f"account {svc.cs_user_id}: {len(absorbed) - counted} eligible rows in no line "
                               "and no running total")
            elif counted > len(absorbed):
                self.out.duplicates += counted - len(absorbed)
                self.violation(f"account {svc.cs_user_id}: {counted - len(absorbed)} rows counted twice")
            if total != sum((r.total for r in absorbed), Decimal(0)):
                self.violation(f"account {svc.cs_user_id}: lines + running totals = {total}, the rows make "
                               f"{sum((r.total for r in absorbed), Decimal(0))}")
            if sum(ln.rows for ln in lines) != want_rows:
                self.violation(f"account {svc.cs_user_id}: lines hold {sum(ln.rows for ln in lines)} rows, "
                               f"the rules bill {want_rows}")
        for ref in items:
            if ref not in refs_seen:
                self.violation(f"item [ref {ref}] in WHMCS has no line in the ledger")
        self.check_receiver_refs(items)

    def check_receiver_refs(self, items: dict[str, list[dict[str, Any]]]) -> None:
        """The receiver's refs table against WHMCS's items and the ledger (this schedule's clients only).
        Receiver path: one ref row per item (same ref, billableid, client, amount), every row's item exists,
        and every done line's billable_id is its ref row's. API path: the receiver recorded nothing."""
        if self.w.db is None:
            return
        rows = [r for r in self.w.db.receiver_refs() if int(r["clientid"]) in self.clients]
        if not self.via_receiver:
            if rows:
                self.violation(f"the receiver recorded refs {[r['ref'] for r in rows]} on the API path")
            return
        by_ref = {str(r["ref"]): r for r in rows}
        by_id = {int(item["id"]): item for found in items.values() for item in found}
        for ref, found in items.items():
            row = by_ref.get(ref)
            recorded = int(row["billableid"]) if row is not None else None
            for item in found:
                if int(item["id"]) != recorded:
                    names = f" (its ref's row names #{recorded})" if recorded is not None else ""
                    self.violation(f"item #{item['id']} [ref {ref}] in WHMCS has no row in the receiver's refs "
                                   f"table{names}")
                elif row is not None and (int(row["clientid"]) != int(item["clientid"])
                                          or str(row["amount"]) != str(item["amount"])):
                    self.violation(f"[ref {ref}]: the receiver's row (client {row['clientid']}, {row['amount']}) "
                                   f"disagrees with its item (client {item['clientid']}, {item['amount']})")
        for ref, row in by_ref.items():
            if int(row["billableid"]) not in by_id:
                self.violation(f"the receiver's row [ref {ref}] names billable #{row['billableid']}, which WHMCS "
                               "does not have (item and ref are not one transaction)")
        for svc in self.usage:
            assert svc.cs_user_id is not None
            for ln in self.ledger.lines_of(svc.cs_user_id):
                if ln.status != "done":
                    continue
                row = by_ref.get(ln.ref)
                if row is None:
                    self.violation(f"line {ln.ref} is done (billable {ln.billable_id}) but the receiver has no "
                                   "row for its ref")
                elif ln.billable_id != int(row["billableid"]):
                    self.violation(f"line {ln.ref} records billable {ln.billable_id}, the receiver's row "
                                   f"#{row['billableid']}")


def run_schedule(world: World, seed: int, *, size: str = "small", strict: bool = False,
                 path: str | None = None) -> Outcome:
    """One schedule; ``path`` (``"api"`` | ``"receiver"``) overrides the seed's own (``path_of``)."""
    return Schedule(world, seed, size=size, strict=strict, path=path).run()
