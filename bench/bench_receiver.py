"""Month-end through the WHMCS billing receiver vs the WHMCS API (not a test): WHMCS requests per line, and
lines needing an operator after faults on the wire.

The same data shape and limits as bench_billing's 2,000-account run (its sandbox process and seeding are
reused: accounts in USD/EUR/GBP, two products, a daily collection, then the last day; every limit x10 and
50 ms of latency on every upstream call, 8 accounts at once), with the WHMCS sandbox kept in a throwaway
MariaDB that the REAL receiver (``billing.php`` under ``php -S``) writes into, behind a fault proxy (50 ms
too). The accounts are seeded and the month so far collected once; every measured run starts from a copy
of that ledger (its own tables) and an empty tblbillableitems. Figures (bench/results.json, API.md section 5):

* ``whmcs_requests_per_line``: receiver path, every WHMCS HTTP request of the month-end run (the WHMCS API's,
  counted by the sandbox, plus the receiver's, counted by the proxy) / lines billed; target <= 0.05;
* ``whmcs_requests_per_line_api``: the same on the AddBillableItem path (reported; reference: what that
  design predicts, one GetClientsDetails per account + one AddBillableItem per line, whatever the number of
  accounts: so this path bills only the first ``--api-accounts``, 500 by default);
* ``billing_speedup_vs_sequential``: the month-end of the configuration the README sets up (step 2:
  ``WhmcsReceiverUrl``) against ComputeStacks' own sequential WHMCS billing: the sequential baseline
  (bench/sequential.py, on a sample of ``--baseline`` accounts, extrapolated to the run's accounts as
  bench_billing does) on these sandboxes and latencies ÷ the receiver path's month-end wall time; target
  >= 10 (bench_billing reports the same for the WHMCS API path: ``billing_speedup_vs_sequential_api``);
* ``attention_lines_after_faults``: a receiver-path month-end with proxy faults armed all through it
  (answers dropped after PHP committed, connections dropped before, 502/504 with and without the commit,
  HTML instead of JSON), then the re-runs an operator (or the next collection) would make until one has
  no failed account: lines needing an operator at the end; target 0. Duplicates and lost lines are
  counted too; either makes the bench fail.

    python -m bench receiver [--quick] [--accounts 2000] [--api-accounts 500] [--fault-accounts 1000] [--repeats 1]
                             [--baseline 100] [--no-write]
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.bench_billing import SPEEDUP_TARGET, Sandboxes

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-receiver-signing-secret-5f1c"  # noqa: S105 - a throwaway bench credential
TARGET_PER_LINE = 0.05
REF = re.compile(r"\[ref (\d+:\d{4}-\d{2}:\d+)\]")
RECEIVER_WORKERS = 4
MAX_FOLLOW_UPS = 6


def _paths() -> None:
    for p in (str(ROOT), str(ROOT / "layers/shared")):
        if p not in sys.path:
            sys.path.insert(0, p)


# ---------------------------------------------------------------------- sandboxes on the WHMCS database


def _db_sandbox_process(conn: Any, rate_limit: int, rate_period: float, socket: str, database: str) -> None:
    """bench_billing's sandbox process, its WHMCS sandbox kept in ``database`` (so the receiver sees the same
    clients and currencies, and its items are the sandbox's)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "layers/shared")]
    import sandboxes.whmcs as whmcs_module
    from bench import bench_billing
    from sandboxes.whmcsdb import WhmcsDatabase

    db = WhmcsDatabase.mariadb(socket, database)
    setattr(whmcs_module, "WhmcsSandbox", functools.partial(whmcs_module.WhmcsSandbox, db=db))  # noqa: B010
    bench_billing._sandbox_process(conn, rate_limit, rate_period)


class DbSandboxes(Sandboxes):
    """bench_billing.Sandboxes (same commands) with the WHMCS sandbox on a MariaDB database."""

    def __init__(self, rate_limit: int, rate_period: float, socket: str, database: str) -> None:
        super().__init__(rate_limit, rate_period, socket, database, target=_db_sandbox_process)




# ---------------------------------------------------------------------- faults all through a run


class FaultSchedule:
    """Keeps the proxy faulting all through a run: whenever the armed faults are used up and ``every`` clean
    requests went by, the next kind in turn is armed: for ``burst`` requests in a row (more than one send's
    tries, so that some lines are left for the next run) the first time and every third time after, else for one."""

    KINDS = ("drop_answer", "drop_before", "502", "504_after_commit", "non_json", "502_after_commit", "504")

    def __init__(self, proxy: Any, *, every: int = 2, burst: int = 4) -> None:
        self.proxy = proxy
        self.every = every
        self.burst = burst
        self.latency = proxy.latency
        self.armed: Counter[str] = Counter()
        self.unused = 0  # armed but never met a request (the run ended first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fault-schedule", daemon=True)

    def __enter__(self) -> FaultSchedule:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.unused = self.proxy.pending_faults
        self.proxy.clear_faults()  # (which also resets the latency)
        self.proxy.latency = self.latency

    def _arm(self, kind: str, n: int) -> None:
        p = self.proxy
        {"drop_answer": lambda: p.drop_answer_next(n), "drop_before": lambda: p.drop_before_next(n),
         "502": lambda: p.status_next(n, 502), "504_after_commit": lambda: p.status_next(n, 504, forward=True),
         "non_json": lambda: p.non_json_next(n), "502_after_commit": lambda: p.status_next(n, 502, forward=True),
         "504": lambda: p.status_next(n, 504)}[kind]()
        self.armed[kind] += n

    def _loop(self) -> None:
        i, next_at = 0, self.proxy.request_count
        while not self._stop.wait(0.002):
            if self.proxy.pending_faults == 0 and self.proxy.request_count >= next_at:
                n = self.burst if i % 3 == 0 else 1
                self._arm(self.KINDS[i % len(self.KINDS)], n)
                i += 1
                next_at = self.proxy.request_count + n + self.every

    @property
    def total(self) -> int:
        return sum(self.armed.values())


# ---------------------------------------------------------------------- one measured month-end


@dataclass
class Measured:
    path: str  # "receiver" | "api" | "faults"
    accounts: int
    lines: int = 0
    items: int = 0
    distinct_refs: int = 0
    wh_api_requests: int = 0
    receiver_requests: int = 0
    client_counted: int = 0  # Summary.whmcs_requests (the backend's own count, for a cross-check)
    wall: float = 0.0
    failed_accounts: int = 0
    attention: int = 0
    runs: int = 1
    faults: dict[str, int] = field(default_factory=dict)  # armed, by kind
    faults_used: int = 0
    duplicates: int = 0
    lost: int = 0
    receiver_refs: int = 0

    @property
    def requests(self) -> int:
        return self.wh_api_requests + self.receiver_requests

    @property
    def per_line(self) -> float:
        return self.requests / self.lines if self.lines else float("inf")


@dataclass
class Baseline:
    sample: int
    wall: float
    per_account: float
    extrapolated: float  # seconds the sequential way would take for the measured runs' accounts
    items: int
    errors: int


class Bench:
    """One seeded world for every run of the bench: the sandboxes (bench_billing's, on a MariaDB database),
    the receiver and its proxy, ``n`` accounts and their usage. Each measured run gets its own tables (its
    own ledger, collected on the month so far) and an emptied tblbillableitems, so the paths bill the same
    data and the WHMCS side starts empty every time."""

    def __init__(self, n: int, *, endpoint: str, mariadb: Any, scale: float, latency: float,
                 concurrency: int) -> None:
        from bench.bench_billing import CS_LIMIT, CS_WINDOW
        from sandboxes.faultproxy import FaultProxy
        from sandboxes.receiver import ReceiverServer
        from sandboxes.whmcsdb import WhmcsDatabase

        self.endpoint, self.mariadb = endpoint, mariadb
        self.scale, self.latency, self.concurrency = scale, latency, concurrency
        self.window = CS_WINDOW / scale
        self.database = f"bench_{uuid.uuid4().hex[:12]}"
        mariadb.create_database(self.database)
        self.db = WhmcsDatabase.mariadb(mariadb.socket, self.database)
        self.sb = DbSandboxes(CS_LIMIT, self.window, mariadb.socket, self.database)
        self.base: dict[str, str] = {}
        self._linked = False
        self.receiver: Any = None
        self.proxy: Any = None
        try:
            self.db.set_servers([SECRET])  # the ComputeStacks server record's Access Hash
            self.receiver = ReceiverServer(self.db, workers=RECEIVER_WORKERS).start()
            self.proxy = FaultProxy(self.receiver.url).start()
            self.accounts = self.sb.call("accounts", n)
            # The month so far (one day stands in for it, as in bench_billing); the last day comes later.
            from bench.bench_billing import COLLECT_AT

            self.sb.call("usage", (COLLECT_AT - timedelta(days=1)).isoformat(), COLLECT_AT.isoformat())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.receiver is not None:
            self.receiver.stop()
        self.sb.stop()
        self.db.close()
        self.mariadb.drop_database(self.database)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settings(self, names: dict[str, str], *, receiver: bool) -> Any:
        from cswhmcs.config import Settings

        cs_url, cs_key, cs_secret = self.sb.info["cs"]
        wh_url, wh_id, wh_secret = self.sb.info["wh"]
        return Settings.model_validate({
            "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint, **names, "CS_API_URL": cs_url, "CS_API_KEY": cs_key,
            "CS_API_SECRET": cs_secret, "WHMCS_API_URL": wh_url, "WHMCS_API_IDENTIFIER": wh_id,
            "WHMCS_API_SECRET": wh_secret, "CS_TIMEOUT": 10, "WHMCS_TIMEOUT": 10, "SIGNING_SECRET": SECRET,
            **({"WHMCS_RECEIVER_URL": self.proxy.url} if receiver else {})})

    def _tables(self) -> dict[str, str]:
        import boto3

        from cswhmcs.local.template import Template, ensure_tables

        suffix = uuid.uuid4().hex[:8]
        names = {"ACCOUNTS_TABLE": f"bench-accounts-{suffix}", "LEDGER_TABLE": f"bench-ledger-{suffix}",
                 "REPLAY_TABLE": f"bench-idem-{suffix}"}
        ensure_tables(Template(ROOT / "template.yaml"), boto3.client("dynamodb", endpoint_url=self.endpoint), names)
        return names

    def collect(self) -> None:
        """Map every account and collect the month so far once (unpaced, no latency): the ledger every
        measured run starts from (``prepare`` copies it)."""
        import boto3

        from bench.bench_billing import COLLECT_AT
        from cswhmcs.billing.options import BillingOptions
        from cswhmcs.billing.run import build_runtime, run_billing

        self.base = self._tables()
        table = boto3.resource("dynamodb", endpoint_url=self.endpoint).Table(self.base["ACCOUNTS_TABLE"])
        with table.batch_writer() as batch:
            for i, (uid, cid, email, cur) in enumerate(self.accounts):
                batch.put_item(Item={"service_id": 1000 + i, "cs_user_id": uid, "email": email, "client_id": cid,
                                     "currency": cur})
        setup = build_runtime(self.settings(self.base, receiver=False),
                              options=BillingOptions(cs_limit=10**8, whmcs_rate=10**6, whmcs_burst=1000,
                                                     concurrency=32))
        try:
            collected = run_billing(as_of=COLLECT_AT, ledger=setup.ledger, accounts=setup.accounts,
                                    deps=setup.deps, kind="collect", keep_lines=False)
        finally:
            setup.close()
        if collected.failed:
            raise RuntimeError(f"the daily collection failed: {collected.failed[:3]}")

    def prepare(self, path: str, n: int) -> tuple[str, int, Any]:
        """Fresh tables for one measured run: a copy of the collected ledger, the first ``n`` accounts mapped
        (a copy is the same state as collecting again, in a fraction of the time)."""
        import boto3

        names = self._tables()
        ddb = boto3.resource("dynamodb", endpoint_url=self.endpoint)
        mapped = {int(uid) for uid, _cid, _email, _cur in self.accounts[:n]}
        for key in names:
            source, target = ddb.Table(self.base[key]), ddb.Table(names[key])
            with target.batch_writer() as batch:
                kwargs: dict[str, Any] = {}
                while True:
                    page = source.scan(**kwargs)
                    for item in page.get("Items", []):
                        if key != "ACCOUNTS_TABLE" or int(str(item["cs_user_id"])) in mapped:
                            batch.put_item(Item=item)
                    if "LastEvaluatedKey" not in page:
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return path, n, self.settings(names, receiver=path != "api")

    def last_day(self) -> None:
        """The rest of the month (as bench_billing), then the latencies of the measured runs."""
        from bench.bench_billing import COLLECT_AT, CUT_OFF

        self.sb.call("usage", COLLECT_AT.isoformat(), CUT_OFF.isoformat())
        self.sb.call("latency", self.latency)
        self.proxy.latency = self.latency

    def sequential(self, sample: int, n: int) -> Baseline:
        """The sequential baseline on ``sample`` of the accounts (every k-th, as bench_billing), same sandboxes
        and latency as the measured runs, extrapolated to ``n`` accounts."""
        from bench.bench_billing import CUT_OFF, MONTH_START
        from bench.sequential import run_sequential

        if not self._linked:  # the gem finds a record's client from its WHMCS service (bench_billing does the same)
            self.sb.call("link")
            self._linked = True
        self.db.truncate_billing()
        self.sb.call("reset")  # the ComputeStacks rate window free, as for every measured run
        ids = [int(a[0]) for a in self.accounts[:: max(1, len(self.accounts) // sample)][:sample]]
        res = run_sequential(self.sb.info["cs"], self.sb.info["wh"], ids, period_start=MONTH_START,
                             period_end=CUT_OFF)
        per_account = (res.wall - res.per_run) / max(1, len(ids))
        return Baseline(sample=len(ids), wall=res.wall, per_account=per_account,
                        extrapolated=res.per_run + per_account * n, items=len(res.items), errors=len(res.errors))

    def month_end(self, path: str, n: int, settings: Any) -> Measured:
        """One measured month-end (for ``faults``: with the fault schedule, then the operator's re-runs)."""
        from bench.bench_billing import CS_LIMIT, CS_SHARE, CUT_OFF, WHMCS_RATE
        from cswhmcs.billing.options import BillingOptions
        from cswhmcs.billing.run import build_runtime, run_billing

        self.db.truncate_billing()
        self.sb.call("reset")
        options = BillingOptions(cs_limit=CS_LIMIT, cs_window=self.window, cs_share=CS_SHARE,
                                 whmcs_rate=WHMCS_RATE * self.scale, concurrency=self.concurrency)
        out = Measured(path=path, accounts=n)
        rx0 = self.proxy.request_count

        def one_run() -> Any:
            rt = build_runtime(settings, options=options)
            try:
                return run_billing(as_of=CUT_OFF, ledger=rt.ledger, accounts=rt.accounts, deps=rt.deps,
                                   keep_lines=False)
            finally:
                rt.close()

        t0 = time.perf_counter()
        summaries = []
        if path == "faults":
            with FaultSchedule(self.proxy) as schedule:
                summaries.append(one_run())
                # The re-runs an operator (or the next delivery/collection) makes until no account failed.
                while summaries[-1].failed and len(summaries) <= MAX_FOLLOW_UPS:
                    summaries.append(one_run())
            out.faults = dict(schedule.armed)
            out.faults_used = schedule.total - schedule.unused
        else:
            summaries.append(one_run())
        out.wall = time.perf_counter() - t0
        stats = self.sb.call("stats")
        out.runs = len(summaries)
        out.lines = sum(s.created_count for s in summaries)
        out.client_counted = sum(s.whmcs_requests for s in summaries)
        out.failed_accounts = len(summaries[-1].failed)
        out.attention = max(summaries[-1].open_attention, len(summaries[-1].attention))
        out.wh_api_requests = stats["wh_requests"]
        out.receiver_requests = self.proxy.request_count - rx0
        items = self.db.billable_items()
        refs = {m.group(1) for m in (REF.search(str(i["description"])) for i in items) if m}
        out.items, out.distinct_refs = len(items), len(refs)
        out.duplicates = len(items) - len(refs)
        out.lost = max(0, 2 * n - len(refs))  # two products per account, every line over a cent
        out.receiver_refs = len(self.db.receiver_refs())
        return out


# ---------------------------------------------------------------------- report


def print_runs(rows: list[Measured]) -> None:
    print("\nMonth-end, WHMCS requests per billed line (real billing.php on MariaDB behind a proxy; limits x10, "
          "50 ms latency)")
    head = (f"{'path':<9} {'accounts':>8} {'runs':>4} {'wall s':>7} {'lines':>6} {'items':>6} {'API req':>7} "
            f"{'recv req':>8} {'req/line':>8} {'failed':>6} {'attn':>4} {'dup':>4} {'lost':>4}  faults")
    print(head)
    print("-" * len(head))
    for r in rows:
        faults = (f"{r.faults_used} of {sum(r.faults.values())} armed met a request: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(r.faults.items()))) if r.faults else "-"
        print(f"{r.path:<9} {r.accounts:>8} {r.runs:>4} {r.wall:>7.1f} {r.lines:>6} {r.items:>6} "
              f"{r.wh_api_requests:>7} {r.receiver_requests:>8} {r.per_line:>8.4f} {r.failed_accounts:>6} "
              f"{r.attention:>4} {r.duplicates:>4} {r.lost:>4}  {faults}")
    print("  API req: counted by the WHMCS sandbox; recv req: receiver requests counted by the proxy (retries "
          "included).\n  faults: armed all through the runs: 4 requests in a row, then 2 clean, 1, 2 clean, 1, "
          "2 clean, 4 ...;\n  the re-runs an operator would make follow until no account failed.")


def figures(receiver: list[Measured], api: list[Measured], faults: Measured,
            baseline: Baseline | None = None) -> list[dict[str, Any]]:
    from bench.results import figure

    per_line = statistics.median(r.per_line for r in receiver)
    speedup = []
    if baseline is not None:
        wall = statistics.median(r.wall for r in receiver)
        value = round(baseline.extrapolated / wall, 2)
        # A fair comparison only: both sides billed everything, once (as bench_billing checks for the API path).
        clean = all(not r.failed_accounts and not r.duplicates and not r.lost for r in receiver)
        expected = baseline.sample * receiver[0].lines / max(1, receiver[0].accounts)
        valid = clean and not baseline.errors and baseline.items == expected
        speedup = [figure("billing_speedup_vs_sequential", value, "x", reference=SPEEDUP_TARGET,
                          target=f">= {SPEEDUP_TARGET:g}", passed=valid and value >= SPEEDUP_TARGET)]
    per_line_api = statistics.median(r.per_line for r in api)
    predicted_api = statistics.median((r.accounts + r.lines) / r.lines for r in api)
    return [
        figure("whmcs_requests_per_line", round(per_line, 4), "requests/line", reference=TARGET_PER_LINE,
               target="<= 0.05", passed=per_line <= TARGET_PER_LINE),
        figure("whmcs_requests_per_line_api", round(per_line_api, 4), "requests/line",
               reference=round(predicted_api, 4), target="reported", passed=True),
        figure("attention_lines_after_faults", float(faults.attention), "lines", reference=float(faults.lines),
               target="0", passed=faults.attention == 0),
        *speedup,
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench receiver", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="200 accounts on each path, 200 in the fault run")
    ap.add_argument("--accounts", type=int, help="accounts on each path (default 2000)")
    ap.add_argument("--api-accounts", type=int, help="accounts on the AddBillableItem path (default 500, at most "
                                                     "--accounts)")
    ap.add_argument("--fault-accounts", type=int, help="accounts in the fault run (default 1000)")
    ap.add_argument("--repeats", type=int, default=1, help="measured runs per path (the median is reported)")
    ap.add_argument("--baseline", type=int, help="accounts the sequential baseline bills (default 100; --quick 25; "
                                                  "0: none)")
    ap.add_argument("--scale", type=float, default=10.0, help="limit scale, as bench_billing (1 = real)")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--no-write", action="store_true", help="do not update bench/results.json")
    args = ap.parse_args(argv)
    _paths()
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

    from bench.results import markdown, merge
    from sandboxes.dynamodb_local import DynamoDBLocal
    from sandboxes.mariadb import MariaDB

    n = args.accounts or (200 if args.quick else 2000)
    n_faults = args.fault_accounts or (200 if args.quick else 1000)
    n_api = min(n, args.api_accounts or 500)
    kw = {"scale": args.scale, "latency": args.latency, "concurrency": args.concurrency}
    started = time.perf_counter()
    with DynamoDBLocal() as ddb, MariaDB() as mariadb, \
            Bench(max(n, n_faults), endpoint=ddb.endpoint, mariadb=mariadb, **kw) as bench:
        print(f"... seeded {max(n, n_faults)} accounts ({time.perf_counter() - started:.0f} s); collecting the "
              "month so far", file=sys.stderr, flush=True)
        bench.collect()
        print(f"... collected ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        plan = [bench.prepare(path, size) for _ in range(max(1, args.repeats))
                for path, size in (("receiver", n), ("api", n_api))]
        plan.append(bench.prepare("faults", n_faults))
        bench.last_day()
        results: list[Measured] = []
        for path, size, settings in plan:
            print(f"... month-end, {path} path, {size} accounts ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            results.append(bench.month_end(path, size, settings))
        n_base = args.baseline if args.baseline is not None else (25 if args.quick else 100)
        baseline = None
        if n_base:
            print(f"... the sequential baseline on {n_base} accounts ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            baseline = bench.sequential(n_base, n)
    receiver = [r for r in results if r.path == "receiver"]
    api = [r for r in results if r.path == "api"]
    [faulted] = [r for r in results if r.path == "faults"]
    print_runs(receiver + api + [faulted])
    if baseline is not None:
        wall = statistics.median(r.wall for r in receiver)
        print(f"  sequential baseline: {baseline.sample} accounts in {baseline.wall:.1f} s "
              f"({baseline.per_account * 1000:.0f} ms per account, {baseline.items} items, {baseline.errors} errors); "
              f"for {n} accounts {baseline.extrapolated:.0f} s against the receiver path's {wall:.1f} s")
    figs = figures(receiver, api, faulted, baseline)
    print()
    print(markdown(figs))
    if not args.no_write:
        merge(figs)
        print("\n(figures merged into bench/results.json)")
    broken = [r for r in receiver + api + [faulted] if r.duplicates or r.lost]
    for r in broken:
        print(f"EXACTLY-ONCE BROKEN on the {r.path} path: {r.duplicates} duplicate items, {r.lost} lost lines",
              file=sys.stderr)
    print(f"\nbench receiver: {time.perf_counter() - started:.0f} s wall")
    return 0 if all(f["pass"] for f in figs) and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
