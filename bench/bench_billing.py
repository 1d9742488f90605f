"""Month-end billing benchmark (not a test): the real code against its bounds, against a sequential
baseline, and a 100k simulation checked against the real code. Figures (API.md section 5, bench/results.json):

* ``billing_bound_ratio_200``: 200 accounts at ComputeStacks' real limit (2,500 requests / 5 min, billing's
  80 %), 50 ms of latency on every upstream call: wall time / the bound set by latency, concurrency and the
  rate limits (median over ``--repeats``); target <= 1.1;
* ``billing_bound_ratio_2000``: the same with 2,000 accounts and every limit x10 (``--scale``: a 30-s window,
  so that the run is short); target <= 1.2;
* ``billing_speedup_vs_sequential_api`` (reported): ComputeStacks' own sequential WHMCS billing
  (``bench/sequential.py``, a faithful re-implementation of the whmcs-ruby gem's algorithm, lighter than the
  gem where it differs) on the same data, sandboxes and limits as the 2,000-account run, which bills through
  the WHMCS API: its time for the 2,000 accounts / ours (``billing_speedup_vs_sequential`` itself, target
  >= 10, is the same comparison for the configuration the README sets up, the receiver: bench_receiver).
  It runs on an evenly spread sample of ``--baseline`` accounts (``--full``: all of them) and is scaled to
  the 2,000: it is strictly sequential and unpaced, so its time is the sum of its accounts' times (plus its
  one WhmcsDetails per run, counted once);
* ``billing_rss_growth``: peak RSS of the billing process at 2,000 accounts / at 200 (same limits); <= 1.2;
* ``month_end_minutes_100k`` / ``month_end_minutes_100k_safelisted``: simulated minutes after the cut-off
  until 100,000 accounts are billed: the close run from 21:20 and the month-end run at 23:00 (docs/billing.md
  3b; ``bench/simulation.py`` ``simulate_close``) at the template's defaults (8 workers, SQS batches of 100,
  the billing receiver), with ``CS_RATE_LIMIT`` 2,500 and 10,000; targets <= 150 and <= 15;
* ``peak_cs_requests_per_5min``: the worst 5-minute window of those simulations / ``CS_RATE_LIMIT``; <= 0.8;
* ``simulation_error``: the simulator given the 2,000-account run's parameters (accounts, workers, buckets,
  requests per account and the round-trip times measured in that run: the sandboxes' 50 ms plus HTTP and
  DynamoDB Local on this machine) against its measured wall time: |simulated - measured| / measured; <= 0.1;
* ``window_simulation_error``: the Lambda workers' pacer (``SharedWindow``) measured on DynamoDB Local (8
  threads with a window each on one item, 450 tokens at 100 per 10 s, 50 ms each; 250 with ``--quick``)
  against ``bench.simulation._Window``, the model behind the 100k figures, given the same parameters and the
  measured cost of a take; <= 0.1, and no 10 s may hold more than the budget.

Part 1 runs the real planner and worker in-process against DynamoDB Local and both sandboxes (in a
separate process, so that the memory measured is ours). Each size first gets a daily collection (the month
so far), then the last day's usage, then the measured month-end runs: each on its own copy of the collected
ledger, so that repeats bill the same state. Part 2 is bench/simulation.py: discrete-event models of planner,
SQS batches, C workers with their pacers and latencies: ``simulate`` (every account read after the
cut-off, as these measured runs do: the model ``simulation_error`` checks) and ``simulate_close`` (the close
run + the month-end run sharing one queue: the 100k figures). ``SimParams.cs_limit`` is ``CS_RATE_LIMIT``.

    python -m bench billing [--quick] [--full] [--sizes 200,2000] [--repeats 2] [--baseline 100] [--no-write]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CUT_OFF = datetime(2026, 10, 31, 23, tzinfo=UTC)
COLLECT_AT = datetime(2026, 10, 31, 0, 30, tzinfo=UTC)
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
PRODUCTS = (("containerm", "0.02054795"), ("storage", "0.00068493"))
TARGETS = {"billing_bound_ratio_200": 1.1, "billing_bound_ratio_2000": 1.2, "billing_rss_growth": 1.2,
           "month_end_minutes_100k": 150.0, "month_end_minutes_100k_safelisted": 15.0,
           "peak_cs_requests_per_5min": 0.8, "simulation_error": 0.1, "window_simulation_error": 0.1}
# billing_speedup_vs_sequential's target: bench_receiver measures it on the README's configuration; the API
# path's figure, reported here, has it as its reference.
SPEEDUP_TARGET = 10.0
ORDER = [*TARGETS, "billing_speedup_vs_sequential_api"]  # the table's order: the targets, then the reported figure

# The month-end models (the old after-cut-off one, ``simulate``, checked against measured runs here, and the close
# run + bill run, ``simulate_close``, behind the 100k figures) live in bench/simulation.py.
from bench.simulation import (  # noqa: E402
    CS_LIMIT,
    CS_SHARE,
    CS_WINDOW,
    SAFELISTED_LIMIT,
    WHMCS_RATE,
    SimParams,
    peak_in_window,
    print_close_simulated,
    print_table,
    run_close_simulations,
    run_simulations,
    simulate,
)

# ---------------------------------------------------------------------- sandboxes in their own process


def _sandbox_process(conn: Any, rate_limit: int, rate_period: float) -> None:
    """The sandboxes' process (bench_receiver runs it too, with its WHMCS sandbox on MariaDB). Commands:
    accounts N, link, usage START END, latency S, reset, stats, items FROM, stop."""
    sys.path[:0] = [str(ROOT), str(ROOT / "layers/shared")]
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox

    cs = ComputeStacksSandbox(rate_limit=rate_limit, rate_period=rate_period, with_admin_user=False).start()
    wh = WhmcsSandbox().start()
    conn.send({"cs": [cs.url, cs.api_key, cs.api_secret], "wh": [wh.url, wh.identifier, wh.secret]})
    users: list[int] = []
    clients: list[int] = []
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
                clients.append(int(client["id"]))
                out.append((int(user["id"]), int(client["id"]), f"bench{i}@example.com", cur))
            conn.send(out)
        elif cmd == "link":  # a WHMCS service per account, named in the ComputeStacks user's labels (service only)
            product = wh.add_product("Cloud Account", module="computestacks")
            sids = []
            for uid, cid in zip(users, clients, strict=True):
                sid = int(wh.add_service(cid, int(product["pid"]), username=f"bench{uid}@example.com")["id"])
                cs.set_user_fields(uid, labels={"whmcs": {"service_id": sid}})
                sids.append(sid)
            conn.send(sids)
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
            # A measured month-end starts with ComputeStacks' rate window free: in production the daily
            # collection's reads are a day old, here they are seconds old (and so are the previous run's).
            cs.forget_rate_counts()
            conn.send(True)
        elif cmd == "stats":
            reqs = cs.requests
            conn.send({"cs_times": [r["at"] for r in reqs], "cs_429": sum(1 for r in reqs if r["status"] == 429),
                       "wh_requests": len(wh.requests), "items": len(wh.billable_items)})
        elif cmd == "items":  # (client, description, amount) of the billable items from index FROM on
            conn.send([(int(i["clientid"]), str(i["description"]), str(i["amount"]))
                       for i in wh.billable_items[int(args[0]):]])
        elif cmd == "stop":
            cs.stop()
            wh.stop()
            conn.send(True)
            return


class Sandboxes:
    """The sandboxes in a child process (``target``: its loop, ``_sandbox_process`` or a variant taking
    ``extra`` arguments after the rate limit), driven by commands over a pipe."""

    def __init__(self, rate_limit: int, rate_period: float, *extra: Any, target: Any = None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target or _sandbox_process, args=(child, rate_limit, rate_period, *extra),
                                daemon=True)
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


class _Probe:
    """Round-trip times of the measured run, per upstream, for the simulator's parameters: every httpx
    ``send`` (ComputeStacks or WHMCS, by port; the clients pace before sending, so bucket waits are not in
    it), every DynamoDB call, every account's ``process_account``. Only while ``on``; this process only."""

    def __init__(self, cs_port: int, wh_port: int) -> None:
        self.ports = {cs_port: "cs", wh_port: "wh"}
        self.on = False
        self.times: dict[str, list[float]] = {"cs": [], "wh": [], "ddb": [], "account": [], "other": []}
        self._undo: list[Callable[[], None]] = []

    def install(self) -> _Probe:
        import botocore.client
        import httpx

        import cswhmcs.billing.run as run_module

        probe = self
        base_client = botocore.client.BaseClient
        send, api_call = httpx.Client.send, getattr(base_client, "_make_api_call")  # noqa: B009
        account = run_module.process_account

        def timed_send(client: Any, request: Any, *a: Any, **kw: Any) -> Any:
            if not probe.on:
                return send(client, request, *a, **kw)
            t0 = time.perf_counter()
            try:
                return send(client, request, *a, **kw)
            finally:
                probe.times[probe.ports.get(request.url.port, "other")].append(time.perf_counter() - t0)

        def timed_call(client: Any, *a: Any, **kw: Any) -> Any:
            if not probe.on:
                return api_call(client, *a, **kw)
            t0 = time.perf_counter()
            try:
                return api_call(client, *a, **kw)
            finally:
                probe.times["ddb"].append(time.perf_counter() - t0)

        def timed_account(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return account(*a, **kw)
            finally:
                if probe.on:
                    probe.times["account"].append(time.perf_counter() - t0)

        patches = [(httpx.Client, "send", timed_send, send), (base_client, "_make_api_call", timed_call, api_call),
                   (run_module, "process_account", timed_account, account)]
        for owner, name, new, _old in patches:
            setattr(owner, name, new)
        self._undo = [functools.partial(setattr, owner, name, old) for owner, name, _new, old in patches]
        return self

    def uninstall(self) -> None:
        for undo in self._undo:
            undo()

    def start(self) -> None:
        for v in self.times.values():
            v.clear()
        self.on = True

    def stop(self) -> dict[str, Any]:
        self.on = False
        out: dict[str, Any] = {}
        for kind, v in self.times.items():
            out[f"{kind}_n"] = len(v)
            out[f"{kind}_mean"] = statistics.fmean(v) if v else 0.0
        return out


def _tables(ddb: Any) -> dict[str, str]:
    from cswhmcs.local.template import Template, ensure_tables

    suffix = uuid.uuid4().hex[:8]
    names = {"ACCOUNTS_TABLE": f"bench-accounts-{suffix}", "LEDGER_TABLE": f"bench-ledger-{suffix}",
             "REPLAY_TABLE": f"bench-idem-{suffix}"}
    ensure_tables(Template(ROOT / "template.yaml"), ddb, names)
    return names


def _copy_tables(ddb: Any, resource: Any, base: dict[str, str]) -> dict[str, str]:
    """New tables holding what ``base``'s hold (a copy of a collected ledger is the state collecting again
    would give, in a fraction of the time)."""
    names = _tables(ddb)
    for key, source_name in base.items():
        source, target = resource.Table(source_name), resource.Table(names[key])
        with target.batch_writer() as batch:
            kwargs: dict[str, Any] = {}
            while True:
                page = source.scan(**kwargs)
                for item in page.get("Items", []):
                    batch.put_item(Item=item)
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return names


def _product_of(description: str) -> str:
    """The product name in one of our item descriptions ("Label (name): usage ..." or "name: usage ...")."""
    match = re.match(r"(.*?)(?: \((\w+)\))?: usage ", description)
    return (match.group(2) or match.group(1)) if match else description


def measure(n: int, *, endpoint: str, scale: float, latency: float, concurrency: int, repeats: int = 1,
            baseline: int = 0) -> dict[str, Any]:
    """One size: ``repeats`` measured month-ends (each on its own copy of the collected ledger), then the
    sequential baseline on ``baseline`` of the accounts (0: none), all against the same sandboxes."""
    import gc

    import boto3

    from bench.sequential import run_sequential
    from cswhmcs.billing.options import BillingOptions
    from cswhmcs.billing.run import build_runtime, run_billing
    from cswhmcs.config import Settings

    started = time.perf_counter()
    phases: dict[str, float] = {}  # seconds, by step
    last = started

    def phase(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - last
        last = now

    window = CS_WINDOW / scale
    sb = Sandboxes(CS_LIMIT, window)
    phase("sandboxes")
    probe: _Probe | None = None
    try:
        ddb = boto3.client("dynamodb", endpoint_url=endpoint)
        resource = boto3.resource("dynamodb", endpoint_url=endpoint)
        cs_url, cs_key, cs_secret = sb.info["cs"]
        wh_url, wh_id, wh_secret = sb.info["wh"]

        def settings(names: dict[str, str]) -> Any:
            return Settings.model_validate({
                "AWS_ENDPOINT_URL_DYNAMODB": endpoint, **names, "CS_API_URL": cs_url, "CS_API_KEY": cs_key,
                "CS_API_SECRET": cs_secret, "WHMCS_API_URL": wh_url, "WHMCS_API_IDENTIFIER": wh_id,
                "WHMCS_API_SECRET": wh_secret, "CS_TIMEOUT": 10, "WHMCS_TIMEOUT": 10})

        accounts = sb.call("accounts", n)
        if baseline:
            sb.call("link")
        phase("accounts")
        base = _tables(ddb)
        with resource.Table(base["ACCOUNTS_TABLE"]).batch_writer() as batch:
            for i, (uid, cid, email, cur) in enumerate(accounts):
                batch.put_item(Item={"service_id": 1000 + i, "cs_user_id": uid, "email": email, "client_id": cid,
                                     "currency": cur})

        # The month so far (one day stands in for it), collected by a daily run, unpaced and without latency.
        phase("tables")
        sb.call("usage", (COLLECT_AT - timedelta(days=1)).isoformat(), COLLECT_AT.isoformat())
        phase("usage")
        setup = build_runtime(settings(base), options=BillingOptions(cs_limit=10**8, whmcs_rate=10**6,
                                                                      whmcs_burst=1000, concurrency=32))
        collected = run_billing(as_of=COLLECT_AT, ledger=setup.ledger, accounts=setup.accounts, deps=setup.deps,
                                kind="collect", keep_lines=False)
        setup.close()
        if collected.failed:
            raise RuntimeError(f"the daily collection failed: {collected.failed[:3]}")
        phase("collection")
        copies = [base] + [_copy_tables(ddb, resource, base) for _ in range(max(1, repeats) - 1)]
        phase("copies")

        # The last day, then the measured month-end runs with the real (or scaled) budgets and latency.
        rows_last_day = sb.call("usage", COLLECT_AT.isoformat(), CUT_OFF.isoformat())
        sb.call("latency", latency)
        phase("usage")
        options = BillingOptions(cs_limit=CS_LIMIT, cs_window=window, cs_share=CS_SHARE,
                                 whmcs_rate=WHMCS_RATE * scale, concurrency=concurrency)
        probe = _Probe(int(urlsplit(cs_url).port or 0), int(urlsplit(wh_url).port or 0)).install()
        setup_s = time.perf_counter() - started
        runs = []
        for names in copies:
            sb.call("reset")
            items0 = sb.call("stats")["items"]
            rt = build_runtime(settings(names), options=options)
            gc.collect()
            rss0 = _rss_kb()
            exact_hwm = _reset_hwm()
            probe.start()
            t0 = time.perf_counter()
            summary = run_billing(as_of=CUT_OFF, ledger=rt.ledger, accounts=rt.accounts, deps=rt.deps,
                                  keep_lines=False)
            wall = time.perf_counter() - t0
            timings = probe.stop()
            hwm = _hwm_kb()
            rt.close()
            stats = sb.call("stats")
            runs.append(_run_row(n, scale=scale, latency=latency, concurrency=concurrency, options=options,
                                 wall=wall, stats=stats, items0=items0, summary=summary, rss0=rss0, hwm=hwm,
                                 exact_hwm=exact_hwm, timings=timings, rows_last_day=rows_last_day))
        probe.uninstall()
        probe = None
        phase("runs")

        seq: dict[str, Any] | None = None
        if baseline:
            step = max(1, n // baseline)
            sample = accounts[::step][:baseline]
            ours = {}  # (client, product) -> amount, from the first measured run's items
            first = runs[0]
            for cid, description, amount in sb.call("items", first["items_from"])[: first["items"]]:
                ours[(cid, _product_of(description))] = Decimal(amount)
            sb.call("reset")
            items0 = sb.call("stats")["items"]
            res = run_sequential(sb.info["cs"], sb.info["wh"], [a[0] for a in sample], period_start=MONTH_START,
                                 period_end=CUT_OFF)
            stats = sb.call("stats")
            expected = {k: v for k, v in ours.items() if k[0] in {a[1] for a in sample}}
            same = sum(1 for i in res.items if expected.get((i.client_id, i.product)) == Decimal(repr(i.total)))
            per_account = (res.wall - res.per_run) / max(1, len(sample))  # the run's own part counted once
            seq = {"sample": len(sample), "wall": res.wall, "per_account": per_account, "per_run": res.per_run,
                   "extrapolated": res.per_run + per_account * n, "records": res.records,
                   "cs_requests": res.cs_requests, "whmcs_requests": dict(res.whmcs_requests),
                   "items": len(res.items), "items_in_whmcs": stats["items"] - items0, "expected_items": len(expected),
                   "same_amounts": same, "errors": res.errors[:5], "error_count": len(res.errors),
                   "cs_429": stats["cs_429"], "peak_cs_window": peak_in_window(stats["cs_times"], window)}
            phase("baseline")
    finally:
        if probe is not None:
            probe.uninstall()
        sb.stop()
    return {"accounts": n, "scale": scale, "latency": latency, "concurrency": concurrency, "runs": runs,
            "baseline": seq, "setup_s": setup_s, "total_s": time.perf_counter() - started, "phases": phases}


def _run_row(n: int, *, scale: float, latency: float, concurrency: int, options: Any, wall: float,
             stats: dict[str, Any], items0: int, summary: Any, rss0: int, hwm: int, exact_hwm: bool,
             timings: dict[str, Any], rows_last_day: int) -> dict[str, Any]:
    window = CS_WINDOW / scale
    cs_req = len(stats["cs_times"])
    wh_req = stats["wh_requests"]
    # The same buckets as build_runtime: burst b, then (budget - b) per window.
    budget = CS_LIMIT * CS_SHARE
    burst = max(1, min(options.cs_burst, int(budget // 10)))
    bounds = {
        "ComputeStacks rate": max(0, cs_req - burst) / ((budget - burst) / window),
        "WHMCS rate": max(0, wh_req - options.whmcs_burst) / (WHMCS_RATE * scale),
        "latency x concurrency": (cs_req + wh_req) * latency / concurrency,
    }
    which, bound = max(bounds.items(), key=lambda kv: kv[1])
    return {
        "accounts": n, "scale": scale, "latency": latency, "concurrency": concurrency, "wall": wall,
        "accounts_per_s": n / wall, "bound": bound, "bound_by": which, "ratio": wall / bound if bound else 0.0,
        "cs_requests": cs_req, "whmcs_requests": wh_req, "peak_cs_window": peak_in_window(stats["cs_times"], window),
        "window": window, "budget_window": int(budget), "limit_window": CS_LIMIT, "cs_429": stats["cs_429"],
        "items": stats["items"] - items0, "items_from": items0, "items_to": stats["items"], "created": summary.items,
        "failed": len(summary.failed), "rows_last_day": rows_last_day, "rss_start_mb": rss0 / 1024,
        "rss_peak_mb": hwm / 1024, "rss_growth_mb": max(0, hwm - rss0) / 1024, "hwm_exact": exact_hwm,
        "cs_burst": options.cs_burst, "whmcs_burst": options.whmcs_burst, "probe": timings,
    }


# ---------------------------------------------------------------------- the simulator (bench/simulation.py)


def bench_run_params(run: dict[str, Any]) -> SimParams:
    """The simulator's parameters for one measured in-process run: its accounts, threads, shared buckets,
    limits, requests per account and the round-trip times measured during it."""
    n, probe = run["accounts"], run["probe"]
    return SimParams(
        accounts=n, workers=run["concurrency"], shared_buckets=True, batch=1, planner_msgs_per_s=1e12,
        cold_start=0.0, cs_requests_per_account=run["cs_requests"] / n,
        whmcs_requests_per_account=run["whmcs_requests"] / n, latency_cs=probe["cs_mean"] or run["latency"],
        latency_whmcs=probe["wh_mean"] or run["latency"], latency_ddb=probe["ddb_mean"],
        ddb_ops_per_account=probe["ddb_n"] / n, cs_limit=CS_LIMIT, cs_window=run["window"], cs_share=CS_SHARE,
        cs_burst=run["cs_burst"], whmcs_rate=WHMCS_RATE * run["scale"], whmcs_burst=run["whmcs_burst"])


def simulation_check(run: dict[str, Any]) -> dict[str, Any]:
    sim = simulate(bench_run_params(run))
    return {"simulated": sim["time_after_cutoff"], "measured": run["wall"],
            "error": abs(sim["time_after_cutoff"] - run["wall"]) / run["wall"], "bound_by": sim["bound_by"]}


# ---------------------------------------------------------------------- report


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def print_measured(sizes: list[dict[str, Any]]) -> None:
    print("\nMonth-end billing, real code (DynamoDB Local + sandboxes over HTTP, in-process runner; one row per run)")
    head = (f"{'accounts':>8} {'CS limit':>16} {'lat ms':>6} {'C':>3} {'wall s':>8} {'acct/s':>7} "
            f"{'bound s':>8} {'bound by':>22} {'ratio':>6} {'CS req':>7} {'peak CS/window':>15} {'429':>4} "
            f"{'WHMCS':>6} {'items':>6} {'RSS MB':>7} {'run +MB':>7} {'sim s':>7} {'err':>6}")
    print(head)
    print("-" * len(head))
    for size in sizes:
        for r in size["runs"]:
            limit = f"{r['limit_window']}/{r['window']:.0f}s" + (f" x{r['scale']:g}" if r["scale"] != 1 else "")
            check = simulation_check(r)
            print(f"{r['accounts']:>8} {limit:>16} {r['latency'] * 1000:>6.0f} {r['concurrency']:>3} {r['wall']:>8.1f} "
                  f"{r['accounts_per_s']:>7.1f} {r['bound']:>8.1f} {r['bound_by']:>22} {r['ratio']:>6.2f} "
                  f"{r['cs_requests']:>7} {r['peak_cs_window']:>7}/{r['budget_window']:<7} {r['cs_429']:>4} "
                  f"{r['whmcs_requests']:>6} {r['items']:>6} {r['rss_peak_mb']:>7.1f} {r['rss_growth_mb']:>7.1f} "
                  f"{check['simulated']:>7.1f} {check['error']:>6.3f}")
    print("  bound = the largest of: CS requests / billing's CS budget (80 % of 2,500 per window), WHMCS "
          "requests / 30 per s,\n  and (CS + WHMCS requests) x latency / concurrency. 'x10': every limit "
          "scaled up 10 times (a 30-s window) so the run is short.\n  RSS MB: peak resident memory of the "
          "billing process; run +MB: its growth during the measured run (sandboxes run elsewhere).\n"
          "  sim s / err: the simulator given this run's parameters and measured round trips; |sim - wall| / wall.")
    for size in sizes:
        r = size["runs"][-1]
        p = r["probe"]
        n = r["accounts"]
        nominal = simulate(replace(bench_run_params(r), latency_cs=r["latency"], latency_whmcs=r["latency"],
                                   latency_ddb=SimParams.latency_ddb))["time_after_cutoff"]
        steps = ", ".join(f"{k} {v:.0f}" for k, v in size.get("phases", {}).items())  # seconds per step
        print(f"  {n} x{r['scale']:g}: per account {1000 * p['account_mean']:.0f} ms in process_account; round trips "
              f"CS {1000 * p['cs_mean']:.1f} ms x {p['cs_n'] / n:.2f}, WHMCS {1000 * p['wh_mean']:.1f} ms x "
              f"{p['wh_n'] / n:.2f}, DynamoDB {1000 * p['ddb_mean']:.1f} ms x {p['ddb_n'] / n:.1f}; "
              f"setup {size['setup_s']:.0f} s, all {size['total_s']:.0f} s ({steps});\n    with nominal round trips "
              f"({1000 * r['latency']:.0f} ms, DynamoDB {1000 * SimParams.latency_ddb:.0f} ms) the simulator gives "
              f"{nominal:.1f} s: the rest is this machine")


def print_baseline(size: dict[str, Any]) -> None:
    b = size["baseline"]
    if not b:
        return
    n = size["accounts"]
    ours = statistics.median(r["wall"] for r in size["runs"])
    wh = ", ".join(f"{k} {v}" for k, v in sorted(b["whmcs_requests"].items()))
    print(f"\nSequential baseline (bench/sequential.py: whmcs-ruby's algorithm), same sandboxes and limits as the "
          f"{n}-account run (x{size['scale']:g}, {size['latency'] * 1000:.0f} ms)")
    print(f"  {b['sample']} of {n} accounts in {b['wall']:.1f} s ({1000 * b['per_account']:.0f} ms per account): "
          f"{b['cs_requests']} CS requests ({b['cs_429']} x 429, peak {b['peak_cs_window']} per window), WHMCS {wh}; "
          f"{b['items']} items ({b['same_amounts']} with the same amount as ours, {b['expected_items']} expected), "
          f"{b['error_count']} errors")
    print(f"  for all {n}: {b['extrapolated']:.0f} s ({hms(b['extrapolated'])}) vs ours {ours:.1f} s (median): "
          f"{b['extrapolated'] / ours:.1f} x")


def print_simulated(rows: list[tuple[str, dict[str, Any]]]) -> None:
    print_table(
        "\nSimulation: 100,000 accounts, month-end after the cut-off (50 ms latencies), today's design",
        f"{'scenario':<50} {'CS_RATE_LIMIT':>13} {'C':>3} {'CS req':>8} {'after cut-off':>13} {'bound':>9} "
        f"{'ratio':>6} {'peak CS/300s':>14} {'WHMCS peak/s':>12}",
        (f"{name:<50} {r['cs_limit']:>13,} {r['workers']:>3} {r['cs_requests']:>8} "
         f"{hms(r['time_after_cutoff']):>13} {hms(r['bound']):>9} {r['ratio']:>6.3f} "
         f"{r['peak_cs_window']:>6}/{r['cs_limit']:<7,} {r['peak_whmcs_per_s']:>12}" for name, r in rows),
        "  bound = the largest of CS requests / 80 % of CS_RATE_LIMIT per 300 s, WHMCS requests / 30 per s and "
        "latency x requests / C;\n  every account is read once after the cut-off (the daily collection read the "
        "month so far).",
    )


# ---------------------------------------------------------------------- the workers' shared window


def measure_window(endpoint: str, *, requests: int = 450, budget: int = 100, window: float = 10.0,
                   workers: int = 8, latency: float = 0.05) -> dict[str, Any]:
    """The Lambda workers' pacer (``SharedWindow``) measured against DynamoDB Local: ``workers`` threads, each
    with its own SharedWindow on one table (as Lambda environments each have theirs), take ``requests`` tokens
    in all, each followed by ``latency`` s of "request"; then the model the 100k figures use
    (``bench.simulation._Window``) is given the same parameters and the measured cost of a take, and compared."""
    import heapq
    import threading

    import boto3

    from bench.simulation import _Window, peak_in_window
    from cswhmcs.adapters.pacing import SharedWindow

    local = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "bench",
             "aws_secret_access_key": "bench"}  # DynamoDB Local takes any; this process may have none
    client = boto3.client("dynamodb", **local)
    name = f"bench-window-{os.getpid()}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    table = boto3.resource("dynamodb", **local).Table(name)
    pacers = [SharedWindow(table, budget, window=window) for _ in range(workers)]
    lock = threading.Lock()
    left = [requests]
    grants: list[float] = []
    takes: list[float] = []  # how long a take lasted when it did not wait

    def work(pacer: SharedWindow) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            asked = time.time()
            waited = pacer.acquire(max_wait=10 * window)
            now = time.time()
            with lock:
                grants.append(now)
                if not waited:
                    takes.append(now - asked)
            time.sleep(latency)

    started = time.time()
    threads = [threading.Thread(target=work, args=(p,)) for p in pacers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.time() - started
    client.delete_table(TableName=name)
    take = float(statistics.median(takes)) if takes else 0.0
    # The model: the same workers, each take costing `take` before its grant, then `latency`.
    model, heap, remaining, end = _Window(budget, window), [(started, w) for w in range(workers)], requests, started
    heapq.heapify(heap)
    while heap and remaining:
        t, w = heapq.heappop(heap)
        remaining -= 1
        t = model.take(t + take) + latency
        end = max(end, t)
        heapq.heappush(heap, (t, w))
    simulated = end - started
    return {"requests": requests, "budget": budget, "window": window, "workers": workers, "latency": latency,
            "wall": wall, "simulated": simulated, "error": abs(simulated - wall) / wall if wall else 0.0,
            "peak": peak_in_window(grants, window), "take_ms": take * 1000,
            "reads": sum(p.reads for p in pacers), "writes": sum(p.writes for p in pacers),
            "refused": sum(p.refused for p in pacers)}


def print_window(w: dict[str, Any]) -> None:
    print(f"\nThe workers' shared window (SharedWindow) on DynamoDB Local: {w['workers']} processes' windows on one "
          f"item, budget {w['budget']} per {w['window']:g} s, {w['requests']} requests of {w['latency'] * 1000:g} ms")
    print(f"  measured {w['wall']:.1f} s, the model (bench/simulation.py _Window) {w['simulated']:.1f} s: error "
          f"{w['error']:.3f}; peak {w['peak']} in any {w['window']:g} s (budget {w['budget']}); a take "
          f"{w['take_ms']:.1f} ms; {w['writes']} writes, {w['reads']} reads, {w['refused']} refused")


# ---------------------------------------------------------------------- figures


def _med(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def figures(plan: dict[str, dict[str, Any]], sims: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    from bench.results import figure

    out: list[dict[str, Any]] = []

    def add(name: str, value: float, unit: str, *, at_most: bool = True, ok: bool = True) -> None:
        target = TARGETS[name]
        passed = ok and (value <= target if at_most else value >= target)
        out.append(figure(name, value, unit, reference=target, target=f"{'<=' if at_most else '>='} {target:g}",
                          passed=passed))

    small_real, small, large = plan.get("small_real"), plan.get("small"), plan.get("large")
    if small_real:
        runs = small_real["runs"]
        add("billing_bound_ratio_200", round(_med(r["ratio"] for r in runs), 4), "x",
            ok=all(not r["failed"] and not r["cs_429"] for r in runs))
    if large:
        runs = large["runs"]
        wall = _med(r["wall"] for r in runs)
        add("billing_bound_ratio_2000", round(_med(r["ratio"] for r in runs), 4), "x",
            ok=all(not r["failed"] and not r["cs_429"] for r in runs))
        b = large["baseline"]
        if b:
            valid = not b["error_count"] and not b["cs_429"] and b["items"] == b["expected_items"]
            # Reported: the binding figure is the README's configuration, the receiver path (bench_receiver).
            out.append(figure("billing_speedup_vs_sequential_api", round(b["extrapolated"] / wall, 2), "x",
                              reference=SPEEDUP_TARGET, target="reported", passed=valid))
        ref = small or small_real
        if ref:
            add("billing_rss_growth", round(_med(r["rss_peak_mb"] for r in runs) /
                                            _med(r["rss_peak_mb"] for r in ref["runs"]), 4), "x")
        add("simulation_error", round(_med(simulation_check(r)["error"] for r in runs), 4), "fraction")
    win = plan.get("window")
    if win:
        add("window_simulation_error", round(win["error"], 4), "fraction", ok=win["peak"] <= win["budget"])
    if sims:
        default, safelisted = sims[CS_LIMIT], sims[SAFELISTED_LIMIT]
        add("month_end_minutes_100k", round(default["time_after_cutoff"] / 60, 1), "min")
        add("month_end_minutes_100k_safelisted", round(safelisted["time_after_cutoff"] / 60, 1), "min")
        add("peak_cs_requests_per_5min", round(max(s["peak_cs_window"] / s["cs_limit"] for s in sims.values()), 4),
            "of CS_RATE_LIMIT")
    return sorted(out, key=lambda f: ORDER.index(f["name"]))


# ---------------------------------------------------------------------- main


def _child(n: int, scale: float, *, args: argparse.Namespace, endpoint: str, env: dict[str, str], repeats: int,
           baseline: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_billing", "--one", str(n), "--scale", str(scale), "--latency",
           str(args.latency), "--concurrency", str(args.concurrency), "--endpoint", endpoint, "--repeats",
           str(repeats), "--baseline", str(baseline)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {n} accounts (x{scale:g}) failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench billing", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="100 and 500 accounts, one run each, baseline on 25")
    ap.add_argument("--sizes", help="small,large account counts (default 200,2000)")
    ap.add_argument("--scale", type=float, default=10.0, help="limit scale for the scaled runs (1 = real)")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeats", type=int, help="measured runs per size (the median is reported; default 2)")
    ap.add_argument("--baseline", type=int, help="accounts the sequential baseline bills (default 100)")
    ap.add_argument("--full", action="store_true", help="also the large size at the real limit (2,000: ~5 min) "
                                                        "and the baseline on every account (~9 min)")
    ap.add_argument("--sim-only", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/results.json")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:  # a child: one size, JSON on stdout
        print(json.dumps(measure(args.one, endpoint=args.endpoint, scale=args.scale, latency=args.latency,
                                 concurrency=args.concurrency, repeats=args.repeats or 1,
                                 baseline=args.baseline or 0)))
        return 0

    started = time.perf_counter()
    for p in (str(ROOT), str(ROOT / "layers/shared")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from bench.results import markdown, merge

    sizes = [int(s) for s in (args.sizes or ("100,500" if args.quick else "200,2000")).split(",") if s.strip()]
    small_n, large_n = sizes[0], sizes[-1]
    # the bound-ratio runs at the real limit: paced by the ComputeStacks bucket, they vary by < 1 % (29.2-29.3 s)
    real_repeats = args.repeats or (1 if args.quick else 2)
    small_repeats = args.repeats or (1 if args.quick else 2)  # only the reference of billing_rss_growth
    large_repeats = args.repeats or (1 if args.quick else 2)
    baseline = large_n if args.full else (args.baseline if args.baseline is not None else (25 if args.quick else 100))

    sim_rows = run_simulations(CS_LIMIT) + run_simulations(SAFELISTED_LIMIT)[:2]  # the old design, for comparison
    close_rows = run_close_simulations(CS_LIMIT) + run_close_simulations(SAFELISTED_LIMIT)
    sims = {CS_LIMIT: close_rows[0][1], SAFELISTED_LIMIT: close_rows[len(close_rows) // 2][1]}
    plan: dict[str, dict[str, Any]] = {}
    if not args.sim_only:
        from sandboxes.dynamodb_local import DynamoDBLocal

        steps = [("small_real", small_n, 1.0, real_repeats, 0), ("small", small_n, args.scale, small_repeats, 0),
                 ("large", large_n, args.scale, large_repeats, min(baseline, large_n))]
        if args.full:
            steps.append(("large_real", large_n, 1.0, 1, 0))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "WARNING",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers/shared"),
                                              os.environ.get("PYTHONPATH", "")])}
        with DynamoDBLocal() as db:
            for key, n, scale, repeats, base in steps:
                print(f"... measuring {n} accounts (limit x{scale:g}), {repeats} run(s)"
                      + (f", then the sequential baseline on {base}" if base else "")
                      + f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
                try:
                    plan[key] = _child(n, scale, args=args, endpoint=db.endpoint, env=env, repeats=repeats,
                                       baseline=base)
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 1
            print(f"... the workers' shared window ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)
            window = measure_window(db.endpoint, requests=250 if args.quick else 450)
        print_measured(list(plan.values()))
        print_window(window)
        plan["window"] = window
        if "large" in plan:
            print_baseline(plan["large"])
    print_simulated(sim_rows)
    print_close_simulated(close_rows)
    figs = figures(plan, sims)
    print()
    print(markdown(figs))
    if not args.no_write:
        merge(figs)
        print("\n(figures merged into bench/results.json)")
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": plan, "simulated": dict(sim_rows),
                                               "simulated_close": dict(close_rows)}, indent=2, default=str))
    print(f"\nbench billing: {time.perf_counter() - started:.0f} s wall"
          + (" (quick: sizes " + ",".join(map(str, sizes)) + ")" if args.quick else ""))
    return 0 if all(f["pass"] for f in figs) else 1


if __name__ == "__main__":
    sys.exit(main())
