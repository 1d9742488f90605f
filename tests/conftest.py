"""Shared fixtures: DynamoDB Local (once per run), fresh tables from template.yaml, the sandboxes,
and `live_stack`: everything wired behind a real `cswhmcs serve` on a free loopback port.

The seeded fault schedules (tests/faults/test_fault_schedules.py, tests/integration/test_billing_faults.py) run in
a worker process (``schedule_pool``) that starts with the session and works while the rest of the suite runs;
their tests, which only collect the outcomes, come last (``pytest_collection_modifyitems``). Run one after the
other in the suite's process they were about 4 of `make test`'s 11.7 minutes on a slow two-core machine. The
worker applies the schedules' World patches (tests/faults/world.py) for its life; a billing seed replayed with
``BILLING_FAULT_SEED`` runs in the suite's own process, without them."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "test-signing-secret-current"
OLD_SIGNING_SECRET = "test-signing-secret-previous"

# Never let a test reach real AWS.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")

# Session-wide secrets capture (issue 8 §4): every log line of the run is scanned for every secret the
# tests use, and the run fails naming where one appeared (fixture `secrets_registry`).
pytest_plugins = ["tests.security.capture"]


@pytest.fixture(scope="session")
def ddb_endpoint() -> Iterator[str]:
    from sandboxes.dynamodb_local import QUICK_JIT_FLAGS, DynamoDBLocal, DynamoDBLocalUnavailable

    try:
        db = DynamoDBLocal(jvm_flags=QUICK_JIT_FLAGS).start()
    except DynamoDBLocalUnavailable as exc:
        pytest.fail(f"{exc}")
    yield db.endpoint
    db.stop()


SCHEDULE_TESTS = ("test_fault_schedules.py::test_schedule[", "test_fault_schedules.py::test_the_schedules_use_every",
                  "test_billing_faults.py::test_fault_schedule[")


def _collects_schedules(item: pytest.Item) -> bool:
    return any(marker in item.nodeid for marker in SCHEDULE_TESTS)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The schedules' tests last, in their order (the check that every fault was used after the seeds)."""
    items[:] = [i for i in items if not _collects_schedules(i)] + [i for i in items if _collects_schedules(i)]


@pytest.fixture(scope="session")
def schedule_pool(request: pytest.FixtureRequest, ddb_endpoint: str) -> Iterator[Any]:
    """Worker processes (``FAULT_JOBS``, default 1: one beside the suite's own process on two cores; 2 starved
    the suite's timing-bound tests and made the whole run slower, 11:08 vs 9:34) that run
    every collected schedule seed from the moment the session asks: the fault schedules (tests/faults) and
    the billing fault schedules (tests/integration/test_billing_faults.py)."""
    from tests.faults.pool import SchedulePool

    pool = SchedulePool(ddb_endpoint, int(os.environ.get("FAULT_JOBS", "1")))
    seeds = {name: [item.callspec.params["seed"] for item in request.session.items
                    if getattr(item, "originalname", "") == name and hasattr(item, "callspec")]
             for name in ("test_schedule", "test_fault_schedule")}
    pool.submit(seeds["test_schedule"])
    pool.submit_billing(seeds["test_fault_schedule"])
    yield pool
    pool.close()


@pytest.fixture(scope="session", autouse=True)
def _schedules_start_with_the_session(request: pytest.FixtureRequest) -> None:
    if any(_collects_schedules(item) for item in request.session.items):
        request.getfixturevalue("schedule_pool")


@pytest.fixture
def feed_secrets_capture(request: pytest.FixtureRequest) -> Any:
    """Hands a worker's log output and secrets to the session's secrets capture (tests/security), when loaded."""
    try:
        registry = request.getfixturevalue("secrets_registry")
    except pytest.FixtureLookupError:
        registry = None

    from tests.faults.world import SIGNING_SECRET as SCHEDULE_SIGNING_SECRET

    def feed(data: dict[str, Any]) -> None:
        if registry is None:
            return
        registry.register(SCHEDULE_SIGNING_SECRET, "signing secret")
        for value in data.get("secrets", []):
            registry.register(value, "password or signature of a fault schedule")
        registry.capture(data.get("log", ""), "product log of a fault-schedule worker", where=request.node.nodeid)

    return feed


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[Any]:
    """One throwaway MariaDB for the whole run (sandboxes/mariadb.py; ~1 s): the billing receiver's and the
    DB-backed WHMCS sandbox's database engine. Each test takes a fresh database on it."""
    from sandboxes.mariadb import MariaDB, MariaDBUnavailable
    from sandboxes.mariadb import available as mariadb_available

    if not mariadb_available():
        pytest.skip("MariaDB is not installed (apt-get install mariadb-server php-mysql)")
    try:
        server = MariaDB().start()
    except MariaDBUnavailable as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def fresh_whmcs_db(mariadb_server: Any) -> Iterator[Any]:
    """An empty database of its own on the session MariaDB (sandboxes/whmcsdb.py WhmcsDatabase): ids start
    at 1 and nothing leaks between tests. Dropped afterwards."""
    from sandboxes.whmcsdb import WhmcsDatabase

    name = f"whmcs_{uuid.uuid4().hex[:12]}"
    mariadb_server.create_database(name)
    db = WhmcsDatabase.mariadb(mariadb_server.socket, name)
    yield db
    db.close()
    mariadb_server.drop_database(name)


@pytest.fixture(scope="session")
def template() -> Any:
    from cswhmcs.local.template import Template

    return Template(ROOT / "template.yaml")


@dataclass
class Tables:
    endpoint: str
    accounts: str
    ledger: str
    idempotency: str

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_DYNAMODB": self.endpoint, "ACCOUNTS_TABLE": self.accounts,
                "LEDGER_TABLE": self.ledger, "REPLAY_TABLE": self.idempotency}

    def settings(self, **overrides: Any) -> Any:
        from cswhmcs.config import Settings

        return Settings.model_validate({"SIGNING_SECRET": SIGNING_SECRET, **self.env(), **overrides})

    def resource(self) -> Any:
        import boto3

        return boto3.resource("dynamodb", endpoint_url=self.endpoint)

    def scan(self, which: str) -> list[dict[str, Any]]:
        return scan_pages(self.resource().Table(getattr(self, which)))


def scan_pages(table: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a boto3 ``Table``, following ``LastEvaluatedKey``; ``kwargs`` go to each ``scan``."""
    items: list[dict[str, Any]] = []
    while True:
        page = table.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.fixture
def tables(ddb_endpoint: str, template: Any) -> Tables:
    return make_tables(ddb_endpoint, template)


def make_tables(ddb_endpoint: str, template: Any) -> Tables:
    """Fresh tables from template.yaml's definitions, with names of their own, on ``ddb_endpoint``."""
    import boto3

    from cswhmcs.local.template import ensure_tables

    suffix = uuid.uuid4().hex[:8]
    t = Tables(ddb_endpoint, f"accounts-{suffix}", f"ledger-{suffix}", f"idem-{suffix}")
    client = boto3.client("dynamodb", endpoint_url=ddb_endpoint)
    ensure_tables(template, client, {"ACCOUNTS_TABLE": t.accounts, "LEDGER_TABLE": t.ledger,
                                     "REPLAY_TABLE": t.idempotency})
    return t


@pytest.fixture
def cs_sandbox() -> Iterator[Any]:
    from sandboxes.computestacks import ComputeStacksSandbox

    sb = ComputeStacksSandbox().start()
    yield sb
    sb.stop()


@pytest.fixture
def whmcs_sandbox() -> Iterator[Any]:
    from sandboxes.whmcs import WhmcsSandbox

    sb = WhmcsSandbox().start()
    yield sb
    sb.stop()


@dataclass
class LiveStack:
    server: Any
    tables: Tables
    cs: Any
    whmcs: Any
    signing_secret: str = SIGNING_SECRET
    log_lines: list[str] = field(default_factory=list)
    _last_ts: int = 0

    @property
    def api_host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def url(self) -> str:
        return f"http://{self.api_host}"

    def call(self, route: str, payload: Any, *, secret: str | None = None, sign: bool = True,
             raw: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30) -> Any:
        import httpx

        from cswhmcs.signing import sign_headers

        body = raw if raw is not None else json.dumps(payload).encode()
        h = {"Content-Type": "application/json"}
        if sign:
            # Each call gets its own timestamp (as a real client's retry seconds later would), so that
            # identical bodies sent within one second are not taken for a replay.
            import time

            self._last_ts = max(int(time.time()), self._last_ts + 1)
            h.update(sign_headers(secret or self.signing_secret, route, body, now=self._last_ts))
        h.update(headers or {})
        return httpx.post(self.url + route, content=body, headers=h, timeout=timeout)


def stack_env(tables: Tables, cs: Any, whmcs: Any, **extra: str) -> dict[str, str]:
    return {
        **tables.env(),
        "SIGNING_SECRET": f"{SIGNING_SECRET},{OLD_SIGNING_SECRET}",
        "CS_API_URL": cs.url, "CS_API_KEY": cs.api_key, "CS_API_SECRET": cs.api_secret,
        "WHMCS_API_URL": whmcs.url, "WHMCS_API_IDENTIFIER": whmcs.identifier, "WHMCS_API_SECRET": whmcs.secret,
        "CS_TIMEOUT": "2", "WHMCS_TIMEOUT": "2", "CONNECT_TIMEOUT": "1",
        **extra,
    }


@pytest.fixture
def live_stack(tables: Tables, cs_sandbox: Any, whmcs_sandbox: Any, template: Any,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    from cswhmcs.api import reset_deps
    from cswhmcs.local.server import LocalServer

    for k, v in stack_env(tables, cs_sandbox, whmcs_sandbox).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CONFIG_SECRET_ARN", raising=False)
    reset_deps()
    lines: list[str] = []
    server = LocalServer("127.0.0.1", 0, template, log=lines.append).start()
    stack = LiveStack(server=server, tables=tables, cs=cs_sandbox, whmcs=whmcs_sandbox, log_lines=lines)
    yield stack
    server.stop()
    reset_deps()
