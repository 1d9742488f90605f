"""A rotated ComputeStacks secret reaches every function at once, and a wrong one never locks the
credential out: the real clients against the ComputeStacks sandbox (which locks a credential's owner
after 5 failed logins), moto's Secrets Manager, DynamoDB Local."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import SecretStr

from tests.conftest import ROOT, LiveStack
from tests.support.billing_stack import OCT_END, BillingStack

pytestmark = pytest.mark.integration

RUN = "bill#2026-10-31T23:00:00Z"
ADMIN_EMAIL = "admin@sandbox.computestacks.test"


def failed_logins(cs: Any) -> int:
    return sum(1 for r in cs.requests if r["status"] == 401)


def owner(cs: Any) -> dict[str, Any]:
    found = cs.user_by_email(ADMIN_EMAIL)
    assert found is not None
    return found


def records(bodies: list[str]) -> dict[str, Any]:
    template = json.loads((ROOT / "events/billing_worker.json").read_text())["Records"][0]
    return {"Records": [dict(template, messageId=f"m{i}", body=b) for i, b in enumerate(bodies)]}


def messages(stack: BillingStack, run_id: str = RUN) -> list[str]:
    from cswhmcs.billing.messages import BILL, Account, RunContext, WorkMessage

    run = RunContext(run_id, BILL, OCT_END)
    return [WorkMessage(run, Account(a.service_id, a.cs_user_id, a.client_id, a.email, a.cs_currency)).to_json()
            for a in stack.accounts]


def seed(stack: BillingStack, n: int) -> None:
    for _ in range(n):
        a = stack.add_account("USD")
        stack.add_usage(a, "containerm", start=OCT_END - timedelta(days=1), end=OCT_END, total="1")


@dataclass
class Secret:
    sm: Any
    arn: str
    values: dict[str, str]

    def put(self, **changes: str) -> None:
        self.values.update(changes)
        self.sm.put_secret_value(SecretId=self.arn, SecretString=json.dumps(self.values))


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Returns ``configure(settings_values)``: the credentials go to moto's Secrets Manager (named by
    CONFIG_SECRET_ARN), the rest to the environment; caches are reset before and after."""
    from cswhmcs.api import reset_deps
    from cswhmcs.billing.handlers import _worker_deps
    from cswhmcs.config import SECRET_KEYS

    # DynamoDB Local keeps its tables per access key: keep the suite's, not moto's
    with mock_aws(config={"core": {"mock_credentials": False}}):
        sm = boto3.client("secretsmanager", region_name="us-east-1")

        def configure(env: dict[str, str]) -> Secret:
            values = {k: v for k, v in env.items() if k in SECRET_KEYS}
            arn = sm.create_secret(Name="cswhmcs-config", SecretString=json.dumps(values))["ARN"]
            for k, v in env.items():
                if k in SECRET_KEYS:
                    monkeypatch.delenv(k, raising=False)
                else:
                    monkeypatch.setenv(k, v)
            monkeypatch.setenv("CONFIG_SECRET_ARN", arn)
            reset_deps()
            _worker_deps.cache_clear()
            return Secret(sm, arn, values)

        yield configure
        _worker_deps.cache_clear()
        reset_deps()


def env_of(settings: Any) -> dict[str, str]:
    out = {}
    for key, value in settings.model_dump().items():
        if value is not None:
            out[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return out


# ---------------------------------------------------------------------- billing


def test_a_warm_worker_bills_the_next_account_with_the_rotated_secret(tables: Any, cs_sandbox: Any,
                                                                      whmcs_sandbox: Any, secret_env: Any) -> None:
    from cswhmcs.billing.handlers import worker_handler

    # Given a warm worker that billed an account with the current secret
    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    seed(stack, 2)
    secret = secret_env({**env_of(stack.settings), "BILLING_WHMCS_RATE": "1000"})
    first, second = messages(stack)
    assert worker_handler(records([first]), None) == {"batchItemFailures": []}

    # When the ComputeStacks secret is rotated (ComputeStacks and Secrets Manager), well within the
    # 5 minutes the worker caches its settings
    new_secret = "cs-rotated-secret-Vb7nQ2xK9mLp4Rt8"
    cs_sandbox.add_credential(cs_sandbox.api_key, new_secret, user_id=owner(cs_sandbox)["id"])
    secret.put(CS_API_SECRET=new_secret)
    before = len(cs_sandbox.requests)

    # Then the next account is billed at once: one refused request, a forced re-read, the new pair
    assert worker_handler(records([second]), None) == {"batchItemFailures": []}
    assert len(whmcs_sandbox.billable_items) == 2
    assert [r["status"] for r in cs_sandbox.requests[before:]].count(401) == 1
    assert owner(cs_sandbox)["failed_attempts"] == 0  # the success after it reset the count


def _process(settings: Any, store: Any, base: Any | None = None) -> Any:
    """The worker deps one execution environment (a separate process) would have: its own memory."""
    from cswhmcs import factory
    from cswhmcs.billing.credentials import guarded_client
    from cswhmcs.billing.options import BillingOptions
    from cswhmcs.billing.worker import WorkerDeps

    base = base or factory.SettingsCredentials(settings, memory=factory.RejectedPairs())
    cs, gate = guarded_client(settings, store, base=base)
    return WorkerDeps.from_settings(settings, cs=cs, whmcs=factory.whmcs_client(settings), ledger=store,
                                    options=BillingOptions(whmcs_rate=1000), cs_gate=gate)


def _in_parallel(jobs: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_a_wrong_secret_costs_one_failed_login_per_run_whatever_the_workers_and_loses_nothing(
        tables: Any, cs_sandbox: Any, whmcs_sandbox: Any) -> None:
    from cswhmcs.billing.handlers import worker_handler
    from cswhmcs.billing.ledger import Ledger

    # Given 12 accounts and 4 workers (separate processes) whose secret ComputeStacks refuses
    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    seed(stack, 12)
    bodies = messages(stack)
    wrong = stack.settings.model_copy(update={"CS_API_SECRET": SecretStr("not-the-secret-at-all-123")})
    ledger = Ledger.from_settings(wrong, tables.resource())
    workers = [_process(wrong, ledger) for _ in range(4)]

    # When they work on the run's messages at once
    answers = _in_parallel([lambda d=d, i=i: worker_handler(records(bodies[i::4]), None, deps=d)
                            for i, d in enumerate(workers)])

    # Then ComputeStacks saw one failed login (its owner is far from the lockout), every account was
    # acknowledged as skipped, nothing was billed and no account's scan floor moved
    assert failed_logins(cs_sandbox) == 1
    assert owner(cs_sandbox)["failed_attempts"] == 1 and owner(cs_sandbox)["locked_at"] is None
    assert answers == [{"batchItemFailures": []}] * 4
    assert whmcs_sandbox.billable_items == []
    assert not [i for i in tables.scan("ledger") if i["sk"] == "state"]

    # And once the secret is corrected, the same run's redelivered messages bill every account
    right = _process(stack.settings, ledger)
    assert worker_handler(records(bodies), None, deps=right) == {"batchItemFailures": []}
    assert len(whmcs_sandbox.billable_items) == 12 and failed_logins(cs_sandbox) == 1


class _EverNewWrongSecret:
    """A secret rotated to another wrong value every time it is re-read (the worst case)."""

    def __init__(self, url: str, key: str, tag: str) -> None:
        from cswhmcs import factory

        self.url, self.key, self.tag, self.n = url, key, tag, 0
        self._memory = factory.RejectedPairs()

    def current(self) -> tuple[str, str]:
        return self.key, f"wrong-{self.tag}-{self.n}"

    def rejected(self, used: tuple[str, str]) -> tuple[str, str] | None:
        self._memory.add(self.url, used)
        self.n += 1
        return self.current()

    def usable(self, pair: tuple[str, str]) -> bool:
        return (self.url, pair) not in self._memory

    def mark_rejected(self, pair: tuple[str, str]) -> None:
        self._memory.add(self.url, pair)


def test_the_second_401_of_a_run_stops_it_whatever_the_secret_does(tables: Any, cs_sandbox: Any,
                                                                   whmcs_sandbox: Any) -> None:
    from cswhmcs.billing.handlers import worker_handler
    from cswhmcs.billing.ledger import Ledger

    # Given 4 workers whose secrets keep changing to other wrong values
    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    seed(stack, 8)
    bodies = messages(stack)
    ledger = Ledger.from_settings(stack.settings, tables.resource())
    workers = [_process(stack.settings, ledger, _EverNewWrongSecret(cs_sandbox.url, cs_sandbox.api_key, str(i)))
               for i in range(4)]

    # When they work on the run
    answers = _in_parallel([lambda d=d, i=i: worker_handler(records(bodies[i::4]), None, deps=d)
                            for i, d in enumerate(workers)])

    # Then at most 2 failed logins, and the run stopped for every worker
    assert failed_logins(cs_sandbox) == 2
    assert owner(cs_sandbox)["locked_at"] is None
    assert answers == [{"batchItemFailures": []}] * 4 and whmcs_sandbox.billable_items == []
    assert ledger.cs_credential_state(RUN).failures == 2


def test_an_in_process_run_with_a_wrong_secret_reports_it_once_per_account_and_exits_3(
        tables: Any, cs_sandbox: Any, whmcs_sandbox: Any) -> None:
    from cswhmcs.billing.credentials import STOP_MESSAGE

    stack = BillingStack(tables, cs_sandbox, whmcs_sandbox)
    stack.settings = stack.settings.model_copy(update={"CS_API_SECRET": SecretStr("not-the-secret-at-all-456")})
    seed(stack, 8)
    summary = stack.run(OCT_END)
    assert failed_logins(cs_sandbox) == 1
    assert summary.exit_code == 3 and [m for _s, _u, m in summary.failed] == [STOP_MESSAGE] * 8
    assert "ComputeStacks rejected the API credentials" in summary.render()


# ---------------------------------------------------------------------- API routes


def test_an_api_route_after_a_rotation_works_at_once_and_a_rejected_pair_is_not_sent_again(
        live_stack: LiveStack, secret_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from cswhmcs import factory
    from tests.conftest import stack_env

    cs = live_stack.cs
    secret = secret_env(stack_env(live_stack.tables, cs, live_stack.whmcs))
    assert live_stack.call("/v1/user-groups", {}).status_code == 200

    # When the secret is rotated (well within the 5 minutes the functions cache it)
    cs.add_credential(cs.api_key, "cs-api-rotated-1-Hq3wE8rT5yU2", user_id=owner(cs)["id"])
    secret.put(CS_API_SECRET="cs-api-rotated-1-Hq3wE8rT5yU2")
    before = len(cs.requests)
    # Then the next request works: 401, forced re-read, one retry with the new pair
    assert live_stack.call("/v1/user-groups", {}).status_code == 200
    assert [r["status"] for r in cs.requests[before:]] == [401, 200]

    # When ComputeStacks is rotated but the secret not (yet)
    cs.add_credential(cs.api_key, "cs-api-rotated-2-Zx6cV1bN7mK0", user_id=owner(cs)["id"])
    first = live_stack.call("/v1/user-groups", {})
    sent = len(cs.requests)
    again = live_stack.call("/v1/user-groups", {})
    # Then the pair is refused once, then not sent again: the answer is immediate
    assert (first.status_code, again.status_code) == (502, 502)
    assert again.json()["message"] == "ComputeStacks rejected the API credentials."
    assert len(cs.requests) == sent and owner(cs)["failed_attempts"] == 1

    # And once the secret holds the new pair, the next re-read (at most every RECHECK_SECONDS) finds it
    secret.put(CS_API_SECRET="cs-api-rotated-2-Zx6cV1bN7mK0")
    monkeypatch.setattr(factory, "RECHECK_SECONDS", 0.0)
    assert live_stack.call("/v1/user-groups", {}).status_code == 200
    assert owner(cs)["failed_attempts"] == 0
