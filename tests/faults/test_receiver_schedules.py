"""The fault schedules' billing-receiver path (tests/faults/schedule.py, ``path_of``): which seeds take it,
the proxy knob it adds, and proof that its checks fail when the product (or the receiver) breaks the rule
"a fault between the backend and WHMCS never needs an operator, never bills twice".

The receiver-path schedules themselves run with the others in test_fault_schedules.py::test_schedule.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.faults.injection import SlowProxy
from tests.faults.mutants import _patched
from tests.faults.schedule import API, RECEIVER, path_of, replay_command, run_schedule
from tests.faults.world import World

# The receiver-path seeds among 0..20 (pinned: a change of path_of would silently move every seed's path).
RECEIVER_SEEDS_UP_TO_20 = [1, 3, 4, 5, 8, 9, 10, 15, 16, 17, 18, 19]


def test_about_a_third_of_the_seeds_bill_through_the_receiver_and_the_seed_alone_decides() -> None:
    share = sum(path_of(seed) == RECEIVER for seed in range(3000)) / 3000
    assert 0.30 <= share <= 0.37, share
    assert [seed for seed in range(21) if path_of(seed) == RECEIVER] == RECEIVER_SEEDS_UP_TO_20
    # A replay of a seed on its own path needs nothing more; on the other path it says so.
    assert "SCHEDULE_PATH" not in replay_command(1, path=RECEIVER)
    assert replay_command(1, path=API).startswith("SCHEDULE_PATH=api SCHEDULE_SEED=1 ")


def test_without_php_the_receiver_path_is_skipped_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.faults.world as world_module

    # Given a machine without php-cli
    monkeypatch.setattr(world_module.shutil, "which", lambda name: None)
    world = World.__new__(World)  # only the receiver's part of the stage
    world.receiver_reason, world.mariadb, world._mariadb_tmp, world.proxy = "", None, "", None
    world.cs = world.whmcs = None
    # When the world starts its receiver stage
    world._start_mariadb()
    # Then there is none, and the reason names the package
    assert world.mariadb is None and not world.has_receiver
    assert "php-cli" in world.receiver_reason
    # And a receiver-path seed is skipped with that reason before it touches anything
    outcome = run_schedule(world, RECEIVER_SEEDS_UP_TO_20[0])
    assert outcome.skipped and "php-cli" in outcome.skipped and outcome.ok
    assert outcome.to_json()["skipped"] == outcome.skipped and outcome.to_json()["path"] == RECEIVER


# ---------------------------------------------------------------------- the proxy's per-request latency


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"result": "success", "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def slow_proxy() -> Iterator[SlowProxy]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    proxy = SlowProxy(f"http://127.0.0.1:{upstream.server_address[1]}/billing.php")
    proxy.start()
    yield proxy
    proxy.stop()
    upstream.shutdown()
    upstream.server_close()


def _timed_post(client: httpx.Client, url: str) -> float:
    started = time.monotonic()
    assert client.post(url, content=b"{}").status_code == 200
    return time.monotonic() - started


def test_latency_next_delays_exactly_the_next_requests(slow_proxy: SlowProxy) -> None:
    # Given two delayed requests queued on the proxy
    slow_proxy.latency_next(2, 0.2)
    with httpx.Client(timeout=5) as client:
        # When four requests go through it
        took = [_timed_post(client, slow_proxy.url) for _ in range(4)]
    # Then only the first two waited (each answered: the proxy forwards them after the wait)
    assert [t >= 0.2 for t in took] == [True, True, False, False], took


def test_clear_faults_forgets_queued_latencies(slow_proxy: SlowProxy) -> None:
    slow_proxy.latency_next(3, 0.3)
    slow_proxy.clear_faults()
    with httpx.Client(timeout=5) as client:
        assert _timed_post(client, slow_proxy.url) < 0.25


# ---------------------------------------------------------------------- the checks can fail


@contextmanager
def unknown_outcome_needs_attention(world: World) -> Iterator[None]:
    """The worker treats a lost receiver answer as the API path does: it reports the line for an operator."""
    from cswhmcs.billing.worker import RELEASED, ReceiverAccountWorker

    original = ReceiverAccountWorker._settle

    def settle(self: Any, m: Any, outcome: str, *, billable_id: int | None = None, reason: str = "") -> None:
        if outcome == RELEASED and "answer was lost" in reason:
            state = self._load()
            line = state.lines.get(m.key)
            if line is not None and line.token == m.token and self._to_attention(state, m.key, line, reason):
                return
        original(self, m, outcome, billable_id=billable_id, reason=reason)

    with _patched(ReceiverAccountWorker, "_settle", settle):
        yield


@contextmanager
def item_outside_the_transaction(world: World) -> Iterator[None]:
    """A receiver that creates an item a second time without recording its ref (check-then-insert, or the
    item and its ref in two transactions): emulated by inserting a copy of the first created item."""
    from cswhmcs.adapters.receiver import ReceiverClient

    original = ReceiverClient.send

    def send(self: Any, items: Any) -> Any:
        answers = original(self, items)
        for item, answer in zip(items, answers, strict=True):
            if answer.status == "created":
                world.db.add_billable_item(userid=item.client_id, description=item.description,
                                           amount=format(item.amount, "f"), unit=item.unit,
                                           hours=format(item.quantity, "f"), invoiceaction=item.invoice_action)
                break
        return answers

    with _patched(ReceiverClient, "send", send):
        yield


@contextmanager
def wrong_billable_recorded(world: World) -> Iterator[None]:
    """The worker records another billable id than the receiver answered."""
    from cswhmcs.billing.worker import DONE, ReceiverAccountWorker

    original = ReceiverAccountWorker._settle

    def settle(self: Any, m: Any, outcome: str, *, billable_id: int | None = None, reason: str = "") -> None:
        if outcome == DONE and billable_id is not None:
            billable_id += 100_000
        original(self, m, outcome, billable_id=billable_id, reason=reason)

    with _patched(ReceiverAccountWorker, "_settle", settle):
        yield


RECEIVER_MUTANTS: dict[str, Callable[[World], Any]] = {
    "unknown_outcome_needs_attention": unknown_outcome_needs_attention,
    "item_outside_the_transaction": item_outside_the_transaction,
    "wrong_billable_recorded": wrong_billable_recorded,
}


@pytest.mark.integration
@pytest.mark.parametrize(("mutant", "seeds", "finding"), [
    ("unknown_outcome_needs_attention", [0, 11], "needs attention on the receiver path"),
    ("item_outside_the_transaction", [1, 3], "has no row in the receiver's refs table"),
    ("wrong_billable_recorded", [1, 3], "the receiver's row"),
])
def test_the_receiver_path_checks_catch_a_deliberate_bug(mutant: str, seeds: list[int], finding: str,
                                                        fault_world: World) -> None:
    """With the worker (or the receiver) deliberately broken, a receiver-path schedule that meets the fault
    reports it: a line for an operator, an item without its ref row, a line whose id is not the receiver's."""
    if not fault_world.has_receiver:
        pytest.skip(fault_world.receiver_reason)
    reports = []
    for seed in seeds:
        with RECEIVER_MUTANTS[mutant](fault_world):
            outcome = run_schedule(fault_world, seed, path=RECEIVER)
        reports.append(outcome.report())
        if any(finding in v for v in outcome.violations):
            return
    pytest.fail(f"the {mutant} bug went unnoticed:\n" + "\n".join(reports))
