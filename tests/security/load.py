"""A bounded loopback load run against a real `cswhmcs serve` process (issue 8 §4), shared by the test
(tests/security/test_load.py) and `make bench` (bench/bench_api.py).

Three processes besides DynamoDB Local: the sandboxes (ComputeStacks with its rate limit lifted, WHMCS) in a
child process, `cswhmcs serve` as a subprocess on a free port, and the caller's, which runs the client: N
keep-alive connections, each in its own thread, sending signed requests (a fresh `csw_nonce` in every body,
as the PHP module does) round-robin over the read and write routes of linked accounts. A warm-up comes first;
then the RSS of the serve process (/proc/<pid>/status VmRSS) is read, the measured requests run, and the RSS
is read again.
"""

from __future__ import annotations

import http.client
import itertools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "load-signing-secret-8XzQ2w"  # noqa: S105 - a local test value
ACCOUNT_BASE = 5000


def _sandboxes(conn: Any, accounts: int) -> None:
    """The child process: both sandboxes, N ComputeStacks users; answers with where they are, then waits."""
    sys.path[:0] = [str(ROOT), str(ROOT / "layers/shared")]
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox

    cs = ComputeStacksSandbox(rate_limit=10**9).start()
    wh = WhmcsSandbox().start()
    cs.add_user_group("pro")
    users = [(ACCOUNT_BASE + i, int(cs.add_user(f"load{i}@example.org", "Load", f"User{i}",
                                                external_id=str(ACCOUNT_BASE + i))["id"]), f"load{i}@example.org")
             for i in range(accounts)]
    conn.send({"cs": [cs.url, cs.api_key, cs.api_secret], "whmcs": [wh.url, wh.identifier, wh.secret],
               "users": users, "requests": 0})
    conn.recv()  # "stop"
    conn.send({"cs_requests": len(cs.requests)})
    cs.stop()
    wh.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    warmup: int
    wall_s: float
    errors: int
    error_samples: list[str]
    latencies_ms: list[float] = field(repr=False)
    by_route: dict[str, int]
    rss_after_warmup_kib: int
    rss_end_kib: int

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    @property
    def median_ms(self) -> float:
        return percentile(self.latencies_ms, 0.5)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    @property
    def p99_over_median(self) -> float:
        return self.p99_ms / self.median_ms if self.median_ms else 0.0

    @property
    def rss_growth(self) -> float:
        """Growth of the serve process's RSS from after the warm-up to the end, as a fraction."""
        return (self.rss_end_kib - self.rss_after_warmup_kib) / self.rss_after_warmup_kib

    def summary(self) -> str:
        return (f"{self.requests} requests (+{self.warmup} warm-up) at concurrency {self.concurrency} in "
                f"{self.wall_s:.1f} s: {self.rps:.0f} req/s, median {self.median_ms:.1f} ms, p99 {self.p99_ms:.1f} ms "
                f"(x{self.p99_over_median:.2f}), {self.errors} errors, RSS {self.rss_after_warmup_kib} -> "
                f"{self.rss_end_kib} KiB ({self.rss_growth * 100:+.1f} %)")


class LoadStack:
    """DynamoDB tables, the sandboxes (child process) with N linked accounts, and `cswhmcs serve`."""

    def __init__(self, ddb_endpoint: str, *, accounts: int = 40) -> None:
        self.ddb_endpoint = ddb_endpoint
        self.accounts = accounts
        self.users: list[tuple[int, int, str]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._child: Any = None
        self._conn: Any = None
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.port = 0
        self.cs_requests = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60.0) -> LoadStack:
        import boto3

        sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "layers/shared")) if p not in sys.path]
        from cswhmcs.local.template import Template, ensure_tables
        from sandboxes.dynamodb_local import free_port

        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._child = ctx.Process(target=_sandboxes, args=(child_conn, self.accounts), daemon=True)
        self._child.start()
        if not self._conn.poll(timeout):
            raise RuntimeError("the sandboxes did not start")
        info = self._conn.recv()
        self.users = [tuple(u) for u in info["users"]]

        suffix = uuid.uuid4().hex[:8]
        names = {"ACCOUNTS_TABLE": f"load-acc-{suffix}", "LEDGER_TABLE": f"load-led-{suffix}",
                 "REPLAY_TABLE": f"load-idem-{suffix}"}
        local: dict[str, Any] = {"endpoint_url": self.ddb_endpoint, "region_name": "us-east-1",
                                 "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        ensure_tables(Template(ROOT / "template.yaml"), boto3.client("dynamodb", **local), names)
        table = boto3.resource("dynamodb", **local).Table(names["ACCOUNTS_TABLE"])
        with table.batch_writer() as batch:
            for service_id, cs_user_id, email in self.users:
                batch.put_item(Item={"service_id": service_id, "cs_user_id": cs_user_id, "email": email,
                                     "client_id": 7, "currency": "USD"})

        cs_url, cs_key, cs_secret = info["cs"]
        wh_url, wh_id, wh_secret = info["whmcs"]
        env = {**os.environ, **names, "AWS_ENDPOINT_URL_DYNAMODB": self.ddb_endpoint,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "SIGNING_SECRET": SIGNING_SECRET, "CS_API_URL": cs_url, "CS_API_KEY": cs_key,
               "CS_API_SECRET": cs_secret, "WHMCS_API_URL": wh_url, "WHMCS_API_IDENTIFIER": wh_id,
               "WHMCS_API_SECRET": wh_secret, "CS_TIMEOUT": "5", "WHMCS_TIMEOUT": "5", "CONNECT_TIMEOUT": "2",
               "CS_RATE_LIMIT": "10000000", "PYTHONUNBUFFERED": "1", "POWERTOOLS_METRICS_DISABLED": "1",
               "POWERTOOLS_TRACE_DISABLED": "1"}
        env.pop("CONFIG_SECRET_ARN", None)
        env.pop("AWS_PROFILE", None)
        self.port = free_port()
        cli = Path(sys.executable).parent / "cswhmcs"
        self.proc = subprocess.Popen([str(cli), "serve", "--port", str(self.port)], cwd=ROOT, env=env,
                                     stdout=self._out, stderr=self._err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cswhmcs serve exited: {self.output()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("cswhmcs serve did not start")

    def output(self) -> str:
        """Everything the serve process wrote (stdout: its JSON logs; stderr: one line per request)."""
        parts = []
        for f in (self._out, self._err):
            f.seek(0)
            parts.append(f.read().decode("utf-8", "replace"))
        return "\n".join(parts)

    def stop(self) -> str:
        """Stop everything; returns the serve process's output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._child is not None:
            try:
                self._conn.send("stop")
                if self._conn.poll(10):
                    self.cs_requests = int(self._conn.recv()["cs_requests"])
            except (OSError, EOFError):
                pass
            self._child.join(10)
            if self._child.is_alive():
                self._child.terminate()
        out = self.output()
        self._out.close()
        self._err.close()
        return out

    def __enter__(self) -> LoadStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the run
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """The mix: per linked account overview, sso, suspend, unsuspend; and the account-wide reads."""
        mix: list[tuple[str, dict[str, Any]]] = []
        for service_id, _, email in self.users:
            base = {"serviceid": service_id, "userid": 7, "username": email}
            mix += [("/v1/accounts/overview", base), ("/v1/accounts/sso", base),
                    ("/v1/accounts/suspend", base), ("/v1/accounts/unsuspend", base)]
        mix += [("/v1/user-groups", {}), ("/v1/accounts/list", {}), ("/v1/accounts/list", {"page": 1,
                                                                                           "page_size": 100})]
        return mix

    def run(self, total: int = 5000, *, concurrency: int = 32, warmup: int = 500,
            on_answer: Callable[[str, dict[str, Any]], None] | None = None) -> LoadResult:
        from cswhmcs.signing import sign_headers

        assert self.proc is not None
        mix = self.requests()
        connections = [http.client.HTTPConnection("127.0.0.1", self.port, timeout=30) for _ in range(concurrency)]
        lock = threading.Lock()
        errors: list[str] = []
        latencies: list[float] = []
        by_route: dict[str, int] = {}
        order = itertools.count()

        def one(conn: http.client.HTTPConnection, route: str, payload: dict[str, Any], measured: bool) -> None:
            raw = json.dumps({**payload, "csw_nonce": uuid.uuid4().hex}).encode()
            headers = {"Content-Type": "application/json", **sign_headers(SIGNING_SECRET, route, raw)}
            started = time.perf_counter()
            try:
                conn.request("POST", route, body=raw, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with lock:
                    errors.append(f"{route}: {type(exc).__name__}: {exc}")
                return
            ms = (time.perf_counter() - started) * 1000
            try:
                answer = json.loads(data)
            except ValueError:
                answer = {}
            with lock:
                if measured:
                    latencies.append(ms)
                    by_route[route] = by_route.get(route, 0) + 1
                if status != 200 or answer.get("result") != "success":
                    errors.append(f"{route}: {status} {data[:200]!r}")
            if on_answer is not None and status == 200:
                on_answer(route, answer)

        def phase(n: int, measured: bool) -> None:
            counter = itertools.count()

            def worker(conn: http.client.HTTPConnection) -> None:
                while True:
                    i = next(counter)  # thread-safe in CPython (a C iterator)
                    if i >= n:
                        return
                    route, payload = mix[next(order) % len(mix)]
                    one(conn, route, payload, measured)

            threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in connections]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        try:
            phase(warmup, measured=False)
            rss_warm = rss_kib(self.proc.pid)
            started = time.perf_counter()
            phase(total - warmup, measured=True)
            wall = time.perf_counter() - started
            rss_end = rss_kib(self.proc.pid)
        finally:
            for c in connections:
                c.close()
        return LoadResult(requests=total - warmup, concurrency=concurrency, warmup=warmup, wall_s=wall,
                          errors=len(errors), error_samples=errors[:10], latencies_ms=latencies, by_route=by_route,
                          rss_after_warmup_kib=rss_warm, rss_end_kib=rss_end)
