"""Discrete-event models of the month-end billing runs (100,000 accounts), used by ``bench/bench_billing.py``.

* ``simulate``: today's design, every account read and billed after the cut-off (moved here unchanged;
  ``simulation_check`` in bench_billing compares it with the real code);
* ``simulate_close``: the issue-10 design: a "close" run from 21:20 (``close_lead`` before the cut-off C =
  23:00) reads every account once after ComputeStacks' 21:20 collection, then the month-end bill run at C
  bills the accounts already read without any ComputeStacks request and reads only the others.

t = 0 is the cut-off in both. ``month_end(cs_limit, **overrides)`` is the figures' scenario (the new design
at the template's defaults); ``month_end(cs_limit, model=simulate)`` is today's design at the same defaults.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

CS_LIMIT, CS_WINDOW, CS_SHARE = 2500, 300.0, 0.8
SAFELISTED_LIMIT = 10_000
WHMCS_RATE = 30.0
RECEIVER_REQUESTS_PER_LINE = 0.05  # the receiver's target (measured: bench receiver's whmcs_requests_per_line)
LINES_PER_ACCOUNT = 2
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def peak_in_window(times: Iterable[float], window: float) -> int:
    """The most ``times`` in any interval (t - window, t] (a sliding window)."""
    ts = sorted(times)
    best = j = 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@dataclass(frozen=True)
class SimParams:
    accounts: int = 100_000
    workers: int = 4  # SQS event source MaximumConcurrency (in-process: threads)
    cs_requests_per_account: float = 1.0
    whmcs_requests_per_account: float = 3.0  # GetClientsDetails + ~2 AddBillableItem (API path)
    latency_cs: float = 0.05
    latency_whmcs: float = 0.05
    latency_ddb: float = 0.005
    ddb_ops_per_account: float = 8.0
    cs_limit: int = CS_LIMIT  # CS_RATE_LIMIT: requests per window ComputeStacks allows the backend
    cs_window: float = CS_WINDOW
    cs_share: float = CS_SHARE
    cs_burst: int = 10  # the in-process run's one bucket
    cs_worker_burst: int = 1  # cs_pacer "buckets": each Lambda worker's own bucket (the pacer until 2026-12-03)
    whmcs_rate: float = WHMCS_RATE
    whmcs_burst: int = 5
    batch: int = 10  # SQS BatchSize (in-process: 1)
    planner_msgs_per_s: float = 3200.0  # 8 threads x SendMessageBatch(10) / 25 ms
    cold_start: float = 1.0
    # In-process (build_runtime): one ComputeStacks and one WHMCS bucket for all threads; on AWS (False) each
    # worker has its own WHMCS share, and ComputeStacks as ``cs_pacer`` says.
    shared_buckets: bool = False
    # simulate_close on AWS (shared_buckets False): "window", the workers' one SharedWindow in the ledger table
    # (cswhmcs.adapters.pacing; one conditional write per request, ``pacer_ddb_ops``), or "buckets", a token
    # bucket of 1/workers of the budget per worker (burst cs_worker_burst), the pacer until 2026-12-03.
    cs_pacer: str = "window"
    pacer_ddb_ops: float = 1.0
    # ---- only simulate_close (the close run + the bill run; simulate ignores these) ----
    close_lead: float = 100 * 60.0  # the close run starts this long before the cut-off (21:20)
    collection_before_cutoff: float = 100 * 60.0  # ComputeStacks' collection (21:20) starts committing rows
    commit_spread: float = 0.0  # each account's rows are committed at a uniform time within this spread
    ddb_ops_close: float = 2.0  # DynamoDB calls of a read (the state read, the collection's write)
    ddb_ops_bill: float = 2.0  # then billing it through the receiver: claim + mark in one write, one finish
    ddb_ops_skip: float = 1.0  # a close message finding its account already read for C
    batch_window: float = 5.0  # MaximumBatchingWindowInSeconds: a batch closes when full or after this


class _Bucket:
    """The token bucket of cswhmcs.adapters.pacing as a reservation schedule (GCRA), so that requests may
    arrive in any order: burst ``burst``, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (max(1, burst) - 1) * self.interval
        self.tat = 0.0

    def take(self, t: float) -> float:
        """The time a request that is ready at ``t`` may go."""
        go = max(t, self.tat - self.tolerance)
        self.tat = max(self.tat, go) + self.interval
        return go


class _Window:
    """``SharedWindow`` as a schedule: a request counts in a whole second, and goes in the first second from
    which the window's ``span + 1`` seconds (any 300 s interval touches 301) hold fewer than ``budget``. A
    request ready before the newest counted second counts in that one (as the pacer writes into the item's
    newest second) and goes then."""

    def __init__(self, budget: float, window: float) -> None:
        self.budget = max(1, int(budget))
        self.span = math.ceil(window)
        self.slots: deque[list[int]] = deque()  # [second, count], oldest first
        self.total = 0

    def take(self, t: float) -> float:
        second = math.floor(t)
        if self.slots and self.slots[-1][0] > second:
            second = self.slots[-1][0]
        while True:
            while self.slots and self.slots[0][0] < second - self.span:
                self.total -= self.slots.popleft()[1]
            if self.total + 1 <= self.budget:
                if self.slots and self.slots[-1][0] == second:
                    self.slots[-1][1] += 1
                else:
                    self.slots.append([second, 1])
                self.total += 1
                return max(t, float(second))
            free, total = second + 1, self.total
            for j, n in self.slots:  # the oldest seconds leave the window one by one
                if total + 1 <= self.budget:
                    break
                total -= n
                free = j + self.span + 1
            second = max(second + 1, free)


def _spread(i: int, per: float) -> int:
    """How many of ``per`` requests per account (on average) account ``i`` makes: spread evenly."""
    return math.floor((i + 1) * per + 1e-9) - math.floor(i * per + 1e-9)


def simulate(p: SimParams) -> dict[str, Any]:
    """Discrete-event model of one month-end run; t = 0 is the cut-off (the Scheduler's time). Each worker
    takes a batch when free (once the planner has enqueued it) and works its accounts one by one: the
    ComputeStacks reads, the WHMCS requests, then the DynamoDB calls; every request waits for its bucket."""
    budget = p.cs_limit * p.cs_share
    if p.shared_buckets:
        burst = max(1, min(p.cs_burst, int(budget // 10)))
        cs_buckets = [_Bucket(max(1e-9, (budget - burst) / p.cs_window), burst)]
        wh_buckets = [_Bucket(p.whmcs_rate, p.whmcs_burst)]
    else:
        share = budget / p.workers
        burst = max(1, min(p.cs_burst, int(share // 10)))
        wh_rate = p.whmcs_rate / p.workers
        cs_buckets = [_Bucket(max(1e-9, (share - burst) / p.cs_window), burst) for _ in range(p.workers)]
        wh_buckets = [_Bucket(wh_rate, max(1, min(p.whmcs_burst, math.ceil(wh_rate)))) for _ in range(p.workers)]
    ddb_time = p.ddb_ops_per_account * p.latency_ddb
    heap = [(p.cold_start, w) for w in range(p.workers)]
    heapq.heapify(heap)
    steps: list[list[int]] = [[] for _ in range(p.workers)]  # 0: ComputeStacks, 1: WHMCS, 2: DynamoDB
    pos = [0] * p.workers
    cs_times: list[float] = []
    wh_times: list[float] = []
    next_account, done_at = 0, 0.0
    while heap:
        t, w = heapq.heappop(heap)
        if pos[w] < len(steps[w]):
            kind = steps[w][pos[w]]
            pos[w] += 1
            if kind == 0:
                t = cs_buckets[0 if p.shared_buckets else w].take(t)
                cs_times.append(t)
                t += p.latency_cs
            elif kind == 1:
                t = wh_buckets[0 if p.shared_buckets else w].take(t)
                wh_times.append(t)
                t += p.latency_whmcs
            else:
                t += ddb_time
            done_at = max(done_at, t)
            heapq.heappush(heap, (t, w))
            continue
        if next_account >= p.accounts:
            continue  # this worker is done
        first, last = next_account, min(next_account + p.batch, p.accounts)
        next_account = last
        t = max(t, last / p.planner_msgs_per_s)  # the batch must have been enqueued
        work: list[int] = []
        for i in range(first, last):
            work += [0] * _spread(i, p.cs_requests_per_account) + [1] * _spread(i, p.whmcs_requests_per_account) + [2]
        steps[w], pos[w] = work, 0
        heapq.heappush(heap, (t, w))
    bounds = {
        "ComputeStacks rate": p.accounts * p.cs_requests_per_account / (budget / p.cs_window),
        "WHMCS rate": p.accounts * p.whmcs_requests_per_account / p.whmcs_rate,
        "latency x concurrency": p.accounts * (p.cs_requests_per_account * p.latency_cs
                                               + p.whmcs_requests_per_account * p.latency_whmcs + ddb_time) / p.workers,
    }
    which, bound = max(bounds.items(), key=lambda kv: kv[1])
    return {"accounts": p.accounts, "workers": p.workers, "cs_per_account": p.cs_requests_per_account,
            "cs_limit": p.cs_limit, "time_after_cutoff": done_at, "bound": bound, "bound_by": which,
            "ratio": done_at / bound if bound else 0.0, "peak_cs_window": peak_in_window(cs_times, p.cs_window),
            "peak_whmcs_per_s": peak_in_window(wh_times, 1.0), "cs_requests": len(cs_times),
            "whmcs_requests": len(wh_times), "planner_s": p.accounts / p.planner_msgs_per_s}


_UNREAD, _INCOMPLETE, _READ = 0, 1, 2


def _buckets(p: SimParams) -> tuple[list[Any], list[_Bucket], int, int]:
    """The ComputeStacks pacers and WHMCS buckets as the code builds them, and their total bursts: in-process
    (``shared_buckets``) one bucket each, as ``simulate``; on AWS the workers' one ``SharedWindow`` (the same
    object for every worker; its burst is the whole budget) or, ``cs_pacer="buckets"``, a bucket per worker."""
    budget = p.cs_limit * p.cs_share
    if p.shared_buckets:
        burst = max(1, min(p.cs_burst, int(budget // 10)))
        return ([_Bucket(max(1e-9, (budget - burst) / p.cs_window), burst)],
                [_Bucket(p.whmcs_rate, p.whmcs_burst)], burst, max(1, p.whmcs_burst))
    wh_rate = p.whmcs_rate / p.workers
    wh_burst = max(1, min(p.whmcs_burst, math.ceil(wh_rate)))
    whmcs = [_Bucket(wh_rate, wh_burst) for _ in range(p.workers)]
    if p.cs_pacer == "window":
        window = _Window(budget, p.cs_window)
        return [window] * p.workers, whmcs, window.budget, wh_burst * p.workers
    share = budget / p.workers
    burst = max(1, min(p.cs_worker_burst, int(share // 10)))
    return ([_Bucket(max(1e-9, (share - burst) / p.cs_window), burst) for _ in range(p.workers)],
            whmcs, burst * p.workers, wh_burst * p.workers)


def commit_time(p: SimParams, account: int) -> float:
    """When ComputeStacks has committed ``account``'s rows of its 21:20 collection: uniform (a golden-ratio
    sequence, so every run of consecutive accounts is spread evenly) over ``commit_spread``."""
    return -p.collection_before_cutoff + p.commit_spread * ((account * GOLDEN) % 1.0)


def simulate_close(p: SimParams) -> dict[str, Any]:
    """Discrete-event model of the issue-10 month-end: the close run, then the bill run; t = 0 is the cut-off C.

    * ComputeStacks' collection commits each account's rows at ``commit_time`` (from
      ``-collection_before_cutoff``, uniform over ``commit_spread``).
    * The close run's planner enqueues N close messages from ``-close_lead`` at ``planner_msgs_per_s``; at
      C the bill run's planner enqueues N bill messages behind whatever remains (one FIFO queue, the same
      ``workers`` and the same pacers, built by ``_buckets``). A free worker takes the next
      ``batch`` messages once enqueued (or fewer, ``batch_window`` after the first one is); it works them
      one by one, first waking ``cold_start`` after ``-close_lead``.
    * Close message: an unread account is read (``cs_requests_per_account`` ComputeStacks requests through
      the worker's bucket, then ``ddb_ops_close`` DynamoDB calls); the read is *incomplete* if it went before
      the account's commit time (the bill message reads it again). An account already read for C (by its
      bill message) costs ``ddb_ops_skip`` DynamoDB calls and no request.
    * Bill message: an account not read completely is read first (as above); then ``ddb_ops_bill``
      DynamoDB calls and ``whmcs_requests_per_account`` WHMCS requests (spread evenly, WHMCS bucket).
      An account counts as read once a complete read is done: a message meeting another worker's read
      still in flight reads too (``duplicate_reads``; the worker checks the ledger before its bucket wait).
    * Done (``time_after_cutoff``) = when the last account is billed.

    Bound, with r = cs_limit x cs_share / cs_window (the budget per second), q = cs_requests_per_account,
    T = close_lead - cold_start (from the first possible read to C), B = the workers' total burst,
    fit = min(N q, max(r T, B + (r cs_window - B) T / cs_window)) (the most requests that fit before C),
    I = incomplete accounts (simulated), R = max(I, N + I - fit / q) (reads after C, at least):

      max( CS:      max(0, (N + I) q - fit, I q - B) / r  (buckets); with the window (B = the budget):
                    -close_lead + cold_start + (ceil((N + I) q / B) - 1) x (cs_window + 1)
                    + the last window's requests x (latency_cs + pacer_ddb_ops latency_ddb + ...) / workers,
           WHMCS:   max(0, N x whmcs_requests_per_account - W) / whmcs_rate  (W: the workers' WHMCS burst),
           latency: (R (q latency_cs + ddb_ops_close latency_ddb)
                     + N (ddb_ops_bill latency_ddb + whmcs_requests_per_account latency_whmcs)) / workers ).

    Bill messages queue behind the remaining close messages, so the bill work (WHMCS) mostly follows the
    last read instead of overlapping it: ``ratio`` shows that cost.
    """
    n, nw = p.accounts, p.workers
    budget = p.cs_limit * p.cs_share
    cs_buckets, wh_buckets, total_burst, wh_burst = _buckets(p)
    for b in cs_buckets + wh_buckets:
        if isinstance(b, _Bucket):  # a window starts empty by itself
            b.tat = -math.inf  # full at the close run's start (simulate's buckets start full at t = 0)
    shared = p.shared_buckets
    windowed = not shared and p.cs_pacer == "window"
    lat_ddb = p.latency_ddb
    pacer_lat = p.pacer_ddb_ops * lat_ddb if windowed else 0.0  # SharedWindow's write before each request
    close_ddb, bill_ddb, skip_ddb = p.ddb_ops_close * lat_ddb, p.ddb_ops_bill * lat_ddb, p.ddb_ops_skip * lat_ddb
    lat_cs, lat_wh = p.latency_cs, p.latency_whmcs
    cs_pa, wh_pa = p.cs_requests_per_account, p.whmcs_requests_per_account
    # The queue: messages 0..n-1 are close messages (account k), n..2n-1 bill messages (account k - n).
    rate = p.planner_msgs_per_s
    start = -p.close_lead
    enq = [start + (k + 1) / rate for k in range(n)]
    bill_start = max(0.0, enq[-1]) if n else 0.0
    enq += [bill_start + (k + 1) / rate for k in range(n)]
    total = 2 * n
    state = bytearray(n)
    billed = bytearray(n)
    closes_billed = bill_skipped = 0
    ready = [0.0] * n  # when an account's (last) read is done
    cs_times: list[float] = []
    wh_times: list[float] = []
    head = 0
    batch_end = [0] * nw
    batch_pos = [0] * nw
    heap = [(start + p.cold_start, w) for w in range(nw)]
    heapq.heapify(heap)
    done_at = last_read_at = 0.0
    read_before = incomplete = rereads = reads_by_bill = skipped = duplicates = 0
    def read(a: int, cs: Any, t: float) -> tuple[float, float]:
        """Account ``a`` read from ``t`` through bucket ``cs``: (when its last request went, when the read is
        done: the requests, then the DynamoDB calls)."""
        go = t
        for _ in range(_spread(a, cs_pa)):
            go = cs.take(t)
            cs_times.append(go)
            t = go + pacer_lat + lat_cs
        return go, t + close_ddb

    def bill(a: int, w: int, t: float) -> float:
        """Account ``a`` billed by worker ``w`` from ``t``: its DynamoDB calls, then its WHMCS requests."""
        billed[a] = 1
        t += bill_ddb
        wh = wh_buckets[0 if shared else w]
        for _ in range(_spread(a, wh_pa)):
            go = wh.take(t)
            wh_times.append(go)
            t = go + lat_wh
        return t

    while heap:
        t, w = heapq.heappop(heap)
        k = batch_pos[w]
        if k >= batch_end[w]:  # take the next batch
            if head >= total:
                continue  # this worker is done
            first_at = max(t, enq[head])
            full = min(head + p.batch, total)
            closes = min(max(first_at, enq[full - 1]), first_at + p.batch_window)
            end = bisect_right(enq, closes, head, full)
            batch_pos[w], batch_end[w] = head, end
            head = end
            heapq.heappush(heap, (closes, w))
            continue
        batch_pos[w] = k + 1
        cs = cs_buckets[0 if shared else w]
        # An account is read for C once a complete read is *done* (ready <= t): like the worker, which checks
        # the ledger first and then waits for its bucket, a message meeting a read still in flight reads too.
        if k < n:  # a close message
            a = k
            if billed[a]:
                t += skip_ddb
                skipped += 1
            elif state[a] == _READ and ready[a] <= t:
                t += skip_ddb if t < 0 else 0.0  # before the cut-off: nothing to do; after it: bills below
                skipped += t < 0
            else:
                go, t = read(a, cs, t)
                last_read_at = max(last_read_at, t)
                if state[a] == _READ:  # the bill message's read, in flight
                    duplicates += 1
                    ready[a] = min(ready[a], t)
                else:
                    ready[a] = t
                    if go < 0:
                        read_before += 1
                    if go < commit_time(p, a):
                        state[a] = _INCOMPLETE
                        incomplete += 1
                    else:
                        state[a] = _READ
            if t >= 0 and state[a] == _READ and not billed[a]:
                # Reached at or after the cut-off, a close message bills as the bill message would.
                closes_billed += 1
                t = bill(a, w, t)
                done_at = max(done_at, t)
        elif billed[k - n]:  # a bill message for an account its close message billed
            t += skip_ddb
            bill_skipped += 1
        else:  # a bill message
            a = k - n
            if not (state[a] == _READ and ready[a] <= t):
                was = state[a]
                if was == _INCOMPLETE:
                    rereads += 1
                elif was == _READ:
                    duplicates += 1
                reads_by_bill += 1
                _, t = read(a, cs, t)
                last_read_at = max(last_read_at, t)
                state[a], ready[a] = _READ, (min(ready[a], t) if was == _READ else t)
            t = bill(a, w, t)
            done_at = max(done_at, t)
        heapq.heappush(heap, (t, w))

    r = budget / p.cs_window
    span = max(0.0, p.close_lead - p.cold_start)
    fit = min(n * cs_pa, max(r * span, total_burst + (budget - total_burst) * span / p.cs_window))
    reads_after = max(float(incomplete), n + incomplete - fit / cs_pa) if cs_pa else 0.0
    cs_bound = max(0.0, (n + incomplete) * cs_pa - fit, incomplete * cs_pa - total_burst) / r
    if windowed:
        # The window gives the whole budget B at once, then B per cycle of 301 s (the slots a 300 s interval
        # touches): the last of ceil(requests / B) windows opens (windows - 1) cycles after the first read,
        # and its requests take the workers' time at latency.
        cycle = math.ceil(p.cs_window) + 1
        requests = (n + incomplete) * cs_pa
        windows = max(1, math.ceil(requests / total_burst))
        last = requests - (windows - 1) * total_burst
        per_request = (lat_cs + pacer_lat) + close_ddb / max(cs_pa, 1e-9)
        cs_bound = max(0.0, start + p.cold_start + (windows - 1) * cycle + last * per_request / nw)
        fit = min(float(requests), total_burst * float(math.floor(span / cycle) + 1))
        reads_after = max(float(incomplete), n + incomplete - fit / cs_pa) if cs_pa else 0.0
    bounds = {
        "ComputeStacks rate": cs_bound,
        "WHMCS rate": max(0.0, n * wh_pa - wh_burst) / p.whmcs_rate,
        "latency x concurrency": (reads_after * (cs_pa * lat_cs + close_ddb)
                                  + n * (bill_ddb + wh_pa * lat_wh)) / nw,
    }
    which, bound = max(bounds.items(), key=lambda kv: kv[1])
    return {"accounts": n, "workers": nw, "cs_per_account": cs_pa, "cs_limit": p.cs_limit,
            "cs_pacer": "window" if windowed else ("one bucket" if shared else "bucket per worker"),
            "time_after_cutoff": done_at, "bound": bound, "bound_by": which,
            "ratio": done_at / bound if bound else 0.0, "peak_cs_window": peak_in_window(cs_times, p.cs_window),
            "peak_whmcs_per_s": peak_in_window(wh_times, 1.0), "cs_requests": len(cs_times),
            "whmcs_requests": len(wh_times), "planner_s": n / rate,
            "read_before_cutoff": read_before, "incomplete": incomplete, "reread": rereads,
            "reads_by_bill": reads_by_bill, "billed_by_close": closes_billed, "close_skipped": skipped,
            "bill_skipped": bill_skipped,
            "duplicate_reads": duplicates,
            "cs_requests_after_cutoff": sum(1 for x in cs_times if x >= 0),
            "last_read_after_cutoff": last_read_at, "bounds": bounds,
            "close_lead": p.close_lead, "commit_spread": p.commit_spread}


MonthEndModel = Callable[[SimParams], dict[str, Any]]


def deployment(cs_limit: int = CS_LIMIT, **overrides: Any) -> SimParams:
    """100,000 accounts at the template's defaults: WorkerMaxConcurrency 8, SQS BatchSize 100 (batching
    window 5 s), the billing receiver (<= 0.05 WHMCS requests per line, ~2 lines per account); ``cs_limit``
    = CS_RATE_LIMIT. For ``simulate`` (today's design) every account is read once after the cut-off; for
    ``simulate_close`` the close run starts at 21:20 (100 min before), right at ComputeStacks' collection."""
    base = SimParams(workers=8, batch=100, whmcs_requests_per_account=LINES_PER_ACCOUNT * RECEIVER_REQUESTS_PER_LINE,
                     cs_limit=cs_limit)
    return replace(base, **overrides)


def month_end(cs_limit: int, *, model: MonthEndModel = simulate_close, **overrides: Any) -> dict[str, Any]:
    """The figures' scenario for one ``CS_RATE_LIMIT``: the close-run design by default; ``model=simulate``
    gives today's design with the same parameters."""
    return model(deployment(cs_limit, **overrides))


def run_simulations(cs_limit: int = CS_LIMIT) -> list[tuple[str, dict[str, Any]]]:
    """Today's design at ``cs_limit``: the figures' scenario (receiver path) and variations."""
    out = [
        ("template defaults, receiver (C=8, batches of 100)", month_end(cs_limit, model=simulate)),
        ("template defaults, WHMCS API path", month_end(cs_limit, model=simulate, whmcs_requests_per_account=3.0)),
        ("C = 4, batches of 10, API path", simulate(SimParams(workers=4, cs_limit=cs_limit))),
        ("C = 8, WHMCS 200 ms, API path", simulate(SimParams(workers=8, latency_whmcs=0.2, cs_limit=cs_limit))),
        ("C = 4, WHMCS 200 ms, API path", simulate(SimParams(workers=4, latency_whmcs=0.2, cs_limit=cs_limit))),
        ("no daily collection, pages of 500 (2 pages)",
         simulate(SimParams(workers=4, cs_requests_per_account=2, cs_limit=cs_limit))),
    ]
    r = simulate(SimParams(workers=4, cs_requests_per_account=24, accounts=10_000, cs_limit=cs_limit))
    r = {**r, "accounts": 100_000, "time_after_cutoff": r["time_after_cutoff"] * 10, "bound": r["bound"] * 10,
         "cs_requests": r["cs_requests"] * 10}
    out.append(("no daily collection, pages of 30 (10k x 10)", r))
    return out


def run_close_simulations(cs_limit: int = CS_LIMIT) -> list[tuple[str, dict[str, Any]]]:
    """The close-run design at ``cs_limit``: the figures' scenario (template defaults, receiver) and variations."""
    return [
        ("close 21:20 + bill 23:00, receiver (C=8, batches of 100)", month_end(cs_limit)),
        ("  rows committed over 10 min after 21:20", month_end(cs_limit, commit_spread=600.0)),
        ("  WHMCS 200 ms", month_end(cs_limit, latency_whmcs=0.2)),
        ("  WHMCS API path (3 requests per account)", month_end(cs_limit, whmcs_requests_per_account=3.0)),
        ("  a token bucket per worker (the pacer until 2026-12-03)", month_end(cs_limit, cs_pacer="buckets")),
        ("  C = 4", month_end(cs_limit, workers=4)),
    ]


def print_table(title: str, head: str, lines: Iterable[str], note: str) -> None:
    """A text table: its title, its header over a rule as wide, a line a row, then the note under it."""
    print(title)
    print(head)
    print("-" * len(head))
    for line in lines:
        print(line)
    print(note)


def print_close_simulated(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """The close-run scenarios as a table (minutes after the cut-off)."""
    print_table(
        "\nSimulation: 100,000 accounts, close run from 21:20 + month-end bill run at the cut-off (23:00)",
        f"{'scenario':<58} {'CS_RATE_LIMIT':>13} {'C':>3} {'after C min':>11} {'bound min':>9} {'ratio':>6} "
        f"{'peak/limit':>10} {'CS req':>8} {'after C':>8} {'read <C':>8} {'incompl':>7}",
        (f"{name:<58} {r['cs_limit']:>13,} {r['workers']:>3} {r['time_after_cutoff'] / 60:>11.1f} "
         f"{r['bound'] / 60:>9.1f} {r['ratio']:>6.3f} {r['peak_cs_window'] / r['cs_limit']:>10.3f} "
         f"{r['cs_requests']:>8} {r['cs_requests_after_cutoff']:>8} {r['read_before_cutoff']:>8} "
         f"{r['incomplete']:>7}" for name, r in rows),
        "  bound = the largest of: the ComputeStacks requests at 80 % of CS_RATE_LIMIT per 300 s (the workers' "
        "one window: the whole\n  budget at 21:20, then a budget per 301 s), the bill run's WHMCS requests at 30 "
        "per s, and the work after the cut-off x latency / C "
        "(bench/simulation.py: simulate_close).",
    )


if __name__ == "__main__":
    import time

    started = time.perf_counter()
    rows = run_close_simulations(CS_LIMIT) + run_close_simulations(SAFELISTED_LIMIT)
    print_close_simulated(rows)
    print(f"\n{time.perf_counter() - started:.1f} s")
