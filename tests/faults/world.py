"""The shared stage of every schedule: one DynamoDB Local, one pair of sandboxes (real HTTP servers), the
route handlers of template.yaml invoked in-process exactly as `cswhmcs serve` does, and per schedule fresh
ledger and accounts tables. State never leaks between schedules: WHMCS service, client and ComputeStacks
user ids are unique in the sandboxes, and the tables are new.

The billing receiver (API.md section 8) is part of the stage when php and MariaDB are installed: a private
MariaDB (once per process), a WHMCS database on it, the WHMCS sandbox in DB-backed mode on that database
(so the items the API path creates and those the receiver creates are all in ``whmcs.billable_items``), the
real ``billing.php`` under ``php -S`` on the same database (``ReceiverServer``, 4 workers; the server
record's Access Hash is ``SIGNING_SECRET``) and a ``FaultProxy`` (``SlowProxy``) in front of it. Each
sandbox restart takes a new database (the sandbox's ids start again at 1) and restarts the receiver and the
proxy on it. Without php or MariaDB, ``receiver_reason`` says why and the receiver-path schedules are skipped.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import time
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.faults.injection import CrashCounter, CrashProxy, SlowProxy

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "fault-schedules-signing-secret"
TIMEOUT = 0.25  # every upstream read timeout: a timeout costs a quarter of a second, not ten
RESTART_EVERY = 40  # schedules between sandbox restarts (their request logs and user lists stay small)


class WallOffset:
    """``time`` as cswhmcs.adapters.dynamo sees it (order-credit leases, replay records): real time plus
    an offset the schedule moves, so that "the next day's sweep" does not need a real day."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.module = types.SimpleNamespace(time=lambda: time.time() + self.offset, monotonic=time.monotonic,
                                            sleep=time.sleep, perf_counter=time.perf_counter)


def _short_sleep(seconds: float) -> None:
    """Backoffs and Retry-After waits on a compressed scale (a 1 s Retry-After costs 10 ms)."""
    time.sleep(min(max(seconds, 0.0), 1.0) / 100)


def _accepted(factory: Any, **candidates: Any) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    return {k: v for k, v in candidates.items() if k in params}


# Every ComputeStacks attempt carries the (wall-clock) time it was sent: the sandbox records request headers,
# so a check can tell an attempt ComputeStacks carried out after its request had answered (an upstream
# reordering no client can prevent) from a write the backend sent late (schedule.py ``late_landing``).
SENT_HEADER = "X-Fs-Sent"


def _stamp_sent(request: Any) -> None:
    request.headers[SENT_HEADER] = repr(time.time())


def make_cs(settings: Any) -> Any:
    from cswhmcs.adapters.computestacks import ComputeStacksClient

    kw = _accepted(ComputeStacksClient.__init__, backoff=0.001, sleep=_short_sleep)
    client = ComputeStacksClient.from_settings(settings, **kw)
    hooks = client._http.event_hooks
    client._http.event_hooks = {**hooks, "request": [*hooks.get("request", []), _stamp_sent]}
    return client


def make_receiver(settings: Any) -> Any:
    """The billing receiver's client as the product builds it (``factory.receiver_client``), with the
    schedules' timeout (``WHMCS_TIMEOUT`` = TIMEOUT, not twice it: a latency above TIMEOUT is a timeout)
    and compressed backoffs."""
    from cswhmcs import factory
    from cswhmcs.adapters.receiver import ReceiverClient

    kw = _accepted(ReceiverClient.__init__, sleep=_short_sleep)
    return factory.receiver_client(settings, timeout=settings.WHMCS_TIMEOUT, connect_timeout=settings.CONNECT_TIMEOUT,
                                   **kw)


def make_whmcs(settings: Any) -> Any:
    from cswhmcs.adapters.whmcs import WhmcsClient

    kw = _accepted(WhmcsClient.__init__, sleep=_short_sleep)
    return WhmcsClient(settings.WHMCS_API_URL, settings.WHMCS_API_IDENTIFIER.get_secret_value(),
                       settings.WHMCS_API_SECRET.get_secret_value(),
                       settings.WHMCS_API_ACCESS_KEY.get_secret_value() or None,
                       timeout=settings.WHMCS_TIMEOUT, connect_timeout=settings.CONNECT_TIMEOUT, **kw)


class _BehindCounter:
    """A ``FaultDeps`` attribute: the dependency in ``attr``, behind the schedule's crash counter under the
    attribute's own name (the counter's step names: ``cs.*``, ``whmcs.*``, ``accounts.*``, ``order_credits.*``)."""

    def __init__(self, attr: str) -> None:
        self.attr = attr
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, deps: FaultDeps, owner: type | None = None) -> Any:
        return CrashProxy(getattr(deps, self.attr), self.name, deps.counter)


class FaultDeps:
    """What the route handlers get instead of ``cswhmcs.api.get_deps()``: the real ``Deps`` of the
    schedule's settings, with every dependency an action uses behind the schedule's crash counter and
    upstream clients whose backoffs are compressed."""

    def __init__(self, settings: Any, counter: CrashCounter, *, resource: Any, clients: tuple[Any, Any]) -> None:
        from cswhmcs.adapters.dynamo import AccountsRepo, OrderCreditRecords, ReplayGuard
        from cswhmcs.api import Deps

        self._real = Deps(settings)
        self.settings = settings
        self.counter = counter
        self._cs, self._whmcs = clients
        # One boto3 resource for the whole world (building one per thread and schedule costs more than the work).
        self.plain_accounts = AccountsRepo.from_settings(settings, resource)
        self.plain_order_credits = OrderCreditRecords.from_settings(settings, resource)
        self.replay_guard = ReplayGuard.from_settings(settings, resource)
        self.ddb = resource

    cs = _BehindCounter("_cs")
    whmcs = _BehindCounter("_whmcs")
    accounts = _BehindCounter("plain_accounts")
    order_credits = _BehindCounter("plain_order_credits")

    def __getattr__(self, name: str) -> Any:  # replay_guard, ddb, and whatever Deps grows
        return getattr(self._real, name)


class World:
    """Started once per process (a pytest session, a soak worker)."""

    def __init__(self, ddb_endpoint: str) -> None:
        import boto3

        from cswhmcs.local.server import LocalApi
        from cswhmcs.local.template import Template

        self.ddb_endpoint = ddb_endpoint
        self.template = Template(ROOT / "template.yaml")
        self.api = LocalApi(self.template)
        self.ddb = boto3.client("dynamodb", endpoint_url=ddb_endpoint)
        self.resource = boto3.resource("dynamodb", endpoint_url=ddb_endpoint)
        self.tabledefs = {t.env_var: t for t in self.template.tables() if t.env_var}
        self.idempotency = f"fs-idem-{uuid.uuid4().hex[:8]}"  # signatures are unique: one table for all
        self.ddb.create_table(**self.tabledefs["REPLAY_TABLE"].create_kwargs(self.idempotency))
        self.wall = WallOffset()
        self.deps: FaultDeps | None = None  # the schedule's, while it runs
        self.cs: Any = None
        self.whmcs: Any = None
        self.groups: list[int] = []
        self.product_id = 0
        self._clients: list[tuple[Any, Any]] = []  # (ComputeStacks, WHMCS) pairs, kept across schedules
        self._receivers: list[Any] = []  # receiver clients (through the proxy), kept like the pairs
        self._since_restart = 0
        # The billing receiver's stage (None, and receiver_reason set, when it cannot run here).
        self.receiver_reason = ""
        self.mariadb: Any = None
        self._mariadb_tmp = ""
        self.db: Any = None  # the WhmcsDatabase of the running sandboxes
        self.db_name = ""
        self.receiver: Any = None  # ReceiverServer
        self.proxy: Any = None  # the SlowProxy (a FaultProxy) in front of it
        self._start_mariadb()
        try:
            self._start_sandboxes()
        except BaseException:
            self._stop_sandboxes()
            self._stop_mariadb()
            raise

    @property
    def has_receiver(self) -> bool:
        return self.proxy is not None

    def _start_mariadb(self) -> None:
        """Once per process (~1-4 s): the receiver's database engine, or the reason it cannot run here.
        Only what is missing is a reason to skip; installed parts that fail to start fail the world."""
        import importlib.util

        from sandboxes.mariadb import MariaDB, MariaDBUnavailable, binaries

        if shutil.which("php") is None:
            self.receiver_reason = ("the billing receiver needs php-cli (apt-get install php-cli php-mysql "
                                    "php-illuminate-database)")
            return
        if importlib.util.find_spec("pymysql") is None:
            self.receiver_reason = "the billing receiver's database needs PyMySQL (pip install -e '.[dev]')"
            return
        try:
            binaries()
        except MariaDBUnavailable as exc:
            self.receiver_reason = f"the billing receiver needs MariaDB: {exc}"
            return
        # Each MariaDB gets a tmpdir of its own: a starting mariadbd deletes every "#sql*" file in its tmpdir,
        # so servers starting at once in the shared /tmp (this pool's workers, other test runs) break each
        # other's mariadb-install-db ("Unknown table 'mysql.tmp_proxies_priv'"). MariaDB reads TMPDIR.
        self._mariadb_tmp = tempfile.mkdtemp(prefix="fs-mdbtmp-")
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = self._mariadb_tmp
        try:
            for attempt in range(2):  # and once more, should it still fail to install
                server = MariaDB()
                try:
                    self.mariadb = server.start()
                    break
                except MariaDBUnavailable:
                    server.stop()  # removes its directory
                    if attempt:
                        raise
        finally:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved

    def _stop_mariadb(self) -> None:
        if self.mariadb is not None:
            self.mariadb.stop()
            self.mariadb = None
        if self._mariadb_tmp:
            shutil.rmtree(self._mariadb_tmp, ignore_errors=True)
            self._mariadb_tmp = ""

    def _start_sandboxes(self) -> None:
        from sandboxes.computestacks import ComputeStacksSandbox
        from sandboxes.whmcs import WhmcsSandbox

        self._since_restart = 0
        self.cs = ComputeStacksSandbox().start()
        if self.mariadb is None:
            self.whmcs = WhmcsSandbox().start()
        else:
            self._start_receiver_stage()
        self.groups = [int(self.cs.add_user_group(f"group-{i}")["id"]) for i in range(3)]
        self.product_id = int(self.whmcs.add_product("Cloud Account", module="computestacks")["pid"])

    def _start_receiver_stage(self) -> None:
        """A new WHMCS database, the DB-backed sandbox on it, billing.php on it and the proxy in front."""
        from sandboxes.receiver import ReceiverServer
        from sandboxes.whmcs import WhmcsSandbox
        from sandboxes.whmcsdb import WhmcsDatabase

        self.db_name = f"fs_{uuid.uuid4().hex[:12]}"
        self.mariadb.create_database(self.db_name)
        self.db = WhmcsDatabase.mariadb(self.mariadb.socket, self.db_name)
        self.whmcs = WhmcsSandbox(db=self.db).start()
        self.whmcs.set_receiver_servers([SIGNING_SECRET])
        self.receiver = ReceiverServer(self.db, workers=4).start()
        self.proxy = SlowProxy(self.receiver.url).start()
        self._warm_up()

    def _warm_up(self) -> None:
        """One item for a client of no schedule, with a generous timeout: billing.php creates its refs table
        on first use (a DDL of ~0.2 s), which should not be the first schedule's timeout after a restart."""
        from decimal import Decimal

        from cswhmcs import factory
        from cswhmcs.adapters.receiver import ReceiverItem

        client = self.whmcs.add_client("Warm", "Up", "warm-up@example.org", currency_code="USD")
        settings = self.settings("unused", "unused", WHMCS_RECEIVER_URL=self.proxy.url)
        warm = factory.receiver_client(settings, timeout=10.0)
        assert warm is not None
        try:
            answers = warm.send([ReceiverItem(ref="0:2000-01:0", client_id=int(client["id"]),
                                              description="warm-up [ref 0:2000-01:0]", amount=Decimal("0.01"),
                                              currency="USD", quantity=Decimal(1), unit="quantity",
                                              invoice_action="nextcron", due_date=None)])
        finally:
            warm.close()
        if answers[0].status != "created":
            raise RuntimeError(f"the billing receiver's warm-up item was not created: {answers[0]}")

    def _stop_sandboxes(self) -> None:
        for cs, whmcs in self._clients:
            cs.close()
            whmcs.close()
        self._clients = []
        for receiver in self._receivers:
            receiver.close()
        self._receivers = []
        for part in (self.proxy, self.receiver, self.cs, self.whmcs):
            if part is not None:
                part.stop()
        self.proxy = self.receiver = None
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.mariadb is not None and self.db_name:
            try:
                self.mariadb.drop_database(self.db_name)
            except Exception:  # noqa: S110 - best effort: the server's directory goes away with it
                pass
            self.db_name = ""

    def clients(self, n: int) -> list[tuple[Any, Any]]:
        """``n`` pairs of upstream clients for the running sandboxes (building one costs tens of ms: its
        TLS context), reused by every schedule until the sandboxes restart."""
        settings = self.settings("unused", "unused")
        while len(self._clients) < n:
            self._clients.append((make_cs(settings), make_whmcs(settings)))
        return self._clients[:n]

    def receivers(self, n: int) -> list[Any]:
        """``n`` clients of the billing receiver, through the proxy (kept like ``clients``); [] without it."""
        if not self.has_receiver:
            return []
        settings = self.settings("unused", "unused", WHMCS_RECEIVER_URL=self.proxy.url)
        while len(self._receivers) < n:
            self._receivers.append(make_receiver(settings))
        return self._receivers[:n]

    def next_schedule(self) -> None:
        """Between schedules: fresh request logs; now and then fresh sandboxes altogether."""
        self._since_restart += 1
        if self._since_restart >= RESTART_EVERY:
            self._stop_sandboxes()
            self._start_sandboxes()
        self.cs.clear_faults()
        self.whmcs.clear_faults()
        if self.proxy is not None:
            self.proxy.clear_faults()
        self.cs.reset_requests()
        self.whmcs.reset_requests()

    @contextmanager
    def patched(self) -> Iterator[None]:
        """The route handlers use the running schedule's deps; order-credit leases use the moved clock;
        a concurrent delivery waits a little, not 8 s, for the other one."""
        import cswhmcs.adapters.dynamo as dynamo
        import cswhmcs.api as api
        import cswhmcs.credit as credit

        saved = (api.get_deps, dynamo.time, getattr(credit, "WAIT_FOR_OTHER_DELIVERY_S", None))

        def get_deps() -> Any:
            assert self.deps is not None, "no schedule is running"
            return self.deps

        api.get_deps = get_deps  # type: ignore[assignment]
        dynamo.time = self.wall.module  # type: ignore[assignment]
        if saved[2] is not None:
            credit.WAIT_FOR_OTHER_DELIVERY_S = 0.3  # type: ignore[attr-defined]
        try:
            yield
        finally:
            api.get_deps, dynamo.time = saved[0], saved[1]  # type: ignore[assignment]
            if saved[2] is not None:
                credit.WAIT_FOR_OTHER_DELIVERY_S = saved[2]  # type: ignore[attr-defined]

    def new_tables(self) -> tuple[str, str]:
        suffix = uuid.uuid4().hex[:10]
        names = (f"fs-accounts-{suffix}", f"fs-ledger-{suffix}")
        for var, name in zip(("ACCOUNTS_TABLE", "LEDGER_TABLE"), names, strict=True):
            self.ddb.create_table(**self.tabledefs[var].create_kwargs(name))
        return names

    def drop_tables(self, names: tuple[str, str]) -> None:
        for name in names:
            try:
                self.ddb.delete_table(TableName=name)
            except Exception:  # noqa: S110 - best effort: DynamoDB Local is in memory and goes away
                pass

    def settings(self, accounts: str, ledger: str, **extra: Any) -> Any:
        from cswhmcs.config import Settings

        return Settings.model_validate({
            "SIGNING_SECRET": SIGNING_SECRET, "AWS_ENDPOINT_URL_DYNAMODB": self.ddb_endpoint,
            "ACCOUNTS_TABLE": accounts, "LEDGER_TABLE": ledger, "REPLAY_TABLE": self.idempotency,
            "CS_API_URL": self.cs.url, "CS_API_KEY": self.cs.api_key, "CS_API_SECRET": self.cs.api_secret,
            "WHMCS_API_URL": self.whmcs.url, "WHMCS_API_IDENTIFIER": self.whmcs.identifier,
            "WHMCS_API_SECRET": self.whmcs.secret, "CS_TIMEOUT": TIMEOUT, "WHMCS_TIMEOUT": TIMEOUT,
            "CONNECT_TIMEOUT": TIMEOUT, **extra})

    def close(self) -> None:
        """Everything this world started (idempotent: atexit and the fixture may both call it)."""
        self._stop_sandboxes()
        self._stop_mariadb()
        try:
            self.ddb.delete_table(TableName=self.idempotency)
        except Exception:  # noqa: S110 - best effort
            pass
