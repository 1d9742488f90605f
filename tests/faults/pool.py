"""Schedules on worker processes, for `make test` (beside the suite) and `make soak`: the fault schedules of
tests/faults and the billing fault schedules of tests/integration/test_billing_faults.py (``run_billing_seed``,
on fresh tables and sandboxes per seed).

Each worker process has its own World (its own sandboxes, and its own MariaDB, billing.php and fault proxy
for the receiver-path seeds) and shares the one DynamoDB Local. A schedule's outcome comes back with the log
output the product wrote meanwhile (the Powertools handler writes into a buffer instead of stdout) and the
secret values it used, so the caller can hand both to the session's secrets capture: the fault paths' log
lines are scanned like every other line of the suite.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_world: Any = None
_log: io.StringIO | None = None
_patches: Any = None


def _init(ddb_endpoint: str) -> None:
    global _world, _log, _patches
    from cswhmcs.observability import logger
    from tests.faults.world import World

    _log = io.StringIO()
    handler = getattr(logger, "registered_handler", None)
    if handler is not None and hasattr(handler, "setStream"):
        handler.setStream(_log)
    # A terminated worker (a broken pool, a stopped soak) still stops its MariaDB and php -S (own sessions).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _world = World(ddb_endpoint)
    atexit.register(_world.close)
    _patches = _world.patched()  # this process only runs schedules: the patches stay for its life
    _patches.__enter__()


def run_seed(seed: int, size: str = "small") -> dict[str, Any]:
    """One schedule in this worker: its outcome as JSON, plus ``log`` and ``secrets``."""
    from tests.faults.schedule import run_schedule

    assert _world is not None and _log is not None, "not a schedule worker"
    outcome = run_schedule(_world, seed, size=size)
    data = outcome.to_json()
    data["log"] = _take_log()
    data["secrets"] = outcome.secrets
    return data


def _take_log() -> str:
    """The product's log output since the last call, and an empty buffer for the next schedule."""
    assert _log is not None, "not a schedule worker"
    text = _log.getvalue()
    _log.seek(0)
    _log.truncate()
    return text


def run_billing_seed(seed: int) -> dict[str, Any]:
    """One billing fault schedule (tests/integration/test_billing_faults.py) in this worker, on fresh tables and
    sandboxes of its own: ``error`` (the failure's traceback, or empty), plus ``log`` and ``secrets``."""
    import traceback

    from cswhmcs.local.template import Template
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox
    from tests.conftest import ROOT, make_tables
    from tests.integration.test_billing_faults import check_schedule

    assert _world is not None and _log is not None, "not a schedule worker"
    cs, whmcs = ComputeStacksSandbox().start(), WhmcsSandbox().start()
    error = ""
    try:
        check_schedule(seed, make_tables(_world.ddb_endpoint, Template(ROOT / "template.yaml")), cs, whmcs)
    except BaseException:  # noqa: BLE001 - the failure goes back to the test, which fails with it
        error = traceback.format_exc()
    finally:
        cs.stop()
        whmcs.stop()
    return {"error": error, "log": _take_log(), "secrets": [cs.api_key, cs.api_secret, whmcs.identifier, whmcs.secret]}


class SchedulePool:
    def __init__(self, ddb_endpoint: str, jobs: int) -> None:
        self._executor = ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init, initargs=(ddb_endpoint,))
        self.futures: dict[int, Future[dict[str, Any]]] = {}
        self.billing: dict[int, Future[dict[str, Any]]] = {}

    def submit(self, seeds: list[int], size: str = "small") -> None:
        for seed in seeds:
            if seed not in self.futures:
                self.futures[seed] = self._executor.submit(run_seed, seed, size)

    def result(self, seed: int, timeout: float = 300.0) -> dict[str, Any]:
        self.submit([seed])
        return self.futures[seed].result(timeout=timeout)

    def submit_billing(self, seeds: list[int]) -> None:
        for seed in seeds:
            if seed not in self.billing:
                self.billing[seed] = self._executor.submit(run_billing_seed, seed)

    def billing_result(self, seed: int, timeout: float = 300.0) -> dict[str, Any]:
        self.submit_billing([seed])
        return self.billing[seed].result(timeout=timeout)

    def close(self) -> None:
        for future in [*self.futures.values(), *self.billing.values()]:
            future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
