"""Per-function benchmark (not a test): cold start, peak memory, upstream calls per action, handler overhead.

Everything runs against DynamoDB Local (tables created from template.yaml, as tests/conftest.py does) and
the sandboxes. The sandboxes (ComputeStacks with its rate limit lifted, WHMCS, and a minimal SQS endpoint
for the planner's SendMessageBatch) live in a child process of their own and are driven over a local RPC
connection, so the process being measured holds nothing but the function. Every measurement runs in a
fresh subprocess whose environment is a Lambda function's (template.yaml's Globals variables, the
function's own ones, fake AWS credentials; the secrets in the environment as `cswhmcs serve` and the
tests give them, no CONFIG_SECRET_ARN) and whose log lines go to /dev/null.

Figures (merged into bench/results.json, API.md section 5; medians over repeated runs):

* ``cold_start_ms`` / ``cold_start_ratio``: per function entry point of template.yaml, a fresh
  interpreter (cwd = the function's CodeUri as /var/task; PYTHONPATH = layers/shared as the layer gives,
  with ``-S`` and nothing but the layer's own distributions importable, see ``layer_site``) imports
  ``app`` (timed) and then INVOKES THE HANDLER for real with a signed event (an SQS batch, a
  Scheduler input for the billing functions) against DynamoDB Local and the sandboxes, followed by
  ``WARM_CALLS`` more invocations of the same kind. Cold start = import + (first invocation - median of
  the warm ones): everything the first call builds lazily (settings, boto3 resource, upstream clients,
  caches, connections) and nothing the upstreams take, since both invocations make the same requests.
  Bytecode caches are warm (compiled first), as in a deployed layer. Not included: the Secrets Manager
  read of the first call in AWS (one GetSecretValue and the import of Powertools Parameters). Reference:
  a fresh interpreter doing only ``import boto3; boto3.client("dynamodb")``. Worst function; ratio <= 1.3.
  The figure is wall-clock time; the same in the process's CPU time is printed beside it (and a warning
  when the load average exceeds the CPUs), because other work on a shared machine inflates the former.
* ``cold_start_floor_ratio`` (reported): the same clock on a child that only imports the design card's
  packages and builds one object of each (``boto3.resource("dynamodb").Table``, Powertools ``Logger()`` and
  ``Metrics()``, ``import pydantic``, ``httpx.Client()``), no code of ours, / the reference: the lowest
  ``cold_start_ratio`` these packages allow.
* ``rss_mb``: peak RSS (``VmHWM``) of a fresh subprocess after one invocation: every function with the event
  above, and the heaviest events of those whose work grows with the data: the Server Sync Tool's
  default page (2,000 users), a month-end plan of 2,000 accounts, a worker batch of 100 accounts
  (the SQS BatchSize) billed through the WHMCS API (2 runs each). Worst of all; <= 128 (MB).
* ``cs_calls_per_action`` / ``dynamodb_ops_per_action``: one warm invocation of each account action
  with a known mapping (create of an existing service, suspend, unsuspend, terminate, change password,
  change package, SSO, overview) through its real handler, loaded as `cswhmcs serve` loads it;
  ComputeStacks requests counted by the sandbox's request log, DynamoDB operations by a botocore
  ``before-call`` hook on the client of the resource the handlers use. Worst action; <= 1 and <= 2.
  Other routes (create of a new service, order paid, list, user groups, test connection) are printed
  for information, not counted in the figures.
* ``handler_overhead_ratio``: with ``--latency`` (default 50 ms, as the billing bench) on every sandbox
  answer, the warm time of an action through its handler (signed API Gateway event, the whole wrapper:
  signature, replay guard and mapping in DynamoDB Local, parsing, the log line) / the same ComputeStacks
  call made directly with the same client (the handler's ``Deps.cs``; checked to send the same request),
  interleaved, median of ``--overhead-runs`` each, for one action per distinct call (suspend's PATCH,
  change package, SSO's POST, overview's GET). Worst action; <= 1.3. ``handler_overhead_ms`` is the
  difference in milliseconds (reported); the DynamoDB Local share of it is printed beside.

    python -m bench functions [--quick] [--runs 5] [--overhead-runs 30] [--latency 0.05] [--no-write]
    python -m bench functions --cold-only [--runs 5]   # only the cold starts (their table and ratio), nothing written

``--quick`` (under a minute): 3 cold runs, 500 accounts/users and a worker batch of 25 for the heavy
events, 8 overhead runs of three actions; the figures are indicative.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers/shared"
SIGNING_SECRET = "bench-functions-signing-secret-7Rk2"
WEBHOOK_TOKEN = "bench-functions-webhook-token-3Qz8"  # noqa: S105 - the bench's own
TOKEN_ROUTES = {"/v1/hooks/cs-user"}
COLD_TARGET, RSS_TARGET_MB, CS_TARGET, DDB_TARGET, OVERHEAD_TARGET = 1.3, 128.0, 1.0, 2.0, 1.3
WARM_CALLS = 3  # invocations after the first in each cold-start process
CUT_OFF = datetime(2026, 10, 31, 23, tzinfo=UTC)
PRODUCTS = (("containerm", "0.02054795"), ("storage", "0.00068493"))
CLIENT_ID = 7
PASSWORD = "Xy7pQ2mN4kLm"


_STARTED = [time.perf_counter()]


def say(message: str) -> None:
    """Progress on stderr, with the seconds since the bench started."""
    print(f"[{time.perf_counter() - _STARTED[0]:5.1f} s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A measurement could not be taken honestly (a handler failed, a child crashed)."""


# ---------------------------------------------------------------------- the child that is measured

# Run as `python -c CHILD <spec.json> <handler|baseline> <out.json>` with cwd = the function's CodeUri.
# Nothing but `time` is imported before the clock starts; the spec is read after the import is timed.
CHILD = r'''
import time
_t0, _c0 = time.perf_counter(), time.process_time()
import sys
if sys.argv[2] == "baseline":
    import boto3
    boto3.client("dynamodb")
    _t1, _c1 = time.perf_counter(), time.process_time()
    handler = None
elif sys.argv[2] == "floor":  # the design card's packages, each imported and its one object built; no code of ours
    import boto3
    boto3.resource("dynamodb").Table("t")
    from aws_lambda_powertools import Logger, Metrics
    Logger()
    Metrics(namespace="ComputeStacksWHMCS")
    import httpx
    import pydantic
    httpx.Client()
    _t1, _c1 = time.perf_counter(), time.process_time()
    handler = None
else:
    import importlib
    _module, _attr = sys.argv[2].rsplit(".", 1)
    handler = getattr(importlib.import_module(_module), _attr)
    _t1, _c1 = time.perf_counter(), time.process_time()
import json
import resource
with open(sys.argv[1], encoding="utf-8") as fh:
    spec = json.load(fh)


class Context:
    def __init__(self, n):
        self.function_name = spec["function"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:" + spec["function"]
        self.memory_limit_in_mb = spec["memory"]
        self.aws_request_id = "bench-%d" % n
        self.log_group_name = "/aws/lambda/" + spec["function"]
        self.log_stream_name = "bench"
        self._end = time.monotonic() + spec["timeout"]

    def get_remaining_time_in_millis(self):
        return max(0, int((self._end - time.monotonic()) * 1000))


def peak_rss_kb():
    # VmHWM: the peak of this process's own memory. Not ru_maxrss, which Linux carries over exec from the
    # process that started this one (the bench's own, far larger), so every function measured the same.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for row in fh:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


calls, cpu, answers, rss_first = [], [], [], None
for n, event in enumerate(spec["events"]):
    ctx = Context(n)
    started, cpu_started = time.perf_counter(), time.process_time()
    answer = handler(event, ctx)
    calls.append((time.perf_counter() - started) * 1000)
    cpu.append((time.process_time() - cpu_started) * 1000)
    answers.append(answer)
    if rss_first is None:
        rss_first = peak_rss_kb()
out = {"import_ms": (_t1 - _t0) * 1000, "calls_ms": calls, "import_cpu_ms": (_c1 - _c0) * 1000, "calls_cpu_ms": cpu,
       "answers": answers,
       "rss_first_kb": rss_first or peak_rss_kb()}
with open(sys.argv[3], "w", encoding="utf-8") as fh:
    json.dump(out, fh, default=str)
'''


# ---------------------------------------------------------------------- sandboxes in their own process


class _FakeSqs:
    """Just enough SQS (AWS JSON 1.0 protocol) for the planner: SendMessage(Batch) accepted and kept."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                op = str(self.headers.get("X-Amz-Target", "")).rsplit(".", 1)[-1]
                status, answer = owner.answer(op, data)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-RequestId", uuid.uuid4().hex)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, op: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        def accepted(entry: dict[str, Any]) -> dict[str, Any]:
            body = str(entry.get("MessageBody", ""))
            with self._lock:
                self.bodies.append(body)
            return {"MessageId": uuid.uuid4().hex, "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest()}  # noqa: S324

        if op == "SendMessageBatch":
            return 200, {"Successful": [{"Id": e["Id"], **accepted(e)} for e in data.get("Entries", [])],
                         "Failed": []}
        if op == "SendMessage":
            return 200, accepted(data)
        return 400, {"__type": "com.amazonaws.sqs#InvalidAction", "message": f"{op} is not supported by the bench"}

    def start(self) -> _FakeSqs:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def take(self) -> list[str]:
        with self._lock:
            out, self.bodies = self.bodies, []
        return out


class _StackOps:
    """What the RPC clients may ask of the sandboxes (public methods only)."""

    def __init__(self, cs: Any, wh: Any, sqs: _FakeSqs) -> None:
        self.cs, self.wh, self.sqs = cs, wh, sqs
        self._sub = 50_000
        self._product: int | None = None
        self._orders = 0

    def latency(self, seconds: float) -> None:
        self.cs.latency = self.wh.latency = float(seconds)

    def reset(self) -> None:
        self.cs.reset_requests()
        self.wh.reset_requests()

    def cs_log(self) -> list[str]:
        return [f"{r['method']} {str(r['path']).split('?', 1)[0]}" for r in self.cs.requests]

    def wh_count(self) -> int:
        return len(self.wh.requests)

    def add_group(self, name: str) -> int:
        return int(self.cs.add_user_group(name)["id"])

    def linked_user(self, service_id: int, client_id: int, email: str) -> int:
        """A ComputeStacks user already linked to the service (external id and label), as after a create."""
        return int(self.cs.add_user(email, "Ann", "Lee", external_id=str(service_id),
                                    labels={"whmcs": {"service_id": service_id, "client_id": client_id}})["id"])

    def billing_accounts(self, prefix: str, n: int, start: str, end: str) -> list[tuple[int, int, str, str]]:
        """n users with a WHMCS client each and usage rows every 3 h in (start, end] for two products."""
        t_start, t_end = datetime.fromisoformat(start), datetime.fromisoformat(end)
        out = []
        for i in range(n):
            cur = ("USD", "EUR", "GBP")[i % 3]
            email = f"{prefix}{i}@bench.example.com"
            uid = int(self.cs.add_user(email, "Bench", f"{prefix}{i}", currency=cur)["id"])
            cid = int(self.wh.add_client("Bench", f"{prefix}{i}", f"c.{email}", currency_code=cur)["id"])
            for name, total in PRODUCTS:
                self._sub += 1
                t = t_start + timedelta(hours=3)
                while t <= t_end:
                    self.cs.add_usage(uid, product_name=name, subscription_product_id=self._sub, total=total,
                                      qty="1", period_start=t - timedelta(hours=3), period_end=t)
                    t += timedelta(hours=3)
            out.append((uid, cid, email, cur))
        return out

    def orders(self, n: int) -> list[dict[str, Any]]:
        """n paid first orders of a ComputeStacks product: the order-paid hook's bodies."""
        if self._product is None:
            self._product = int(self.wh.add_product("Cloud Account", module="computestacks")["id"])
        out = []
        for _ in range(n):
            self._orders += 1
            client = self.wh.add_client("Ann", "Lee", f"order{self._orders}@bench.example.com")
            service = self.wh.add_service(client["id"], self._product, username=f"o{self._orders}@bench.example.com")
            order_id, invoice_id = self.wh.add_order(client["id"], [service["id"]], amounts=["25.00"], status="Paid")
            out.append({"orderId": order_id, "invoiceId": invoice_id, "userId": client["id"],
                        "lines": [{"serviceid": service["id"], "apply_credit": True}]})
        return out

    def sqs_take(self) -> list[str]:
        return self.sqs.take()


def _serve_rpc(listener: Listener, ops: _StackOps) -> None:
    def serve(conn: Connection) -> None:
        with conn:
            while True:
                try:
                    op, args = conn.recv()
                except (EOFError, OSError):
                    return
                method = getattr(ops, op, None) if not str(op).startswith("_") else None
                try:
                    if method is None:
                        raise AttributeError(f"no sandbox operation {op!r}")
                    conn.send(("ok", method(*args)))
                except Exception as exc:  # answered to the caller, who raises it
                    conn.send(("err", f"{op}: {type(exc).__name__}: {exc}"))

    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _sandbox_process(conn: Any, authkey: bytes) -> None:
    sys.path[:0] = [str(ROOT), str(LAYER)]
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox

    cs = ComputeStacksSandbox(rate_limit=10**9).start()
    wh = WhmcsSandbox().start()
    sqs = _FakeSqs().start()
    listener = Listener(("127.0.0.1", 0), authkey=authkey)
    threading.Thread(target=_serve_rpc, args=(listener, _StackOps(cs, wh, sqs)), daemon=True).start()
    conn.send({"cs": [cs.url, cs.api_key, cs.api_secret], "wh": [wh.url, wh.identifier, wh.secret],
               "sqs": sqs.url, "rpc": list(listener.address)})
    try:
        conn.recv()  # "stop", or EOF when the parent is gone
    except EOFError:
        pass
    listener.close()
    for stop in (cs.stop, wh.stop, sqs.stop):
        stop()


class Rpc:
    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.conn = Client(address, authkey=authkey)

    def __call__(self, op: str, *args: Any) -> Any:
        self.conn.send((op, args))
        status, value = self.conn.recv()
        if status != "ok":
            raise BenchError(f"sandbox operation failed: {value}")
        return value

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------- requests (shared by every phase)


def client_details() -> dict[str, Any]:
    return {"client_id": CLIENT_ID, "userid": CLIENT_ID, "firstname": "Ann", "lastname": "Lee",
            "email": "ann.lee@example.org", "companyname": "Lee Hosting", "address1": "1 Main St",
            "city": "Portland", "fullstate": "Oregon", "postcode": "97201", "country": "US",
            "phonenumberformatted": "+1.5035550100", "currency": 1, "currency_code": "USD"}


def module_params(service_id: int, username: str, **over: Any) -> dict[str, Any]:
    """What the WHMCS module sends for a service (its $params less what never leaves WHMCS)."""
    return {"serviceid": service_id, "userid": CLIENT_ID, "pid": 3, "username": username, "domain": "",
            "configoption1": "", "configoption2": "on", "status": "Active", "serverhostname": "127.0.0.1",
            "clientsdetails": client_details(), **over}


@dataclass
class Payloads:
    """The body of each route for the linked service; new services and orders as they are needed."""

    service_id: int
    cs_user_id: int
    email: str
    group_id: int
    orders: Callable[[int], list[dict[str, Any]]]
    next_service: int = 700_000

    def new_service(self) -> int:
        self.next_service += 1
        return self.next_service

    def for_route(self, route: str, *, existing: bool = False) -> dict[str, Any]:
        sid, email = self.service_id, self.email
        if route == "/v1/accounts/create":
            if existing:
                return module_params(sid, email, password=PASSWORD)
            return module_params(self.new_service(), "", password=PASSWORD)
        if route in ("/v1/accounts/suspend", "/v1/accounts/unsuspend", "/v1/accounts/terminate",
                     "/v1/accounts/sso", "/v1/accounts/overview"):
            return module_params(sid, email)
        if route == "/v1/accounts/change-password":
            return module_params(sid, email, password=PASSWORD)
        if route == "/v1/accounts/change-package":
            return module_params(sid, email, configoption1=str(self.group_id))
        if route == "/v1/accounts/list":
            return {"page": 1, "page_size": 100}
        if route in ("/v1/user-groups", "/v1/connection/test"):
            return {}
        if route == "/v1/hooks/order-paid":
            return self.orders(1)[0]
        if route == "/v1/hooks/invoice-paid":
            return {"invoiceid": self.orders(1)[0]["invoiceId"]}
        if route == "/v1/hooks/cs-user":  # ComputeStacks' webhook_users body: only user.id is read
            return {"user": {"id": self.cs_user_id}}
        raise BenchError(f"bench_functions has no request for route {route}: add one to Payloads.for_route")


def api_event(route: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A signed API Gateway REST proxy event, as the PHP module's request becomes one (fresh nonce)."""
    from cswhmcs.local.server import build_event
    from cswhmcs.signing import sign_headers

    body = json.dumps({**payload, "csw_nonce": uuid.uuid4().hex}).encode()
    if route.path in TOKEN_ROUTES:  # ComputeStacks' webhook: the token in the URL, never signed
        headers = {"Host": "bench.execute-api.local", "Content-Type": "application/json; charset=UTF-8"}
        return build_event(route, "POST", route.path, f"token={WEBHOOK_TOKEN}", headers, body, "127.0.0.1",
                           stage="prod")
    headers = {"Host": "bench.execute-api.local", "Content-Type": "application/json", "User-Agent": "WHMCS",
               **sign_headers(SIGNING_SECRET, route.path, body)}
    return build_event(route, "POST", route.path, "", headers, body, "127.0.0.1", stage="prod")


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": f"bench-{i}", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now, "SenderId": "BENCH",
                       "ApproximateFirstReceiveTimestamp": now},
        "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:cswhmcs-work",
        "awsRegion": "us-east-1"} for i, body in enumerate(bodies)]}


def schedule_event(mode: str, at: datetime) -> dict[str, Any]:
    return {"mode": mode, "scheduled_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "execution_id": str(uuid.uuid4()),
            "timezone": "UTC"}


def answer_problem(function: str, answer: Any) -> str | None:
    """Why an invocation's answer is not a success, or None."""
    if not isinstance(answer, dict):
        return f"{function} answered {str(answer)[:200]}"
    if "statusCode" in answer:
        try:
            body = json.loads(answer.get("body") or "{}")
        except ValueError:
            body = {}
        if answer["statusCode"] != 200 or body.get("result") != "success":
            return f"{function} answered {answer['statusCode']}: {str(answer.get('body'))[:300]}"
        return None
    if answer.get("batchItemFailures"):
        return f"{function} failed {len(answer['batchItemFailures'])} records"
    if "run" in answer and (answer.get("skipped") or not answer.get("accounts")):
        return f"{function} planned nothing: {answer}"
    return None


# ---------------------------------------------------------------------- the stack


@dataclass
class Function:
    name: str  # logical id in template.yaml
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    env: dict[str, str]  # its own Environment.Variables with the bench's values
    route: Any = None  # ApiRoute for API functions


@dataclass
class Stack:
    endpoint: str
    large: int
    small: int
    rpc: Rpc | None = None
    info: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    payloads: Payloads | None = None
    site: Path = ROOT
    small_accounts: list[dict[str, Any]] = field(default_factory=list)
    _proc: Any = None
    _conn: Any = None
    _authkey: bytes = b""

    def start(self) -> Stack:
        import boto3

        from cswhmcs.local.template import Template, ensure_tables

        self._authkey = secrets.token_bytes(16)
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sandbox_process, args=(child, self._authkey), daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            raise BenchError("the sandboxes did not start within 60 s")
        self.info = self._conn.recv()
        self.rpc = Rpc(tuple(self.info["rpc"]), self._authkey)

        suffix = uuid.uuid4().hex[:8]
        self.tables = {"ACCOUNTS_TABLE": f"fn-acc-{suffix}", "LEDGER_TABLE": f"fn-led-{suffix}",
                       "REPLAY_TABLE": f"fn-idem-{suffix}", "LARGE_ACCOUNTS": f"fn-acc-large-{suffix}",
                       "LARGE_LEDGER": f"fn-led-large-{suffix}"}
        local: dict[str, Any] = {"endpoint_url": self.endpoint, "region_name": "us-east-1",
                                 "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        client = boto3.client("dynamodb", **local)
        template = Template(ROOT / "template.yaml")
        ensure_tables(template, client, {k: self.tables[k] for k in ("ACCOUNTS_TABLE", "LEDGER_TABLE",
                                                                     "REPLAY_TABLE")})
        ensure_tables(template, client, {"ACCOUNTS_TABLE": self.tables["LARGE_ACCOUNTS"],
                                         "LEDGER_TABLE": self.tables["LARGE_LEDGER"]})
        resource = boto3.resource("dynamodb", **local)

        rpc = self.rpc
        group = rpc("add_group", "pro")
        sid, email = 900_001, "ann.lee.cloud@example.org"
        uid = rpc("linked_user", sid, CLIENT_ID, email)
        self.payloads = Payloads(sid, uid, email, group, lambda n: rpc("orders", n))
        start, end = (CUT_OFF - timedelta(days=1)).isoformat(), CUT_OFF.isoformat()
        small = rpc("billing_accounts", "small", self.small, start, end)
        large = rpc("billing_accounts", "large", self.large, start, end)
        with resource.Table(self.tables["ACCOUNTS_TABLE"]).batch_writer() as batch:
            batch.put_item(Item={"service_id": sid, "cs_user_id": uid, "email": email, "client_id": CLIENT_ID,
                                 "currency": "USD"})
            for i, (u, c, e, cur) in enumerate(small):
                item = {"service_id": 910_000 + i, "cs_user_id": u, "email": e, "client_id": c, "currency": cur}
                batch.put_item(Item=item)
                self.small_accounts.append(item)
        with resource.Table(self.tables["LARGE_ACCOUNTS"]).batch_writer() as batch:
            for i, (u, c, e, cur) in enumerate(large):
                batch.put_item(Item={"service_id": 100_000 + i, "cs_user_id": u, "email": e, "client_id": c,
                                     "currency": cur})
        return self

    def stop(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
        if self._proc is not None:
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.terminate()

    def env(self, function: Function | None = None, *, large: bool = False) -> dict[str, str]:
        """A Lambda function's environment (template.yaml Globals + the function's own variables)."""
        cs_url, cs_key, cs_secret = self.info["cs"]
        wh_url, wh_id, wh_secret = self.info["wh"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC",
            "PYTHONPATH": str(LAYER), "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint, "AWS_ENDPOINT_URL_SQS": self.info["sqs"],
            # Globals.Function.Environment.Variables
            "POWERTOOLS_SERVICE_NAME": "cswhmcs", "POWERTOOLS_LOG_LEVEL": "INFO",
            "CS_API_URL": cs_url, "WHMCS_API_URL": wh_url, "WHMCS_RECEIVER_URL": "",
            "ACCOUNTS_TABLE": self.tables["LARGE_ACCOUNTS" if large else "ACCOUNTS_TABLE"],
            "LEDGER_TABLE": self.tables["LARGE_LEDGER" if large else "LEDGER_TABLE"],
            "REPLAY_TABLE": self.tables["REPLAY_TABLE"], "BILLING_START": "", "BILLING_DUE_DAY": "1",
            "BILLING_INVOICE_ACTION": "duedate",
            # Budgets lifted (a rate limit would only make the run wait; it changes neither memory nor init).
            "CS_RATE_LIMIT": "10000000", "BILLING_WHMCS_RATE": "10000",
            # The secret's keys, from the environment (no Secrets Manager here).
            "CS_API_KEY": cs_key, "CS_API_SECRET": cs_secret, "WHMCS_API_IDENTIFIER": wh_id,
            "WHMCS_API_SECRET": wh_secret, "SIGNING_SECRET": SIGNING_SECRET, "CS_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        }
        if function is not None:
            env.update(function.env)
        return env


def functions_of_template(stack: Stack) -> list[Function]:
    from cswhmcs.local.template import Template

    template = Template(ROOT / "template.yaml")
    routes = {r.function: r for r in template.api_routes()}
    glob = template.data.get("Globals", {}).get("Function", {})
    own_values = {"WORK_QUEUE_URL": f"{stack.info['sqs']}/000000000000/cswhmcs-work", "WORKER_MAX_CONCURRENCY": "8",
                  "BILLING_START": "", "BILLING_DUE_DAY": "1", "BILLING_INVOICE_ACTION": "duedate",
                  "CS_RATE_LIMIT": "10000000",
                  "OVERDUE_SUSPEND_DAYS": "0"}  # the template's default: no overdue suspension
    # Every Globals variable is set by Stack.env, but the secret's ARN: the secrets come from the environment.
    unset = set(template.global_env()) - set(stack.env()) - {"CONFIG_SECRET_ARN"}
    if unset:
        raise BenchError(f"bench_functions has no value for the Globals variables {sorted(unset)} (Stack.env)")
    out = []
    for name, res in template.resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties", {})
        variables = (props.get("Environment") or {}).get("Variables") or {}
        unknown = set(variables) - set(own_values)
        if unknown:
            raise BenchError(f"bench_functions has no value for {name}'s variables {sorted(unknown)}")
        out.append(Function(name=name, code_dir=ROOT / props["CodeUri"], handler=props["Handler"],
                            timeout=int(props.get("Timeout", glob.get("Timeout", 3))),
                            memory=int(props.get("MemorySize", glob.get("MemorySize", 128))),
                            env={k: own_values[k] for k in variables}, route=routes.get(name)))
    return out


# ---------------------------------------------------------------------- cold start and memory


@dataclass
class ChildResult:
    import_ms: float
    calls_ms: list[float]
    rss_kb: int
    import_cpu_ms: float = 0.0
    calls_cpu_ms: list[float] = field(default_factory=list)

    @staticmethod
    def _cold(import_ms: float, calls: list[float]) -> float:
        if len(calls) < 2:
            return import_ms
        return import_ms + max(0.0, calls[0] - statistics.median(calls[1:]))

    @property
    def cold_ms(self) -> float:
        """Import + what the first invocation took beyond a warm one (wall clock: the figure)."""
        return self._cold(self.import_ms, self.calls_ms)

    @property
    def cold_cpu_ms(self) -> float:
        """The same in CPU time of the process (all threads): what other work on a shared machine leaves alone."""
        return self._cold(self.import_cpu_ms, self.calls_cpu_ms)


def run_child(stack: Stack, function: Function | None, events: list[dict[str, Any]], *, large: bool = False,
              workdir: Path, reference: str = "baseline") -> ChildResult:
    """One measured process: ``function``'s entry point, or (None) the ``reference`` child (``baseline``: the
    issue's reference; ``floor``: the design card's packages alone)."""
    spec = workdir / f"spec-{uuid.uuid4().hex[:8]}.json"
    out = workdir / f"out-{uuid.uuid4().hex[:8]}.json"
    spec.write_text(json.dumps({"function": function.name if function else reference,
                                "memory": function.memory if function else 128,
                                "timeout": function.timeout if function else 3, "events": events}))
    cwd = function.code_dir if function else ROOT
    env = stack.env(function, large=large)
    env["PYTHONPATH"] = os.pathsep.join([str(LAYER), str(stack.site)])  # the layer's /opt/python, nothing else
    proc = subprocess.run([sys.executable, "-S", "-c", CHILD, str(spec), function.handler if function else reference,
                           str(out)], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=300, check=False)
    spec.unlink(missing_ok=True)
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"{function.name if function else 'baseline'} child failed "
                         f"(exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-1500:]}")
    data = json.loads(out.read_text())
    out.unlink()
    for answer in data["answers"]:
        problem = answer_problem(function.name if function else "baseline", answer)
        if problem:
            raise BenchError(problem)
    return ChildResult(float(data["import_ms"]), [float(x) for x in data["calls_ms"]], int(data["rss_first_kb"]),
                       float(data["import_cpu_ms"]), [float(x) for x in data["calls_cpu_ms"]])


class Events:
    """Per function, the events of one cold-start process: the first invocation and WARM_CALLS more of
    the same kind (new services, orders and accounts where a repeat would take a shorter path)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        assert stack.payloads is not None
        self.payloads = stack.payloads
        self._account = 0
        self._minute = 0

    def next_account(self) -> dict[str, Any]:
        accounts = self.stack.small_accounts
        if self._account >= len(accounts):
            raise BenchError("bench_functions ran out of billing accounts for the worker's cold starts")
        self._account += 1
        return accounts[self._account - 1]

    def collect_message(self) -> str:
        from cswhmcs.billing.messages import Account, RunContext, WorkMessage
        from cswhmcs.billing.usage import iso

        run = RunContext(run_id=f"collect#{iso(CUT_OFF)}", kind="collect", as_of=CUT_OFF)
        return WorkMessage(run, Account.from_mapping(self.next_account())).to_json()

    def one(self, function: Function) -> dict[str, Any]:
        if function.route is not None:
            return api_event(function.route, self.payloads.for_route(function.route.path))
        if "WORKER_MAX_CONCURRENCY" in function.env:
            return sqs_event([self.collect_message()])
        if "WORK_QUEUE_URL" in function.env:
            self._minute += 1  # a new run each time (the run id is the scheduled time)
            return schedule_event("collect", CUT_OFF - timedelta(days=2) + timedelta(minutes=self._minute))
        raise BenchError(f"bench_functions has no event for {function.name}")

    def for_process(self, function: Function, calls: int) -> list[dict[str, Any]]:
        return [self.one(function) for _ in range(calls)]


def layer_site(workdir: Path) -> Path:
    """A directory holding only what `sam build` puts in the layer besides cswhmcs: the distributions of
    layers/shared/requirements.txt and their dependencies (symlinked from this environment). The measured
    processes run with ``-S`` on layers/shared and it, so nothing the layer lacks can be imported (the dev
    tools of the venv would change what some packages import, e.g. httpx's command line with rich)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    lines = (LAYER / "requirements.txt").read_text(encoding="utf-8").splitlines()
    todo = [Requirement(line.split("#", 1)[0].strip()).name for line in lines if line.split("#", 1)[0].strip()]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = seen[key] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BenchError(f"{name} (needed by the layer) is not installed: run `make setup`") from None
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    site = workdir / "layer-site"
    site.mkdir(exist_ok=True)
    for dist in seen.values():
        for top in {str(f).split("/", 1)[0] for f in dist.files or [] if not str(f).startswith("..")}:
            link, target = site / top, Path(str(dist.locate_file(top)))
            if not link.exists() and target.exists():
                link.symlink_to(target)
    return site


def compile_bytecode() -> None:
    """Write the bytecode caches first, so that no measured process compiles: the deployed layer ships its
    bytecode too (layers/shared/Makefile writes it once, at build)."""
    import compileall

    compileall.compile_dir(str(LAYER / "cswhmcs"), quiet=1)
    compileall.compile_dir(str(ROOT / "functions"), quiet=1)


def measure_cold(stack: Stack, functions: list[Function], runs: int, workdir: Path
                 ) -> tuple[dict[str, list[ChildResult]], list[ChildResult], list[ChildResult]]:
    """Per function, the reference (``baseline``) and the floor of the design card's packages alone."""
    events = Events(stack)
    per_function: dict[str, list[ChildResult]] = {f.name: [] for f in functions}
    baseline: list[ChildResult] = []
    floor: list[ChildResult] = []
    for run in range(runs):  # interleaved: drift of the machine touches every function alike
        say(f"cold start run {run + 1}/{runs}")
        baseline.append(run_child(stack, None, [], workdir=workdir))
        floor.append(run_child(stack, None, [], workdir=workdir, reference="floor"))
        for f in functions:
            per_function[f.name].append(run_child(stack, f, events.for_process(f, 1 + WARM_CALLS), workdir=workdir))
        if stack.rpc is not None:
            stack.rpc("sqs_take")  # the planner's messages are not needed
    return per_function, baseline, floor


def measure_heavy(stack: Stack, functions: list[Function], runs: int, workdir: Path, *, batch_size: int = 100
                  ) -> dict[str, list[int]]:
    """Peak RSS of the invocations whose work grows with the data (see the module docstring)."""
    assert stack.rpc is not None
    out: dict[str, list[int]] = {}
    list_fn = next((f for f in functions if f.route is not None and f.route.path == "/v1/accounts/list"), None)
    worker = next((f for f in functions if "WORKER_MAX_CONCURRENCY" in f.env), None)
    planner = next((f for f in functions if "WORK_QUEUE_URL" in f.env and f is not worker), None)
    messages: list[str] = []
    for run in range(runs):
        say(f"heavy invocations run {run + 1}/{runs}")
        if list_fn is not None:  # the module's default page: up to 2,000 users in one answer
            r = run_child(stack, list_fn, [api_event(list_fn.route, {"page": 1})], workdir=workdir)
            out.setdefault(list_fn.name, []).append(r.rss_kb)
            say(f"  {list_fn.name}: {r.calls_ms[0]:.0f} ms, peak RSS {r.rss_kb / 1024:.1f} MB")
        if planner is not None:  # a month-end plan of every account of the large table
            stack.rpc("sqs_take")
            r = run_child(stack, planner, [schedule_event("bill", CUT_OFF + timedelta(minutes=run))], large=True,
                          workdir=workdir)
            out.setdefault(planner.name, []).append(r.rss_kb)
            say(f"  {planner.name}: {r.calls_ms[0]:.0f} ms, peak RSS {r.rss_kb / 1024:.1f} MB")
            taken = stack.rpc("sqs_take")
            if not messages:
                messages = taken
        if worker is not None and messages:  # one SQS batch (BatchSize 100) of accounts not billed yet
            batch, messages = messages[:batch_size], messages[batch_size:]
            r = run_child(stack, worker, [sqs_event(batch)], large=True, workdir=workdir)
            out.setdefault(worker.name, []).append(r.rss_kb)
            say(f"  {worker.name}: {r.calls_ms[0]:.0f} ms, peak RSS {r.rss_kb / 1024:.1f} MB")
    return out


# ---------------------------------------------------------------------- warm: counts and overhead

# (label, route, existing mapping?): the account actions counted in the figures.
COUNTED = (("create (existing)", "/v1/accounts/create", True), ("suspend", "/v1/accounts/suspend", True),
           ("unsuspend", "/v1/accounts/unsuspend", True), ("terminate", "/v1/accounts/terminate", True),
           ("change-password", "/v1/accounts/change-password", True),
           ("change-package", "/v1/accounts/change-package", True), ("sso", "/v1/accounts/sso", True),
           ("overview", "/v1/accounts/overview", True))
INFO_ONLY = (("create (new service)", "/v1/accounts/create", False), ("order-paid", "/v1/hooks/order-paid", False),
             ("list (page of 100)", "/v1/accounts/list", False), ("user-groups", "/v1/user-groups", False),
             ("test-connection", "/v1/connection/test", False))
# One action per distinct ComputeStacks call: unsuspend, terminate and change-password make suspend's PATCH (the
# counts table shows it); the worst of more copies of one path would only pick the noisiest sample.
OVERHEAD = ("suspend", "change-package", "sso", "overview")
OVERHEAD_QUICK = ("suspend", "sso", "overview")


def _warm_child(spec_path: str, out_path: str) -> int:
    """The warm phase, in its own process with a function's environment (`python -m bench.bench_functions
    _warm SPEC OUT`): every route's handler loaded as `cswhmcs serve` loads it."""
    spec = json.loads(Path(spec_path).read_text())
    rpc = Rpc(tuple(spec["rpc"]), bytes.fromhex(spec["authkey"]))
    from cswhmcs.adapters.computestacks import UserSelector
    from cswhmcs.api import get_deps
    from cswhmcs.local.server import LambdaContext
    from cswhmcs.local.template import Template

    routes = {r.path: r for r in Template(ROOT / "template.yaml").api_routes()}
    handlers = {path: r.load_handler() for path, r in routes.items()}
    payloads = Payloads(spec["service_id"], spec["cs_user_id"], spec["email"], spec["group_id"],
                        lambda n: rpc("orders", n), next_service=spec["next_service"])

    def prepare(route: str, existing: bool) -> tuple[Callable[..., Any], dict[str, Any], LambdaContext]:
        r = routes[route]
        return (handlers[route], api_event(r, payloads.for_route(route, existing=existing)),
                LambdaContext(r.function, stream="bench"))

    def invoke(route: str, existing: bool) -> dict[str, Any]:
        handler, event, ctx = prepare(route, existing)
        answer: dict[str, Any] = handler(event, ctx)
        problem = answer_problem(route, answer)
        if problem:
            raise BenchError(problem)
        return answer

    rpc("latency", 0)
    for _label, route, existing in COUNTED + INFO_ONLY:  # the first call of each: settings, clients, caches
        invoke(route, existing)
    deps = get_deps()
    ddb_ops: list[str] = []
    ddb_ms: list[float] = []
    call_started: list[float] = []

    def before_call(model: Any, **_: Any) -> None:
        ddb_ops.append(model.name)
        call_started.append(time.perf_counter())

    def after_call(**_: Any) -> None:
        if call_started:
            ddb_ms.append((time.perf_counter() - call_started.pop()) * 1000)

    deps.ddb.meta.client.meta.events.register("before-call.dynamodb", before_call)
    deps.ddb.meta.client.meta.events.register("after-call.dynamodb", after_call)
    counts = []
    for label, route, existing in COUNTED + INFO_ONLY:
        invoke(route, existing)
        rpc("reset")
        ddb_ops.clear()
        invoke(route, existing)
        counts.append({"action": label, "route": route, "counted": (label, route, existing) in COUNTED,
                       "cs": rpc("cs_log"), "ddb": list(ddb_ops), "whmcs": rpc("wh_count")})

    cs = deps.cs  # the very client the handlers use (Deps keeps it per thread; this is the same thread)
    sel = UserSelector.by_id(spec["cs_user_id"])
    direct: dict[str, Callable[[], Any]] = {
        "suspend": lambda: cs.update_user(sel, {"active": False}),
        "unsuspend": lambda: cs.update_user(sel, {"active": True}),
        "change-password": lambda: cs.update_user(sel, {"password": PASSWORD, "password_confirmation": PASSWORD}),
        "change-package": lambda: cs.update_user(sel, {"user_group_id": spec["group_id"]}),
        "sso": lambda: cs.create_sso_token(sel),
        "overview": lambda: cs.get_user(sel, include_balance=True),
    }
    by_label = {label: route for label, route, _ in COUNTED}
    overhead = []
    for label in spec["overhead_actions"]:
        route = by_label[label]
        rpc("reset")
        direct[label]()
        direct_requests = rpc("cs_log")
        handler_requests = next(c["cs"] for c in counts if c["action"] == label)
        rpc("latency", spec["latency"])
        handler_ms: list[float] = []
        direct_ms: list[float] = []
        storage_ms: list[float] = []

        def timed_handler(record: list[float], route: str = route, storage_ms: list[float] = storage_ms) -> None:
            handler, event, ctx = prepare(route, True)
            ddb_ms.clear()
            started = time.perf_counter()
            answer = handler(event, ctx)
            record.append((time.perf_counter() - started) * 1000)
            storage_ms.append(sum(ddb_ms))
            if answer_problem(route, answer):
                raise BenchError(str(answer_problem(route, answer)))

        def timed_direct(record: list[float], label: str = label) -> None:
            started = time.perf_counter()
            direct[label]()
            record.append((time.perf_counter() - started) * 1000)

        for _ in range(2):
            timed_handler([])
            timed_direct([])
        for i in range(int(spec["runs"])):
            if i % 2 == 0:
                timed_handler(handler_ms)
                timed_direct(direct_ms)
            else:
                timed_direct(direct_ms)
                timed_handler(handler_ms)
        rpc("latency", 0)
        overhead.append({"action": label, "handler_ms": statistics.median(handler_ms),
                         "direct_ms": statistics.median(direct_ms), "storage_ms": statistics.median(storage_ms),
                         "same_requests": direct_requests == handler_requests,
                         "direct_requests": direct_requests})
    Path(out_path).write_text(json.dumps({"counts": counts, "overhead": overhead}))
    rpc.close()
    return 0


def measure_warm(stack: Stack, functions: list[Function], *, runs: int, latency: float, actions: tuple[str, ...],
                 workdir: Path) -> dict[str, Any]:
    assert stack.payloads is not None
    p = stack.payloads
    spec = workdir / "warm-spec.json"
    out = workdir / "warm-out.json"
    spec.write_text(json.dumps({"rpc": stack.info["rpc"], "authkey": stack._authkey.hex(), "service_id": p.service_id,
                                "cs_user_id": p.cs_user_id, "email": p.email, "group_id": p.group_id,
                                "next_service": p.next_service + 10_000, "runs": runs,
                                "latency": latency, "overhead_actions": list(actions)}))
    env = stack.env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(LAYER)])
    proc = subprocess.run([sys.executable, "-m", "bench.bench_functions", "_warm", str(spec), str(out)], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600, check=False)
    spec.unlink(missing_ok=True)
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"the warm phase failed (exit {proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


# ---------------------------------------------------------------------- figures and tables


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def build_figures(cold: dict[str, list[ChildResult]], baseline: list[ChildResult], heavy: dict[str, list[int]],
                  warm: dict[str, Any], api_functions: set[str], *, floor: list[ChildResult] | None = None
                  ) -> tuple[list[dict[str, Any]], list[str]]:
    from bench.results import figure

    notes: list[str] = []
    base_ms = statistics.median(r.import_ms for r in baseline)
    floor_ratio = statistics.median(r.import_ms for r in floor) / base_ms if floor else None
    if floor_ratio is not None:
        notes.append(f"cold start floor: the design card's packages alone (boto3 resource, Powertools Logger and "
                     f"Metrics, pydantic, httpx.Client; no code of ours) x{floor_ratio:.2f} the reference")
    cold_ms = {name: statistics.median(r.cold_ms for r in rs) for name, rs in cold.items()}
    worst_fn, worst_ms = max(cold_ms.items(), key=lambda kv: kv[1])
    ratio = worst_ms / base_ms
    notes.append(f"cold start: worst {worst_fn} {worst_ms:.0f} ms vs boto3 baseline {base_ms:.0f} ms")
    api = {name: ms for name, ms in cold_ms.items() if name in api_functions}
    if api:
        api_fn, api_ms = max(api.items(), key=lambda kv: kv[1])
        notes.append(f"cold start of the API functions: worst {api_fn} {api_ms:.0f} ms (x{api_ms / base_ms:.2f})")
    base_cpu = statistics.median(r.import_cpu_ms for r in baseline)
    cpu_fn, cpu_ms = max(((name, statistics.median(r.cold_cpu_ms for r in rs)) for name, rs in cold.items()),
                         key=lambda kv: kv[1])
    notes.append(f"cold start in CPU time (unaffected by other work on the machine): worst {cpu_fn} {cpu_ms:.0f} ms "
                 f"vs baseline {base_cpu:.0f} ms (x{cpu_ms / base_cpu:.2f})")

    rss = {name: statistics.median(r.rss_kb for r in rs) / 1024 for name, rs in cold.items()}
    for name, values in heavy.items():
        rss[name + " (heavy)"] = statistics.median(values) / 1024
    worst_rss_fn, worst_rss = max(rss.items(), key=lambda kv: kv[1])
    notes.append(f"peak RSS: {worst_rss_fn} {worst_rss:.1f} MB")

    counted = [c for c in warm["counts"] if c["counted"]]
    worst_cs = max(counted, key=lambda c: len(c["cs"]))
    worst_ddb = max(counted, key=lambda c: len(c["ddb"]))
    notes.append(f"upstream calls: worst ComputeStacks {worst_cs['action']} ({len(worst_cs['cs'])}), "
                 f"worst DynamoDB {worst_ddb['action']} ({len(worst_ddb['ddb'])}: {', '.join(worst_ddb['ddb'])})")

    worst_oh = max(warm["overhead"], key=lambda o: o["handler_ms"] / o["direct_ms"])
    oh_ratio = worst_oh["handler_ms"] / worst_oh["direct_ms"]
    notes.append(f"handler overhead: worst {worst_oh['action']} {worst_oh['handler_ms']:.1f} ms through the handler "
                 f"vs {worst_oh['direct_ms']:.1f} ms direct")
    figures = [
        figure("cold_start_ms", round(worst_ms, 1), "ms", reference=round(base_ms, 1),
               target=f"<= {COLD_TARGET} x reference", passed=ratio <= COLD_TARGET),
        figure("cold_start_ratio", round(ratio, 3), "x", reference=COLD_TARGET, target=f"<= {COLD_TARGET}",
               passed=ratio <= COLD_TARGET),
        *([figure("cold_start_floor_ratio", round(floor_ratio, 3), "x", reference=COLD_TARGET, target="reported",
                  passed=True)] if floor_ratio is not None else []),
        figure("rss_mb", round(worst_rss, 1), "MB", reference=RSS_TARGET_MB, target=f"<= {RSS_TARGET_MB:.0f}",
               passed=worst_rss <= RSS_TARGET_MB),
        figure("cs_calls_per_action", float(len(worst_cs["cs"])), "requests/action", reference=CS_TARGET,
               target=f"<= {CS_TARGET:.0f}", passed=len(worst_cs["cs"]) <= CS_TARGET),
        figure("dynamodb_ops_per_action", float(len(worst_ddb["ddb"])), "operations/action", reference=DDB_TARGET,
               target=f"<= {DDB_TARGET:.0f}", passed=len(worst_ddb["ddb"]) <= DDB_TARGET),
        figure("handler_overhead_ratio", round(oh_ratio, 3), "x", reference=OVERHEAD_TARGET,
               target=f"<= {OVERHEAD_TARGET}", passed=oh_ratio <= OVERHEAD_TARGET),
        figure("handler_overhead_ms", round(worst_oh["handler_ms"] - worst_oh["direct_ms"], 2), "ms",
               reference=round(worst_oh["direct_ms"], 2), target="reported", passed=True),
    ]
    return figures, notes


def cold_table(cold: dict[str, list[ChildResult]], baseline: list[ChildResult], heavy: dict[str, list[int]],
               floor: list[ChildResult] | None = None) -> str:
    med = statistics.median
    rows: list[list[Any]] = []
    for label, refs in (("boto3 baseline", baseline), ("floor: the design card's packages", floor or [])):
        if refs:
            ms = f"{med(r.import_ms for r in refs):.0f}"
            rows.append([label, ms, "", ms, f"{med(r.import_cpu_ms for r in refs):.0f}",
                         f"{med(r.rss_kb for r in refs) / 1024:.1f}", ""])
    for name, rs in sorted(cold.items(), key=lambda kv: -med(r.cold_ms for r in kv[1])):
        rows.append([name, f"{med(r.import_ms for r in rs):.0f}", f"{med(r.cold_ms - r.import_ms for r in rs):.0f}",
                     f"{med(r.cold_ms for r in rs):.0f}", f"{med(r.cold_cpu_ms for r in rs):.0f}",
                     f"{med(r.rss_kb for r in rs) / 1024:.1f}",
                     f"{med(heavy[name]) / 1024:.1f}" if name in heavy else ""])
    return "\n".join(["Cold start per function (median; ms) and peak RSS (MB):\n",
                      _table(["function", "import", "first-call init", "cold start", "cold start, CPU time",
                              "RSS, one call", "RSS, heavy call"], rows)])


def detail_tables(cold: dict[str, list[ChildResult]], baseline: list[ChildResult], heavy: dict[str, list[int]],
                  warm: dict[str, Any], *, floor: list[ChildResult] | None = None) -> str:
    parts = [cold_table(cold, baseline, heavy, floor)]
    rows = [[c["action"], len(c["cs"]), "; ".join(c["cs"]), len(c["ddb"]), ", ".join(c["ddb"]), c["whmcs"],
             "yes" if c["counted"] else "info"] for c in warm["counts"]]
    parts += ["\nUpstream calls of one warm invocation per action:\n",
              _table(["action", "ComputeStacks", "requests", "DynamoDB", "operations", "WHMCS", "in figure"], rows)]
    rows = [[o["action"], f"{o['handler_ms']:.1f}", f"{o['storage_ms']:.1f}", f"{o['direct_ms']:.1f}",
             f"{o['handler_ms'] / o['direct_ms']:.3f}",
             "yes" if o["same_requests"] else f"NO ({'; '.join(o['direct_requests'])})"] for o in warm["overhead"]]
    parts += ["\nWarm time through the handler vs the same ComputeStacks call made directly (median ms):\n",
              _table(["action", "handler", "of which DynamoDB Local", "direct", "ratio", "same requests"], rows)]
    return "\n".join(parts)


def _print_cold_only(cold: dict[str, list[ChildResult]], baseline: list[ChildResult], floor: list[ChildResult]
                     ) -> int:
    base_ms = statistics.median(r.import_ms for r in baseline)
    base_cpu = statistics.median(r.import_cpu_ms for r in baseline)
    print(f"\nCold starts only ({len(cold)} functions of template.yaml, {len(baseline)} runs each):\n")
    print(cold_table(cold, baseline, {}, floor))
    worst_fn, worst_ms = max(((n, statistics.median(r.cold_ms for r in rs)) for n, rs in cold.items()),
                             key=lambda kv: kv[1])
    cpu_fn, cpu_ms = max(((n, statistics.median(r.cold_cpu_ms for r in rs)) for n, rs in cold.items()),
                         key=lambda kv: kv[1])
    ratio = worst_ms / base_ms
    print(f"\ncold_start_ratio {ratio:.3f} (worst {worst_fn} {worst_ms:.0f} ms vs boto3 baseline {base_ms:.0f} ms; "
          f"target <= {COLD_TARGET}); in CPU time: worst {cpu_fn} x{cpu_ms / base_cpu:.2f}; the floor of the design "
          f"card's packages alone: x{statistics.median(r.import_ms for r in floor) / base_ms:.2f}")
    return 0 if ratio <= COLD_TARGET else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench functions", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute); indicative figures")
    ap.add_argument("--runs", type=int, help="cold-start processes per function (default 5; --quick 3)")
    ap.add_argument("--overhead-runs", type=int, help="timed invocations per action and path (default 30; --quick 8)")
    ap.add_argument("--latency", type=float, default=0.05, help="sandbox latency for the overhead ratio (s)")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/results.json")
    ap.add_argument("--cold-only", action="store_true",
                    help="only the cold starts: their table and ratio, no other figure, nothing written")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    overhead_runs = args.overhead_runs or (8 if args.quick else 30)
    large = 500 if args.quick else 2000
    heavy_runs = 1 if args.quick else 2
    for p in (str(ROOT), str(LAYER)):
        if p not in sys.path:
            sys.path.insert(0, p)

    from bench.results import markdown, merge
    from sandboxes.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable

    started = _STARTED[0] = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    compile_bytecode()
    try:
        with DynamoDBLocal() as db, tempfile.TemporaryDirectory(prefix="bench-fn-") as tmp:
            workdir = Path(tmp)
            stack = Stack(db.endpoint, large=large, small=runs * (1 + WARM_CALLS) + 2)
            try:
                say(f"sandboxes, tables and {large} billing accounts")
                stack.start()
                functions = functions_of_template(stack)
                stack.site = layer_site(workdir)
                cold, baseline, floor = measure_cold(stack, functions, runs, workdir)
                if args.cold_only:
                    return _print_cold_only(cold, baseline, floor)
                heavy = measure_heavy(stack, functions, heavy_runs, workdir, batch_size=25 if args.quick else 100)
                say(f"warm invocations ({overhead_runs} timed per action and path)")
                warm = measure_warm(stack, functions, runs=overhead_runs, latency=args.latency,
                                    actions=OVERHEAD_QUICK if args.quick else OVERHEAD, workdir=workdir)
            finally:
                stack.stop()
    except (BenchError, DynamoDBLocalUnavailable) as exc:
        print(f"bench functions: no figures written: {exc}", file=sys.stderr)
        return 2
    figures, notes = build_figures(cold, baseline, heavy, warm, {f.name for f in functions if f.route is not None},
                                   floor=floor)
    load, cpus = max(load_at_start, os.getloadavg()[0]), os.cpu_count() or 1
    if load > cpus:
        notes.append(f"WARNING: load average {load:.1f} on {cpus} CPUs during the run: other work inflated the "
                     "wall-clock timings (see the CPU-time cold start)")
    wall = time.perf_counter() - started

    print(f"\nPer-function figures ({len(cold)} functions of template.yaml, {runs} cold runs each, "
          f"{overhead_runs} timed runs per action at {args.latency * 1000:.0f} ms sandbox latency"
          f"{', quick' if args.quick else ''}):\n")
    print(detail_tables(cold, baseline, heavy, warm, floor=floor))
    print()
    print(markdown(figures))
    print()
    for note in notes:
        print(f"- {note}")
    if not args.no_write:
        merge(figures)
        print("\n(figures merged into bench/results.json)")
    print(f"\nwall time {wall:.0f} s")
    return 0 if all(f["pass"] for f in figures) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_warm":
        sys.exit(_warm_child(sys.argv[2], sys.argv[3]))
    sys.exit(main())
