"""bench/simulation.py: the discrete-event model of the close run (21:20) + the month-end bill run (23:00)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bench import simulation as sim
from bench.simulation import SimParams, month_end, simulate, simulate_close

# No WHMCS requests, no latency: only the ComputeStacks pacing and the DynamoDB time are left. The token bucket
# per worker (the pacer until 2026-12-03) unless a test asks for the shared window (WINDOW).
QUIET: dict[str, Any] = {"whmcs_requests_per_account": 0.0, "latency_cs": 0.0, "latency_whmcs": 0.0, "latency_ddb": 0.0,
         "planner_msgs_per_s": 1e9, "cold_start": 0.0, "cs_pacer": "buckets"}
WINDOW: dict[str, Any] = {**QUIET, "cs_pacer": "window"}
HUGE = 10**9


def test_everything_read_before_the_cut_off_leaves_only_the_bill_work() -> None:
    # Given 40 accounts, 2 workers, batches of 10, an unlimited ComputeStacks and DynamoDB calls of 10 ms
    p = SimParams(accounts=40, workers=2, batch=10, cs_limit=HUGE, **{**QUIET, "latency_ddb": 0.01})
    # When the close run and the bill run are simulated
    r = simulate_close(p)
    # Then every account was read once, before the cut-off, completely
    assert (r["read_before_cutoff"], r["incomplete"], r["cs_requests"], r["cs_requests_after_cutoff"]) == (40, 0, 40, 0)
    assert r["reads_by_bill"] == 0 and r["close_skipped"] == 0
    # And after the cut-off each worker bills 20 accounts x 2 calls (claim and mark, finish) x 10 ms = 0.4 s,
    # which is the bound
    assert r["time_after_cutoff"] == pytest.approx(0.4, abs=1e-6)
    assert r["bound_by"] == "latency x concurrency"
    assert r["bound"] == pytest.approx(0.4)
    assert r["ratio"] == pytest.approx(1.0, abs=1e-6)


def test_a_tiny_limit_leaves_the_remaining_reads_after_the_cut_off_at_the_bucket_rate() -> None:
    # Given 1 worker, 60 requests per 300 s (all of it for billing, burst 1: then 59 / 300 s) and a close
    # run 300 s before the cut-off
    p = SimParams(accounts=100, workers=1, batch=10, cs_limit=60, cs_share=1.0, cs_burst=1, close_lead=300.0,
                  collection_before_cutoff=300.0, **QUIET)
    # When simulated
    r = simulate_close(p)
    # Then reads go at -300 + i x 300/59 s: 59 before the cut-off, 41 after, the last at i = 99
    assert r["read_before_cutoff"] == 59
    assert r["cs_requests_after_cutoff"] == 41
    assert r["time_after_cutoff"] == pytest.approx(99 * 300 / 59 - 300, abs=1e-6)
    # And the bound is the 40 reads that do not fit (100 - 0.2/s x 300 s) at 0.2 per s
    assert r["bound_by"] == "ComputeStacks rate"
    assert r["bound"] == pytest.approx(200.0)
    assert 1.0 <= r["ratio"] < 1.05


def test_the_shared_window_reads_a_whole_budget_at_once_then_a_budget_per_cycle() -> None:
    # Given the workers' one SharedWindow of 60 requests per 300 s, idle before a close run 300 s before C
    p = SimParams(accounts=100, workers=1, batch=10, cs_limit=60, cs_share=1.0, close_lead=300.0,
                  collection_before_cutoff=300.0, **WINDOW)
    # When simulated
    r = simulate_close(p)
    # Then 60 reads go at once at -300 s, and the other 40 when that second has left the window: 301 s later
    assert r["cs_pacer"] == "window"
    assert (r["read_before_cutoff"], r["cs_requests_after_cutoff"]) == (60, 40)
    assert r["time_after_cutoff"] == pytest.approx(1.0, abs=1e-6)
    assert r["peak_cs_window"] == 60
    # And that is its bound: 2 windows, the second opening one cycle (301 s) after the first read
    assert r["bound_by"] == "ComputeStacks rate"
    assert r["bound"] == pytest.approx(1.0)
    # Where a token bucket per worker took until 99 x 300/59 s after the close run's start
    assert simulate_close(replace(p, cs_pacer="buckets"))["time_after_cutoff"] == pytest.approx(99 * 300 / 59 - 300)


def test_a_close_run_before_the_collection_reads_every_account_again_at_the_bill_run() -> None:
    # Given a close run that starts 1,000 s before ComputeStacks commits the 21:20 rows
    p = SimParams(accounts=50, workers=2, batch=10, cs_limit=HUGE, close_lead=7000.0, **QUIET)
    # When simulated
    r = simulate_close(p)
    # Then every close read was incomplete and costs one more request, after the cut-off, by the bill run
    assert r["incomplete"] == 50 and r["reread"] == 50 and r["reads_by_bill"] == 50
    assert r["cs_requests"] == 100
    assert r["cs_requests_after_cutoff"] == 50


def test_rows_committed_over_a_spread_make_about_half_the_reads_within_it_incomplete() -> None:
    # Given rows committed uniformly over 600 s after 21:20 and 1,000 reads spread evenly over the same 600 s
    # (1 worker: (501 - 1) / 300 s = 1 read per 0.6 s)
    p = SimParams(accounts=1000, workers=1, batch=100, cs_limit=501, cs_share=1.0, cs_burst=1, commit_spread=600.0,
                  **QUIET)
    # When simulated
    r = simulate_close(p)
    # Then read i is incomplete with probability 1 - i/1000: ~500 incomplete, each read again
    assert 450 <= r["incomplete"] <= 550
    assert r["cs_requests"] == 1000 + r["incomplete"]
    assert r["cs_requests_after_cutoff"] == r["incomplete"]
    assert r["read_before_cutoff"] == 1000


def test_a_bill_message_overtaking_a_close_message_reads_it_and_the_close_message_does_nothing() -> None:
    # Given 3 workers and 20 accounts in batches of 10: the third worker gets no close batch and starts on the
    # bill messages at the cut-off while the first is still reading its close batch (burst 4, then 1 per 8.3 s)
    p = SimParams(accounts=20, workers=3, batch=10, cs_limit=120, cs_share=1.0, cs_worker_burst=4, close_lead=10.0,
                  collection_before_cutoff=10.0, **QUIET)
    # When simulated
    r = simulate_close(p)
    # Then some accounts were read by their bill message and their close message then found them read
    assert r["close_skipped"] > 0
    assert r["reads_by_bill"] >= r["close_skipped"]
    # And every account costs one ComputeStacks request, plus one per read that met another still in flight
    assert r["incomplete"] == 0
    assert r["cs_requests"] == 20 + r["duplicate_reads"]
    assert r["cs_requests"] == (20 - r["close_skipped"]) + r["reads_by_bill"]


@pytest.mark.parametrize(("workers", "burst", "shared", "spread", "pacer"),
                         [(8, 10, False, 0.0, "buckets"), (4, 1, False, 600.0, "buckets"),
                          (1, 50, False, 0.0, "buckets"), (8, 10, True, 600.0, "buckets"),
                          (8, 1, False, 0.0, "window"), (3, 1, False, 600.0, "window")])
def test_no_window_of_300_s_exceeds_the_budget(workers: int, burst: int, shared: bool, spread: float,
                                               pacer: str) -> None:
    # Given 5,000 accounts at CS_RATE_LIMIT 1,000 (budget 800 per 300 s) and a close run 10 min before C
    p = SimParams(accounts=5000, workers=workers, batch=100, cs_limit=1000, cs_burst=burst, cs_worker_burst=burst,
                  shared_buckets=shared, cs_pacer=pacer,
                  close_lead=600.0, collection_before_cutoff=600.0, commit_spread=spread)
    # When simulated (both runs share the buckets across the cut-off)
    r = simulate_close(p)
    # Then no sliding 300-s window holds more than the budget, and every account was billed
    assert r["peak_cs_window"] <= 800
    assert r["cs_requests"] == 5000 + r["incomplete"] + r["duplicate_reads"]
    assert r["ratio"] >= 0.99


def test_month_end_defaults_and_keys() -> None:
    # Given the figures' scenario with fewer accounts
    r = month_end(sim.SAFELISTED_LIMIT, accounts=2000)
    # Then it is the template's deployment, all read before the cut-off at the safelisted limit
    assert (r["workers"], r["cs_limit"], r["accounts"]) == (8, sim.SAFELISTED_LIMIT, 2000)
    for key in ("time_after_cutoff", "bound", "bound_by", "ratio", "peak_cs_window", "cs_requests",
                "whmcs_requests", "read_before_cutoff", "incomplete", "cs_requests_after_cutoff"):
        assert key in r
    assert r["read_before_cutoff"] == 2000 and r["cs_requests_after_cutoff"] == 0
    assert r["whmcs_requests"] == 200  # 2 lines x 0.05 requests per line


def test_month_end_with_todays_model_is_the_after_cut_off_simulation() -> None:
    # Given today's model plugged into month_end
    r = month_end(sim.CS_LIMIT, model=simulate, accounts=2000)
    # Then it is simulate on the template's deployment
    assert r == simulate(sim.deployment(sim.CS_LIMIT, accounts=2000))
    assert r["cs_requests"] == 2000


def test_close_messages_reached_after_the_cut_off_bill_and_their_bill_messages_skip() -> None:
    # Given the tiny limit of test_a_tiny_limit_...: 41 accounts are read by close messages after the cut-off
    p = SimParams(accounts=100, workers=1, batch=10, cs_limit=60, cs_share=1.0, cs_burst=1, close_lead=300.0,
                  collection_before_cutoff=300.0, **QUIET)
    r = simulate_close(p)
    # Then those close messages bill their accounts, and the bill messages for them only look
    assert r["billed_by_close"] == r["cs_requests_after_cutoff"] == 41
    assert r["bill_skipped"] == 41 and r["reads_by_bill"] == 0
