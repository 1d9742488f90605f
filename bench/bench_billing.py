"""Month-end billing benchmark (not a test): the real code against its bounds, and a 100k simulation.

Part 1 runs the real planner and worker in-process against DynamoDB Local and both sandboxes (in a
separate process, so that the memory measured is ours) with 50 ms of latency on every upstream call.
Each size first gets a daily collection (the month so far), then the last day's usage, then the
measured month-end run, paced with the real budget (2,500 requests / 5 min per IP, billing's 80 %),
or with every limit scaled up by ``--scale`` (a time-compressed window) so that big sizes finish soon.
It prints accounts/s, wall time, the bound set by latency, concurrency and the rate limits, and the
ratio, the peak requests in any window, 429s, and the peak RSS growth of the run.

Part 2 simulates 100,000 accounts (a discrete-event model of planner, SQS batches, C workers with their
own token buckets, latencies): time after the cut-off and peak request rate, with and without the
daily collection.

    python -m bench.bench_billing [--full] [--sizes 200,2000] [--scale 10] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CUT_OFF = datetime(2026, 10, 31, 23, tzinfo=UTC)
COLLECT_AT = datetime(2026, 10, 31, 0, 30, tzinfo=UTC)
CS_LIMIT, CS_WINDOW, CS_SHARE = 2500, 300.0, 0.8
WHMCS_RATE = 30.0
PRODUCTS = (("containerm", "0.02054795"), ("storage", "0.00068493"))


# ---------------------------------------------------------------------- sandboxes in their own process


def _sandbox_process(conn: Any, rate_limit: int, rate_period: float) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "layers/shared")]
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox

    cs = ComputeStacksSandbox(rate_limit=rate_limit, rate_period=rate_period, with_admin_user=False).start()
    wh = WhmcsSandbox().start()
    conn.send({"cs": [cs.url, cs.api_key, cs.api_secret], "wh": [wh.url, wh.identifier, wh.secret]})
    users: list[int] = []
    sp = 0
    while True:
        cmd, *args = conn.recv()
        if cmd == "accounts":
            out = []
            for i in range(int(args[0])):
                cur = ("USD", "EUR", "GBP")[i % 3]
                user = cs.add_user(f"bench{i}@example.com", "Bench", f"User{i}", currency=cur)
                client = wh.add_client("Bench", f"User{i}", f"client{i}@example.com", currency_code=cur)
                users.append(int(user["id"]))
                out.append((int(user["id"]), int(client["id"]), f"bench{i}@example.com", cur))
            conn.send(out)
        elif cmd == "usage":  # rows every 3 h ending in (start, end], one subscription product per product
            start, end = datetime.fromisoformat(args[0]), datetime.fromisoformat(args[1])
            n = 0
            for idx, uid in enumerate(users):
                for p, (name, total) in enumerate(PRODUCTS):
                    t = start + timedelta(hours=3)
                    while t <= end:
                        cs.add_usage(uid, product_name=name, subscription_product_id=10_000 + idx * 2 + p,
                                     total=total, qty="1", period_start=t - timedelta(hours=3), period_end=t)
                        t += timedelta(hours=3)
                        n += 1
            sp += n
            conn.send(n)
        elif cmd == "latency":
            cs.latency = wh.latency = float(args[0])
            conn.send(True)
        elif cmd == "reset":
            cs.reset_requests()
            wh.reset_requests()
            conn.send(True)
        elif cmd == "stats":
            reqs = cs.requests
            conn.send({"cs_times": [r["at"] for r in reqs], "cs_429": sum(1 for r in reqs if r["status"] == 429),
                       "wh_requests": len(wh.requests), "items": len(wh.billable_items)})
        elif cmd == "stop":
            cs.stop()
            wh.stop()
            conn.send(True)
            return


class Sandboxes:
    def __init__(self, rate_limit: int, rate_period: float) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sandbox_process, args=(child, rate_limit, rate_period), daemon=True)
        self.proc.start()
        self.info = self.conn.recv()

    def call(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.call("stop")
        finally:
            self.proc.join(5)


# ---------------------------------------------------------------------- one measured size (child process)


def _hwm_kb() -> int:
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _rss_kb() -> int:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return _hwm_kb()


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_in_window(times: Iterable[float], window: float) -> int:
    ts = sorted(times)
    best = j = 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def measure(n: int, *, endpoint: str, scale: float, latency: float, concurrency: int) -> dict[str, Any]:
    import boto3

    from cswhmcs.billing.options import BillingOptions
    from cswhmcs.billing.run import build_runtime, run_billing
    from cswhmcs.config import Settings
    from cswhmcs.local.template import Template, ensure_tables

    window = CS_WINDOW / scale
    sb = Sandboxes(CS_LIMIT, window)
    try:
        suffix = uuid.uuid4().hex[:8]
        names = {"ACCOUNTS_TABLE": f"bench-accounts-{suffix}", "LEDGER_TABLE": f"bench-ledger-{suffix}",
                 "IDEMPOTENCY_TABLE": f"bench-idem-{suffix}"}
        ddb = boto3.client("dynamodb", endpoint_url=endpoint)
        ensure_tables(Template(ROOT / "template.yaml"), ddb, names)
        cs_url, cs_key, cs_secret = sb.info["cs"]
        wh_url, wh_id, wh_secret = sb.info["wh"]
        settings = Settings.model_validate({
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint, **names, "CS_API_URL": cs_url, "CS_API_KEY": cs_key,
            "CS_API_SECRET": cs_secret, "WHMCS_API_URL": wh_url, "WHMCS_API_IDENTIFIER": wh_id,
            "WHMCS_API_SECRET": wh_secret, "CS_TIMEOUT": 10, "WHMCS_TIMEOUT": 10})
        accounts = sb.call("accounts", n)
        table = boto3.resource("dynamodb", endpoint_url=endpoint).Table(names["ACCOUNTS_TABLE"])
        with table.batch_writer() as batch:
            for i, (uid, cid, email, cur) in enumerate(accounts):
                batch.put_item(Item={"service_id": 1000 + i, "cs_user_id": uid, "email": email, "client_id": cid,
                                     "currency": cur})

        # The month so far (one day stands in for it), collected by a daily run, unpaced and without latency.
        sb.call("usage", (COLLECT_AT - timedelta(days=1)).isoformat(), COLLECT_AT.isoformat())
        setup = build_runtime(settings, options=BillingOptions(cs_limit=10**8, whmcs_rate=10**6, whmcs_burst=1000,
                                                                concurrency=32))
        collected = run_billing(as_of=COLLECT_AT, ledger=setup.ledger, accounts=setup.accounts, deps=setup.deps,
                                kind="collect", keep_lines=False)
        setup.close()
        assert not collected.failed, collected.failed[:3]

        # The last day, then the measured month-end run with the real (or scaled) budgets and latency.
        rows_last_day = sb.call("usage", COLLECT_AT.isoformat(), CUT_OFF.isoformat())
        sb.call("latency", latency)
        sb.call("reset")
        options = BillingOptions(cs_limit=CS_LIMIT, cs_window=window, cs_share=CS_SHARE,
                                 whmcs_rate=WHMCS_RATE * scale, concurrency=concurrency)
        rt = build_runtime(settings, options=options)
        import gc

        gc.collect()
        rss0 = _rss_kb()
        exact_hwm = _reset_hwm()
        t0 = time.perf_counter()
        summary = run_billing(as_of=CUT_OFF, ledger=rt.ledger, accounts=rt.accounts, deps=rt.deps, keep_lines=False)
        wall = time.perf_counter() - t0
        hwm = _hwm_kb()
        rt.close()
        stats = sb.call("stats")
    finally:
        sb.stop()

    cs_req = len(stats["cs_times"])
    q_cs = cs_req / n
    q_wh = stats["wh_requests"] / n
    # The same buckets as build_runtime: burst b, then (budget - b) per window.
    budget = CS_LIMIT * CS_SHARE
    burst = max(1, min(options.cs_burst, int(budget // 10)))
    bounds = {
        "ComputeStacks rate": max(0, cs_req - burst) / ((budget - burst) / window),
        "WHMCS rate": max(0, stats["wh_requests"] - options.whmcs_burst) / (WHMCS_RATE * scale),
        "latency x concurrency": n * (q_cs + q_wh) * latency / concurrency,
    }
    which, bound = max(bounds.items(), key=lambda kv: kv[1])
    return {
        "accounts": n, "scale": scale, "latency": latency, "concurrency": concurrency, "wall": wall,
        "accounts_per_s": n / wall, "bound": bound, "bound_by": which, "ratio": wall / bound if bound else 0.0,
        "cs_requests": cs_req, "cs_per_account": q_cs, "whmcs_requests": stats["wh_requests"],
        "peak_cs_window": peak_in_window(stats["cs_times"], window), "window": window,
        "budget_window": int(CS_LIMIT * CS_SHARE), "limit_window": CS_LIMIT, "cs_429": stats["cs_429"],
        "items": stats["items"], "created": summary.items, "failed": len(summary.failed),
        "rows_last_day": rows_last_day, "rss_start_mb": rss0 / 1024, "rss_peak_mb": hwm / 1024,
        "rss_growth_mb": max(0, hwm - rss0) / 1024, "hwm_exact": exact_hwm,
    }


# ---------------------------------------------------------------------- 100k simulation


@dataclass
class SimParams:
    accounts: int = 100_000
    workers: int = 4  # SQS event source MaximumConcurrency
    cs_requests_per_account: int = 1
    whmcs_requests_per_account: float = 3.0  # GetClientsDetails + ~2 AddBillableItem
    latency_cs: float = 0.05
    latency_whmcs: float = 0.05
    latency_ddb: float = 0.005
    ddb_ops_per_account: int = 8
    cs_limit: int = CS_LIMIT
    cs_window: float = CS_WINDOW
    cs_share: float = CS_SHARE
    cs_burst: int = 10
    whmcs_rate: float = WHMCS_RATE
    batch: int = 10  # SQS BatchSize
    planner_msgs_per_s: float = 3200.0  # 8 threads x SendMessageBatch(10) / 25 ms
    cold_start: float = 1.0


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, float(burst), float(burst), 0.0

    def take(self, t: float) -> float:
        """Returns the time the request may go."""
        self.tokens = min(self.burst, self.tokens + (t - self.last) * self.rate)
        self.last = t
        if self.tokens >= 1:
            self.tokens -= 1
            return t
        wait = (1 - self.tokens) / self.rate
        self.tokens = 0.0
        self.last = t + wait
        return t + wait


def simulate(p: SimParams) -> dict[str, Any]:
    """Discrete-event model of one month-end run; t = 0 is the cut-off (the Scheduler's time)."""
    per_worker_budget = p.cs_limit * p.cs_share / p.workers
    burst = max(1, min(p.cs_burst, int(per_worker_budget // 10)))
    cs_rate = (per_worker_budget - burst) / p.cs_window
    wh_rate = p.whmcs_rate / p.workers
    cs_buckets = [_Bucket(cs_rate, burst) for _ in range(p.workers)]
    wh_buckets = [_Bucket(wh_rate, max(1, min(5, math.ceil(wh_rate)))) for _ in range(p.workers)]
    free = [(p.cold_start, w) for w in range(p.workers)]
    heapq.heapify(free)
    cs_times: list[float] = []
    wh_times: list[float] = []
    done_at = 0.0
    whole, frac = int(p.whmcs_requests_per_account), p.whmcs_requests_per_account % 1
    for first in range(0, p.accounts, p.batch):
        t, w = heapq.heappop(free)
        t = max(t, (first + p.batch) / p.planner_msgs_per_s)  # the batch must have been enqueued
        for i in range(first, min(first + p.batch, p.accounts)):
            for _ in range(p.cs_requests_per_account):
                t = cs_buckets[w].take(t)
                cs_times.append(t)
                t += p.latency_cs
            n_wh = whole + (1 if (i * frac) % 1 + frac >= 1 else 0)
            for _ in range(n_wh):
                t = wh_buckets[w].take(t)
                wh_times.append(t)
                t += p.latency_whmcs
            t += p.ddb_ops_per_account * p.latency_ddb
        done_at = max(done_at, t)
        heapq.heappush(free, (t, w))
    budget_rate = p.cs_limit * p.cs_share / p.cs_window
    bound = max(p.accounts * p.cs_requests_per_account / budget_rate,
                p.accounts * p.whmcs_requests_per_account / p.whmcs_rate)
    return {"accounts": p.accounts, "workers": p.workers, "cs_per_account": p.cs_requests_per_account,
            "time_after_cutoff": done_at, "bound": bound, "ratio": done_at / bound,
            "peak_cs_window": peak_in_window(cs_times, p.cs_window), "peak_whmcs_per_s": peak_in_window(wh_times, 1.0),
            "cs_requests": len(cs_times), "planner_s": p.accounts / p.planner_msgs_per_s}


# ---------------------------------------------------------------------- report


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def print_measured(rows: list[dict[str, Any]]) -> None:
    print("\nMonth-end billing, real code (DynamoDB Local + sandboxes over HTTP, in-process runner)")
    head = (f"{'accounts':>8} {'CS limit':>16} {'lat ms':>6} {'C':>3} {'wall s':>8} {'acct/s':>7} "
            f"{'bound s':>8} {'bound by':>22} {'ratio':>6} {'CS req':>7} {'peak CS/window':>15} {'429':>4} "
            f"{'WHMCS':>6} {'items':>6} {'RSS MB':>7} {'run +MB':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        limit = f"{r['limit_window']}/{r['window']:.0f}s" + (f" x{r['scale']:g}" if r["scale"] != 1 else "")
        print(f"{r['accounts']:>8} {limit:>16} {r['latency'] * 1000:>6.0f} {r['concurrency']:>3} {r['wall']:>8.1f} "
              f"{r['accounts_per_s']:>7.1f} {r['bound']:>8.1f} {r['bound_by']:>22} {r['ratio']:>6.2f} "
              f"{r['cs_requests']:>7} {r['peak_cs_window']:>7}/{r['budget_window']:<7} {r['cs_429']:>4} "
              f"{r['whmcs_requests']:>6} {r['items']:>6} {r['rss_peak_mb']:>7.1f} {r['rss_growth_mb']:>7.1f}")
    print("  bound = the largest of: CS requests / billing's CS budget (80 % of 2,500 per window), WHMCS "
          "requests / 30 per s,\n  and (CS + WHMCS requests) x latency / concurrency. 'x10': every limit "
          "scaled up 10 times (a 30-s window) so the run is short.\n  RSS MB: peak resident memory of the "
          "billing process; run +MB: its growth during the measured run (sandboxes run elsewhere).")


def print_simulated(rows: list[tuple[str, dict[str, Any]]]) -> None:
    print("\nSimulation: 100,000 accounts, month-end after the cut-off (50 ms latencies, SQS batches of 10)")
    head = (f"{'scenario':<44} {'C':>3} {'CS req':>8} {'after cut-off':>13} {'bound':>9} {'ratio':>6} "
            f"{'peak CS/300s':>13} {'WHMCS peak/s':>12}")
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(f"{name:<44} {r['workers']:>3} {r['cs_requests']:>8} {hms(r['time_after_cutoff']):>13} "
              f"{hms(r['bound']):>9} {r['ratio']:>6.3f} {r['peak_cs_window']:>6}/2,500 {r['peak_whmcs_per_s']:>12}")
    print("  bound = CS requests / 6.67 per s (80 % of 2,500 per 300 s); the planner enqueues 100k messages "
          f"in ~{rows[0][1]['planner_s']:.0f} s.")


def run_simulations() -> list[tuple[str, dict[str, Any]]]:
    out = [
        ("daily collection on (1 page after cut-off)", simulate(SimParams(workers=4))),
        ("daily collection on, C = 8", simulate(SimParams(workers=8))),
        ("daily collection on, C = 8, WHMCS 200 ms", simulate(SimParams(workers=8, latency_whmcs=0.2))),
        ("daily collection on, C = 4, WHMCS 200 ms", simulate(SimParams(workers=4, latency_whmcs=0.2))),
        ("no daily collection, pages of 500 (2 pages)", simulate(SimParams(workers=4, cs_requests_per_account=2))),
    ]
    per30 = SimParams(workers=4, cs_requests_per_account=24, accounts=10_000)
    r = simulate(per30)
    r = {**r, "accounts": 100_000, "time_after_cutoff": r["time_after_cutoff"] * 10, "bound": r["bound"] * 10,
         "cs_requests": r["cs_requests"] * 10}
    out.append(("no daily collection, pages of 30 (10k x 10)", r))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="200,2000")
    ap.add_argument("--scale", type=float, default=10.0, help="limit scale for the larger sizes (1 = real)")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="also run every size at the real limit (2,000: ~5 min)")
    ap.add_argument("--sim-only", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:  # a child: one measurement, JSON on stdout
        print(json.dumps(measure(args.one, endpoint=args.endpoint, scale=args.scale, latency=args.latency,
                                 concurrency=args.concurrency)))
        return 0

    sims = run_simulations()
    measured: list[dict[str, Any]] = []
    if not args.sim_only:
        from sandboxes.dynamodb_local import DynamoDBLocal

        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        plan = [(sizes[0], 1.0)] + [(n, args.scale) for n in sizes]
        if args.full:
            plan += [(n, 1.0) for n in sizes[1:]]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "WARNING",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers/shared"),
                                              os.environ.get("PYTHONPATH", "")])}
        with DynamoDBLocal() as db:
            for n, scale in plan:
                print(f"... measuring {n} accounts (limit x{scale:g})", file=sys.stderr, flush=True)
                proc = subprocess.run(
                    [sys.executable, "-m", "bench.bench_billing", "--one", str(n), "--scale", str(scale),
                     "--latency", str(args.latency), "--concurrency", str(args.concurrency), "--endpoint", db.endpoint],
                    cwd=ROOT, env=env, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                measured.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print_measured(measured)
    print_simulated(sims)
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": measured, "simulated": dict(sims)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
