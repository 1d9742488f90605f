"""Billing never locks the ComputeStacks credential out: at most 2 failed logins per run.

ComputeStacks locks the owner of an API credential after 5 wrong secrets, for 4 hours, and from then on
refuses even the right one (reference/computestacks-api.md section 1.2). A month-end run works on
thousands of accounts with several workers at once; with a wrong secret each of them would try. So:

* Before an account, a worker makes sure the pair it would use is known to work in this run. The
  first worker to use a pair claims a *probe* (a conditional write on the run's credential item in
  the ledger) and sends one cheap request (``GET /api/admin/locations``); the others wait for the
  verdict (or, after ``wait`` seconds, give their account back to the queue). "Good" is then cached
  in memory: one read of the ledger per process and run.
* Every 401 of the run is counted on that item (atomically). After a 401 the client re-reads the
  secret (``cswhmcs.factory.SecretCredentials``) and tries once more only with a different pair; the
  **second 401 of a run stops its use of ComputeStacks**: every worker of the run, in any process,
  then skips its accounts with one clear error (``STOP_MESSAGE``) without sending anything.
* A pair rejected in the run is not probed again; a new pair (the secret was corrected meanwhile) is,
  as long as the run has had fewer than 2 failures.

A wrong secret from the start therefore costs 1 failed login per run (2 if the secret is rotated to
another wrong one during the run), whatever the number of workers. Only fingerprints of pairs are
stored (``cswhmcs.factory.fingerprint``), never a secret.

Skipped accounts lose nothing: their usage rows stay in ComputeStacks and their scan floors did not
move, so the next run (or ``cswhmcs billing run --as-of`` of this one after fixing the secret) bills
them. The SQS worker acknowledges them (a redelivery would only be skipped again); the in-process run
reports each as failed (exit code 3).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from cswhmcs.errors import DomainError, UpstreamAuthFailed
from cswhmcs.factory import Pair, fingerprint
from cswhmcs.observability import logger

MAX_FAILURES_PER_RUN = 2
STOP_MESSAGE = ("ComputeStacks rejected the API credentials: this billing run no longer uses ComputeStacks and "
                "skips the account (nothing is lost: its usage is billed by the next run). Correct CS_API_KEY / "
                "CS_API_SECRET in the configuration secret.")


class CredentialsStopped(UpstreamAuthFailed):
    """The run no longer uses ComputeStacks: its credentials were rejected."""

    def __init__(self) -> None:
        super().__init__(STOP_MESSAGE, upstream="ComputeStacks", http_status=401)


class CredentialCheckPending(DomainError):
    """Another worker is still checking the credentials: the account is given back and retried."""

    status = 503
    code = "credential_check_pending"

    def __init__(self) -> None:
        super().__init__("Another billing worker is checking the ComputeStacks credentials; the account "
                         "will be retried.")


def is_credentials_stop(error: str | None) -> bool:
    """Was an account skipped because its run stopped using ComputeStacks?"""
    return error == STOP_MESSAGE


@dataclass(frozen=True)
class RunCredentialState:
    failures: int = 0
    rejected: frozenset[str] = frozenset()
    good: frozenset[str] = frozenset()


class RunCredentialStore(Protocol):
    """Where a run's credential verdicts live: the ledger (Lambda workers of a run share them) or
    memory (``cswhmcs billing run``: one process)."""

    def cs_credential_state(self, run_id: str) -> RunCredentialState: ...

    def claim_cs_probe(self, run_id: str, fp: str, owner: str, *, lease: timedelta, max_failures: int) -> bool: ...

    def release_cs_probe(self, run_id: str, owner: str) -> None: ...

    def mark_cs_good(self, run_id: str, fp: str) -> None: ...

    def record_cs_rejection(self, run_id: str, fp: str) -> int: ...


@dataclass
class _MemoryRun:
    failures: int = 0
    rejected: set[str] = field(default_factory=set)
    good: set[str] = field(default_factory=set)
    probe_owner: str = ""
    probe_until: float = 0.0


class MemoryCredentialStore:
    """``RunCredentialStore`` in this process only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, _MemoryRun] = {}

    def _run(self, run_id: str) -> _MemoryRun:
        return self._runs.setdefault(run_id, _MemoryRun())

    def cs_credential_state(self, run_id: str) -> RunCredentialState:
        with self._lock:
            r = self._run(run_id)
            return RunCredentialState(r.failures, frozenset(r.rejected), frozenset(r.good))

    def claim_cs_probe(self, run_id: str, fp: str, owner: str, *, lease: timedelta, max_failures: int) -> bool:
        with self._lock:
            r = self._run(run_id)
            now = self._clock()
            if (r.probe_owner and r.probe_until > now) or r.failures >= max_failures or fp in r.rejected \
                    or fp in r.good:
                return False
            r.probe_owner, r.probe_until = owner, now + lease.total_seconds()
            return True

    def release_cs_probe(self, run_id: str, owner: str) -> None:
        with self._lock:
            r = self._run(run_id)
            if r.probe_owner == owner:
                r.probe_owner, r.probe_until = "", 0.0

    def mark_cs_good(self, run_id: str, fp: str) -> None:
        with self._lock:
            self._run(run_id).good.add(fp)

    def record_cs_rejection(self, run_id: str, fp: str) -> int:
        with self._lock:
            r = self._run(run_id)
            r.failures += 1
            r.rejected.add(fp)
            return r.failures


class BaseSource(Protocol):
    """``cswhmcs.factory.SecretCredentials`` or ``SettingsCredentials``."""

    url: str

    def current(self) -> Pair: ...

    def rejected(self, used: Pair) -> Pair | None: ...

    def usable(self, pair: Pair) -> bool: ...

    def mark_rejected(self, pair: Pair) -> None: ...


class RunCredentialGate:
    """The ComputeStacks client's ``CredentialSource`` in billing, and the check before each account
    (``WorkerDeps.cs_gate``; ``AccountWorker.process`` calls ``check``). See the module docstring."""

    def __init__(self, base: BaseSource, store: RunCredentialStore, *, max_failures: int = MAX_FAILURES_PER_RUN,
                 wait: float = 20.0, lease: timedelta = timedelta(seconds=60),
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.base = base
        self.store = store
        self.max_failures = max_failures
        self.wait = wait
        self.lease = lease
        self._sleep = sleep
        self.cs: Any = None  # the client this gate is the source of (set by ``guarded_client``)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._good: set[tuple[str, str]] = set()
        self._stopped: set[str] = set()

    # ------------------------------------------------------------------ CredentialSource

    def current(self) -> Pair:
        pair = self.base.current()
        self._local.last = pair
        return pair

    def rejected(self, used: Pair) -> Pair | None:
        run_id: str | None = getattr(self._local, "run", None)
        offered = self.base.rejected(used)  # remembered in this process; the secret is re-read now
        if run_id is None:
            return offered
        fp = fingerprint(self.base.url, used)
        with self._lock:
            self._good.discard((run_id, fp))
        failures = self.store.record_cs_rejection(run_id, fp)
        if failures >= self.max_failures:
            self._stop(run_id)
            return None
        if offered is None or fingerprint(self.base.url, offered) in self.store.cs_credential_state(run_id).rejected:
            return None
        self._local.last = offered
        return offered

    def usable(self, pair: Pair) -> bool:
        run_id: str | None = getattr(self._local, "run", None)
        with self._lock:
            if run_id is not None and run_id in self._stopped:
                return False
        return self.base.usable(pair)

    # ------------------------------------------------------------------ before an account

    def check(self, run_id: str) -> None:
        """Return when this run may use ComputeStacks with the current pair; raise ``CredentialsStopped``
        when it may not, ``CredentialCheckPending`` when another worker's probe takes too long."""
        self._local.run = run_id
        give_up = time.monotonic() + self._wait_budget()
        delay = 0.05
        while True:
            with self._lock:
                if run_id in self._stopped:
                    raise CredentialsStopped()
            pair = self.current()
            fp = fingerprint(self.base.url, pair)
            with self._lock:
                if (run_id, fp) in self._good:
                    return
            state = self.store.cs_credential_state(run_id)
            if state.failures >= self.max_failures:
                self._stop(run_id)
                raise CredentialsStopped()
            if fp in state.rejected:
                # Refused in this run (maybe by another worker): never sent again by this process; a new
                # pair (the secret corrected meanwhile, seen by a re-read at most every 45 s) is probed.
                self.base.mark_rejected(pair)
                if self.base.current() != pair:
                    continue
                raise CredentialsStopped()
            if fp in state.good:
                with self._lock:
                    self._good.add((run_id, fp))
                return
            if not self.base.usable(pair):
                # Refused earlier in this process (another run, or a 401 the store never counted): the
                # client would not send it, so a probe could never decide. Not used, like a pair refused
                # in this run (``current`` above already re-read the secret when that was due).
                raise CredentialsStopped()
            owner = uuid.uuid4().hex
            if self.store.claim_cs_probe(run_id, fp, owner, lease=self.lease, max_failures=self.max_failures):
                try:
                    self._probe(run_id)
                finally:
                    self.store.release_cs_probe(run_id, owner)
                continue
            left = give_up - time.monotonic()
            if left <= 0:
                raise CredentialCheckPending()
            self._sleep(min(delay, left))  # never past the wait budget (the account's deadline)
            delay = min(0.5, delay * 2)

    def stopped(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._stopped

    def _probe(self, run_id: str) -> None:
        """One cheap request with the current pair: its verdict goes to the store (a 401 through
        ``rejected``). Other failures (timeouts, 5xx) leave no verdict: the account is retried."""
        try:
            self.cs.list_locations()
        except UpstreamAuthFailed:
            return
        used: Pair = getattr(self._local, "last", None) or self.base.current()
        fp = fingerprint(self.base.url, used)
        self.store.mark_cs_good(run_id, fp)
        with self._lock:
            self._good.add((run_id, fp))

    def _stop(self, run_id: str) -> None:
        with self._lock:
            first = run_id not in self._stopped
            self._stopped.add(run_id)
        if first:
            logger.error("ComputeStacks rejected the API credentials twice in this billing run: the run stops using "
                         "ComputeStacks; its remaining accounts are skipped (nothing is lost)", extra={"run": run_id})

    def _wait_budget(self) -> float:
        """``wait``, within what the account's deadline leaves (half of it: the account needs the rest)."""
        from cswhmcs import deadline

        left = deadline.current().remaining()
        return max(0.0, min(self.wait, left / 2))


def guarded_client(settings: Any, store: RunCredentialStore, *, pacer: Any = None, base: BaseSource | None = None,
                   **gate_kw: Any) -> tuple[Any, RunCredentialGate]:
    """The billing ComputeStacks client and its gate (the gate is the client's credential source)."""
    from cswhmcs import factory

    source: Any = base if base is not None else factory.credentials_for(settings)
    gate = RunCredentialGate(source, store, **gate_kw)
    gate.cs = factory.computestacks_client(settings, pacer=pacer, credentials=gate)
    return gate.cs, gate
