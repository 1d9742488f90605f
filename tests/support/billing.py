"""The billing fakes and the moto world of the worker's unit tests (tests/unit/test_billing_worker.py and the
tests built on it): in-memory ComputeStacks and WHMCS that implement the billing ports
(``cswhmcs.ports.ComputeStacksUsage``, ``WhmcsBilling``; checked by mypy at the end of this module), the
module's billing receiver with API.md section 8 semantics and fault knobs, and the DynamoDB tables built from
template.yaml's own definitions."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.responses import DynamoHandler

from cswhmcs.adapters.computestacks import UserSelector
from cswhmcs.adapters.dynamo import AccountsRepo
from cswhmcs.adapters.receiver import ReceiverAnswer, ReceiverBadRequest, ReceiverItem, ReceiverUnknownOutcome
from cswhmcs.adapters.whmcs import Currency
from cswhmcs.billing.ledger import Ledger
from cswhmcs.billing.messages import BILL, Account, RunContext, WorkMessage
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.run import run_billing
from cswhmcs.billing.usage import iso
from cswhmcs.billing.worker import WorkerDeps
from cswhmcs.errors import NotFound, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from tests.support.clocks import Clock

if TYPE_CHECKING:
    from cswhmcs import ports

ROOT = Path(__file__).resolve().parents[2]  # the repository
AS_OF = datetime(2026, 10, 31, 23, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)


class SimulatedCrash(BaseException):
    """A process dying mid-way: not an Exception, so nothing in the worker catches it."""


# ---------------------------------------------------------------------- fakes


class FakeCS:
    def __init__(self) -> None:
        self.users: dict[int, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.request_count = 0
        self.fail = 0
        self._id = 0

    def add_user(self, uid: int, currency: str = "USD") -> None:
        self.users[uid] = {"id": uid, "currency": currency}

    def add_usage(self, uid: int, *, product: int, sp: int, total: str, qty: str = "1", end: datetime,
                  hours: int = 3) -> dict[str, Any]:
        self._id += 1
        row = {"id": self._id, "user": uid, "period_start": iso(end - timedelta(hours=hours)), "period_end": iso(end),
               "created_at": iso(end), "total": total, "qty": qty, "processed": False,
               "subscription_product": {"id": sp, "product": {"id": product, "label": f"Product {product}"}}}
        self.rows.append(row)
        return row

    def iter_billing_usages(self, user_id: int, *, per_page: int = 500) -> Iterator[dict[str, Any]]:
        self.request_count += 1
        if user_id not in self.users:
            raise NotFound(f"ComputeStacks has no user {user_id}.")
        if self.fail:
            self.fail -= 1
            raise UpstreamError("ComputeStacks answered with HTTP 500.", upstream="ComputeStacks", http_status=500)
        mine = [r for r in self.rows if r["user"] == user_id]
        yield from sorted(mine, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    def get_user(self, selector: UserSelector) -> dict[str, Any] | None:
        self.request_count += 1
        return self.users.get(int(selector.path().rstrip("/").split("/")[-1]))


@dataclass
class FakeWhmcs:
    version_text: str | None = "8.10.1"
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    script: list[str] = field(default_factory=list)  # per AddBillableItem: ok | 5xx | unreachable | timeout | tac
    request_count: int = 0

    def add_client(self, cid: int, code: str = "USD") -> None:
        ids = {"USD": 1, "EUR": 2, "GBP": 3}
        self.clients[cid] = {"id": cid, "currency": ids[code], "currency_code": code}

    def version(self) -> str | None:
        self.request_count += 1
        return self.version_text

    def get_currencies(self) -> list[Currency]:
        self.request_count += 1
        return [Currency(1, "USD", "$", "", Decimal("1.00000")), Currency(2, "EUR", "€", "", Decimal("0.92000")),
                Currency(3, "GBP", "£", "", Decimal("0.79000"))]

    def get_client(self, client_id: int) -> dict[str, Any]:
        self.request_count += 1
        return dict(self.clients[client_id])

    def add_billable_item(self, **kw: Any) -> int:
        self.request_count += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "5xx":
            raise UpstreamError("WHMCS failed with HTTP 500.", upstream="WHMCS", http_status=500)
        if step == "unreachable":
            raise UpstreamUnreachable("WHMCS could not be reached.", upstream="WHMCS")
        if step == "timeout":  # sent, not applied, no answer: as ambiguous as tac for us
            raise UpstreamTimeout("WHMCS did not answer in time.", upstream="WHMCS", maybe_applied=True)
        self.items.append({"id": len(self.items) + 1, **kw})
        if step == "tac":
            raise UpstreamTimeout("WHMCS did not answer in time.", upstream="WHMCS", maybe_applied=True)
        return len(self.items)


class ListSink:
    """The work queue as the planner sees it (its ``sink``): every message sent, in order, in ``sent``."""

    def __init__(self) -> None:
        self.sent: list[WorkMessage] = []

    def send(self, messages: list[WorkMessage]) -> None:
        self.sent += messages

    def flush(self) -> None:
        pass


@dataclass
class World:
    ledger: Ledger
    accounts: AccountsRepo
    cs: FakeCS
    whmcs: FakeWhmcs
    clock: Clock
    table: Any
    accounts_table: Any
    faults: list[str] = field(default_factory=list)

    def deps(self, **kw: Any) -> WorkerDeps:
        def fault(point: str) -> None:
            if point in self.faults:
                self.faults.remove(point)
                raise SimulatedCrash(point)

        return WorkerDeps(cs=self.cs, whmcs=self.whmcs, ledger=self.ledger, clock=self.clock, faults=fault,
                          options=BillingOptions(concurrency=2), **kw)

    def add_account(self, service_id: int, uid: int, client_id: int, *, cs_cur: str = "USD",
                    client_cur: str = "USD") -> Account:
        self.cs.add_user(uid, cs_cur)
        self.whmcs.add_client(client_id, client_cur)
        self.accounts_table.put_item(Item={"service_id": service_id, "cs_user_id": uid, "email": f"u{uid}@example.com",
                                           "client_id": client_id, "currency": cs_cur})
        return Account(service_id, uid, client_id, f"u{uid}@example.com", cs_cur)

    def run(self, as_of: datetime = AS_OF, **kw: Any) -> Any:
        return run_billing(as_of=as_of, ledger=self.ledger, accounts=self.accounts, deps=self.deps(), **kw)


_MOTO_DYNAMODB = threading.Lock()
_moto_call_action = DynamoHandler.call_action


def _one_request_at_a_time(handler: DynamoHandler) -> Any:
    """moto's DynamoDB handles one request at a time, as DynamoDB makes each request atomic. Unlocked, moto
    is not: its TransactWriteItems deep-copies whole tables while another thread writes to them ("dictionary
    changed size during iteration", a failed account in a concurrent run) and, when a transaction is
    refused, puts that copy back over the other threads' writes. The concurrency tests here are about our
    code's races, not moto's; DynamoDB Local runs them on the real engine
    (tests/integration/test_billing_receiver.py, test_billing_faults.py)."""
    with _MOTO_DYNAMODB:
        return _moto_call_action(handler)


@pytest.fixture
def world() -> Iterator[World]:
    from cswhmcs.local.template import Template, ensure_tables

    with mock_aws(), mock.patch.object(DynamoHandler, "call_action", _one_request_at_a_time):
        client = boto3.client("dynamodb", region_name="us-east-1")
        ensure_tables(Template(ROOT / "template.yaml"), client,
                      {"ACCOUNTS_TABLE": "accounts", "LEDGER_TABLE": "ledger", "REPLAY_TABLE": "idem"})
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        clock = Clock(AS_OF + timedelta(minutes=5))
        yield World(ledger=Ledger(resource.Table("ledger"), clock=clock),
                    accounts=AccountsRepo(resource.Table("accounts")), cs=FakeCS(), whmcs=FakeWhmcs(),
                    clock=clock, table=resource.Table("ledger"), accounts_table=resource.Table("accounts"))


def message(account: Account, as_of: datetime = AS_OF, kind: str = BILL, unit: str = "quantity") -> WorkMessage:
    return WorkMessage(RunContext(f"{kind}#{iso(as_of)}", kind, as_of, unit), account)


def worker_event(bodies: dict[str, str]) -> dict[str, Any]:
    """The billing worker's SQS event (events/billing_worker.json) with a record per item of ``bodies``
    (message id: body), in that order."""
    event: dict[str, Any] = json.loads((ROOT / "events/billing_worker.json").read_text())
    record = event["Records"][0]
    event["Records"] = [dict(record, messageId=message_id, body=body) for message_id, body in bodies.items()]
    return event


def month_of_usage(cs: FakeCS, uid: int, *, product: int = 1, sp: int = 1, total: str = "0.02054795",
                   start: datetime = OCT, days: int = 31) -> Decimal:
    """Every 3 hours for ``days`` days; returns the exact sum."""
    n = 0
    end = start + timedelta(hours=3)
    while end <= start + timedelta(days=days) - timedelta(hours=1):
        cs.add_usage(uid, product=product, sp=sp, total=total, end=end)
        end += timedelta(hours=3)
        n += 1
    return Decimal(total) * n


class CountingWhmcs(FakeWhmcs):
    """The WHMCS API fake, counting calls per action; ``rates`` are what GetCurrencies answers now."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.rates = {"USD": Decimal("1.00000"), "EUR": Decimal("0.92000"), "GBP": Decimal("0.79000")}

    def get_currencies(self) -> list[Currency]:
        self.calls["GetCurrencies"] += 1
        self.request_count += 1
        ids = {"USD": 1, "EUR": 2, "GBP": 3}
        return [Currency(ids[c], c, "", "", r) for c, r in self.rates.items()]

    def get_client(self, client_id: int) -> dict[str, Any]:
        self.calls["GetClientsDetails"] += 1
        return super().get_client(client_id)

    def add_billable_item(self, **kw: Any) -> int:
        self.calls["AddBillableItem"] += 1
        return super().add_billable_item(**kw)


class FakeReceiver:
    """billing.php as API.md section 8 says: a ref creates at most one item, ever (an existing ref answers
    ``existing`` with the first id), the currency must be the client's, answers in order. Knobs:
    ``lose_after`` (apply, then raise ReceiverUnknownOutcome), ``lose_before`` (raise without applying),
    ``errors`` (raise these, nothing applied), ``refuse`` (ref -> how many more times it is rejected),
    ``bad`` (refs that make the whole body a 400)."""

    MAX_ITEMS = 100

    def __init__(self, whmcs: FakeWhmcs, *, attempt_seconds: float = 0.0, delay: float = 0.0,
                 max_items: int = 100) -> None:
        self.MAX_ITEMS = max_items  # ReceiverClient's is 100; smaller keeps the test fast
        self.whmcs = whmcs
        self.items: list[dict[str, Any]] = []
        self.refs: dict[str, int] = {}
        self.batches: list[list[str]] = []  # refs of every request that reached it
        self.lose_after = 0
        self.lose_before = 0
        self.errors: list[Exception] = []
        self.refuse: dict[str, int] = {}
        self.bad: set[str] = set()
        self.hint: str | None = None  # a wrong "currency" in currency refusals (a receiver that misleads)
        self.delay = delay
        self._attempt_seconds = attempt_seconds
        self._lock = threading.Lock()

    @property
    def request_count(self) -> int:
        return len(self.batches)

    @property
    def attempt_seconds(self) -> float:
        return self._attempt_seconds

    def per_ref(self) -> Counter[str]:
        return Counter(item["ref"] for item in self.items)

    def send(self, items: list[ReceiverItem]) -> list[ReceiverAnswer]:
        assert len(items) <= self.MAX_ITEMS
        bodies = [item.to_json() for item in items]  # what would go on the wire (validates the item)
        time.sleep(self.delay)
        with self._lock:
            if self.errors:
                raise self.errors.pop(0)
            if self.lose_before:
                self.lose_before -= 1
                raise ReceiverUnknownOutcome("The connection broke before the request was sent.", reason="dropped")
            self.batches.append([b["ref"] for b in bodies])
            if any(b["ref"] in self.bad for b in bodies):
                raise ReceiverBadRequest("The WHMCS billing receiver refused the request: bad item.",
                                         http_status=400)
            answers = [self._one(b) for b in bodies]
            if self.lose_after:
                self.lose_after -= 1
                raise ReceiverUnknownOutcome("The WHMCS billing receiver did not answer in time.", reason="timeout")
            return answers

    def _one(self, item: dict[str, Any]) -> ReceiverAnswer:
        ref = item["ref"]
        if ref in self.refs:
            return ReceiverAnswer(ref, "existing", self.refs[ref], "", "", None)
        client = self.whmcs.clients.get(item["clientid"])
        if client is None:
            return ReceiverAnswer(ref, "refused", None, "Client ID not found", "client_not_found", None)
        if item["currency"] != client["currency_code"]:
            return ReceiverAnswer(ref, "refused", None, "The currency is not the client's.", "currency_mismatch",
                                  self.hint or client["currency_code"])
        if self.refuse.get(ref, 0) > 0:
            self.refuse[ref] -= 1
            return ReceiverAnswer(ref, "refused", None, "Invalid description", "rejected", None)
        billable_id = len(self.items) + 1
        self.items.append({"id": billable_id, **item})
        self.refs[ref] = billable_id
        return ReceiverAnswer(ref, "created", billable_id, "", "", None)


def setup(world: World, **kw: Any) -> FakeReceiver:
    """The world's WHMCS becomes a ``CountingWhmcs``; returns a receiver on it (``world.deps(receiver=...)``)."""
    whmcs = CountingWhmcs()
    world.whmcs = whmcs
    return FakeReceiver(whmcs, **kw)


# ---------------------------------------------------------------------- the fakes implement the ports (mypy)

if TYPE_CHECKING:
    _cs: ports.ComputeStacksUsage = FakeCS()
    _whmcs: ports.WhmcsBilling = FakeWhmcs()
    _counting: ports.WhmcsBilling = CountingWhmcs()
    _receiver: ports.BillingReceiver = FakeReceiver(FakeWhmcs())
    _ledger: ports.Ledger = Ledger(None)
    _accounts: ports.AccountsRepo = AccountsRepo(None)
    _scan: ports.AccountsScan = AccountsRepo(None)
