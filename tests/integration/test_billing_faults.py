"""Seeded fault schedules against the sandboxes and DynamoDB Local: WHMCS 5xx and refusals, timeouts
before and after WHMCS committed, ComputeStacks 5xx, crashes between ledger steps, duplicate SQS
deliveries and two runs at once. Whatever happens: 0 duplicate items, 0 lost rows, and every item
whose fate was unknown is reported (and settled by the operator step, as a person would). The seeds run in
the session's schedule workers (tests/faults/pool.py), beside the rest of the suite."""

from __future__ import annotations

import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs.adapters.computestacks import ComputeStacksClient
from cswhmcs.adapters.whmcs import WhmcsClient
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.planner import Trigger, plan_run
from cswhmcs.billing.run import Runtime, Summary
from cswhmcs.billing.worker import process_account
from tests.support.billing import ListSink
from tests.support.billing_stack import NOV_END, OCT_END, RATES, BillingStack, cents
from tests.support.clocks import Clock

pytestmark = pytest.mark.integration

SEEDS = range(36)
CRASH_POINTS = ("claim.before_save", "claim.after_save", "send.after_mark", "send.after_call", "send.after_finish")


class SimulatedCrash(BaseException):
    """The worker process dies here (not an Exception: nothing catches it)."""


class Crasher:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.p = 0.0
        self.crashes = 0
        self._lock = threading.Lock()

    def __call__(self, point: str) -> None:
        with self._lock:
            crash = self.rng.random() < self.p
            self.crashes += int(crash)
        if crash:
            raise SimulatedCrash(point)


def fast_runtime(stack: BillingStack, clock: Clock, crasher: Crasher) -> Runtime:
    s = stack.settings
    cs = ComputeStacksClient(s.CS_API_URL, s.CS_API_KEY.get_secret_value(), s.CS_API_SECRET.get_secret_value(),
                             timeout=1, connect_timeout=1, backoff=0.005)
    wh = WhmcsClient(s.WHMCS_API_URL, s.WHMCS_API_IDENTIFIER.get_secret_value(), s.WHMCS_API_SECRET.get_secret_value(),
                     timeout=0.25, connect_timeout=1, sleep=lambda _s: None)
    return stack.runtime(cs=cs, whmcs=wh, clock=clock, faults=crasher,
                         options=BillingOptions(cs_limit=10**7, concurrency=3))


def seed_usage(stack: BillingStack, rng: random.Random) -> None:
    for _ in range(rng.randint(2, 4)):
        cs_cur = rng.choice(["USD", "EUR", "GBP"])
        acct = stack.add_account(cs_cur, rng.choice([cs_cur, cs_cur, "USD", "EUR"]))
        for product in rng.sample(["containerm", "containerl", "storage"], rng.randint(1, 3)):
            total = rng.choice(["0.02054795", "0.00685", "0.0001", "1.23456789", "0.0225"])
            start = OCT_END - timedelta(days=rng.randint(1, 6))
            stack.add_usage(acct, product, start=start, end=NOV_END + timedelta(hours=2), total=total,
                            every=timedelta(hours=rng.choice([3, 6, 12])))


def inject(stack: BillingStack, rng: random.Random) -> set[str]:
    """Arm some faults for the next run; returns their kinds."""
    kinds = set(rng.sample(["whmcs_5xx", "whmcs_error", "whmcs_tac", "whmcs_timeout", "cs_5xx", "crash"],
                           rng.randint(1, 3)))
    if "whmcs_5xx" in kinds:
        stack.whmcs.fail_next(rng.randint(1, 2), 500, actions=["AddBillableItem"])
    if "whmcs_error" in kinds:
        stack.whmcs.error_next(1, "Client ID not Found", actions=["AddBillableItem"])
    if "whmcs_tac" in kinds:
        stack.whmcs.timeout_after_commit_next(rng.randint(1, 2), 0.45, actions=["AddBillableItem"])
    if "whmcs_timeout" in kinds:  # a slow read of the client: nothing sent, retried next time
        stack.whmcs.timeout_after_commit_next(1, 0.45, actions=["GetClientsDetails"])
    if "cs_5xx" in kinds:
        stack.cs.fail_next(rng.randint(1, 4), 502)
    return kinds


def run_mode(stack: BillingStack, rts: list[Runtime], as_of: datetime, mode: str) -> list[Summary]:
    if mode == "single":
        return [stack.run(as_of, runtime=rts[0])]
    if mode == "two_runs_at_once":
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda rt: stack.run(as_of, runtime=rt), rts))
    # duplicate deliveries: every message delivered twice, the copies to two workers at the same time
    sink = ListSink()
    plan_run(Trigger("bill", as_of), ledger=rts[0].ledger, accounts=rts[0].accounts, whmcs=rts[0].deps.whmcs,
             sink=sink, force=True)
    work = [(m, rts[i % 2]) for m in sink.sent for i in range(2)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(process_account, m, rt.deps) for m, rt in work]
    for f in futures:
        if not isinstance(f.exception(), SimulatedCrash | type(None)):
            raise f.exception()  # type: ignore[misc]
    return []


@pytest.mark.parametrize("seed", SEEDS)
def test_fault_schedule(seed: int, schedule_pool: Any, feed_secrets_capture: Any) -> None:
    """Run by the session's schedule workers (tests/conftest.py ``schedule_pool``) while the suite goes on; a
    failure shows its traceback here. Replay one in this process: ``BILLING_FAULT_SEED=<seed> .venv/bin/pytest
    tests/integration/test_billing_faults.py -k replay``."""
    data = schedule_pool.billing_result(seed)
    feed_secrets_capture(data)
    assert not data["error"], f"seed {seed}:\n{data['error']}"


def test_replay(tables: Any, cs_sandbox: Any, whmcs_sandbox: Any) -> None:
    raw = os.environ.get("BILLING_FAULT_SEED", "").strip()
    if not raw:
        pytest.skip("set BILLING_FAULT_SEED=<seed> to replay one billing fault schedule in this process")
    check_schedule(int(raw), tables, cs_sandbox, whmcs_sandbox)


def check_schedule(seed: int, tables: Any, cs_sandbox: Any, whmcs_sandbox: Any) -> None:
    """One seed: runs with faults armed, clean runs, the operator's settling; then the invariants."""
    rng = random.Random(seed)
    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    seed_usage(stack, rng)
    clock = Clock(OCT_END + timedelta(minutes=5))
    crasher = Crasher(random.Random(seed + 10_000))
    rts = [fast_runtime(stack, clock, crasher), fast_runtime(stack, clock, crasher)]
    ledger = rts[0].ledger
    settled_billed: set[str] = set()
    try:
        for as_of in (OCT_END, NOV_END):
            clock.now = as_of + timedelta(minutes=5)
            # Given a few runs with faults armed
            for _ in range(rng.randint(1, 3)):
                kinds = inject(stack, rng)
                crasher.p = 0.25 if "crash" in kinds else 0.0
                summaries = run_mode(stack, rts, as_of, rng.choice(["single", "two_runs_at_once", "duplicates"]))
                crasher.p = 0.0
                stack.whmcs.clear_faults()
                stack.cs.clear_faults()
                for summary in summaries:
                    # Then whatever became ambiguous is reported, and the exit code says so
                    assert {o.ref for o in summary.attention} <= {ln.ref for ln in ledger.attention()}
                    assert summary.exit_code == (3 if summary.needs_attention else 0)
                clock.advance(timedelta(minutes=20))  # past the sending lease: interrupted sends get reported

            # When the faults are gone and a clean run has happened
            for _ in range(3):
                summary = stack.run(as_of, runtime=rts[0])
                clock.advance(timedelta(minutes=20))
                if not summary.failed:
                    break
            assert summary.failed == []
            assert summary.open_attention == len(list(ledger.attention()))

            # And the operator settles each reported line after looking in WHMCS
            by_ref = stack.items_by_ref()
            for line in list(ledger.attention()):
                found = by_ref.get(line.ref, [])
                assert len(found) <= 1
                if found:
                    ledger.resolve_billed(line.ref, int(found[0]["id"]))
                    settled_billed.add(line.ref)
                else:
                    ledger.resolve_resend(line.ref)
            final = stack.run(as_of, runtime=rts[0])
            assert final.failed == [] and final.attention == [] and final.open_attention == 0
    finally:
        for rt in rts:
            rt.close()

    # Then: no duplicate item, every item is a done line (and the reverse), and no row is lost
    by_ref = stack.items_by_ref()
    assert all(len(items) == 1 for items in by_ref.values()), "a line was billed twice"
    for acct in stack.accounts:
        lines = ledger.lines_of(acct.cs_user_id)
        assert all(ln.status == "done" for ln in lines)
        assert {ln.ref for ln in lines} == {r for r in by_ref if r.startswith(f"{acct.cs_user_id}:")}
        factor = RATES[acct.client_currency] / RATES[acct.cs_currency]
        for ln in lines:
            (item,) = by_ref[ln.ref]
            assert ln.billable_id == int(item["id"])
            assert Decimal(item["amount"]) == ln.amount == cents(ln.source_total * factor)
        state = ledger.load(acct.cs_user_id)
        eligible = [r for r in acct.rows if r["end"] <= NOV_END]
        assert sum((ln.source_total for ln in lines), Decimal(0)) + state.pending_total() == sum(
            (r["total"] for r in eligible), Decimal(0)), "rows lost or counted twice"
        assert sum(ln.rows for ln in lines) + state.pending_rows() == len(eligible)
        assert state.lines == {}
    # Every item created behind a timeout was reported and settled as billed, never re-sent
    assert settled_billed <= set(by_ref)


def test_many_schedules_cover_the_faults() -> None:
    """The seeds above arm every kind of fault and every run mode at least a few times."""
    seen: dict[str, int] = {}
    for seed in SEEDS:
        rng = random.Random(seed)
        stack = _Counting()
        seed_usage(stack, rng)  # type: ignore[arg-type]
        for _ in (OCT_END, NOV_END):
            for _ in range(rng.randint(1, 3)):
                for kind in inject(stack, rng):  # type: ignore[arg-type]
                    seen[kind] = seen.get(kind, 0) + 1
                mode = rng.choice(["single", "two_runs_at_once", "duplicates"])
                seen[mode] = seen.get(mode, 0) + 1
    assert all(seen.get(k, 0) >= 5 for k in ("whmcs_5xx", "whmcs_error", "whmcs_tac", "whmcs_timeout", "cs_5xx",
                                              "crash", "single", "two_runs_at_once", "duplicates")), seen


class _Counting:
    """Stands in for BillingStack when only the random choices matter."""

    class _Any:
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: {"id": 1}

    def __init__(self) -> None:
        self.whmcs = self._Any()
        self.cs = self._Any()

    def add_account(self, *a: Any) -> Any:
        return None

    def add_usage(self, *a: Any, **k: Any) -> int:
        return 0

