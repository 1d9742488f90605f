"""The month-end deadline check (template.yaml MonthEndDeadline -> planner, mode "check"): MonthEndUnfinished is 1
until the month's bill run is planned and its work queue drained, then 0. DynamoDB Local, the planner's own entry
point (functions/billing_planner/app.py), SQS faked (its queue depth)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cswhmcs.billing.planner import check_cut_off

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHECK = {"mode": "check", "deadline_minutes": 240, "scheduled_time": "2026-11-01T03:00:00Z", "execution_id": "c",
         "timezone": "UTC"}
BILL = {"mode": "bill", "scheduled_time": "2026-10-31T23:00:00Z", "execution_id": "b", "timezone": "UTC"}


class Sqs:
    """SendMessageBatch accepted; GetQueueAttributes answers ``depth`` messages (split over the three counts)."""

    def __init__(self) -> None:
        self.depth = 0
        self.asked: list[dict[str, Any]] = []

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        return {"Attributes": {"ApproximateNumberOfMessages": str(self.depth // 2),
                               "ApproximateNumberOfMessagesNotVisible": str(self.depth - self.depth // 2),
                               "ApproximateNumberOfMessagesDelayed": "0"}}


class Whmcs:
    def version(self) -> str:
        return "8.10.1"

    def get_currencies(self) -> list[dict[str, Any]]:
        return [{"id": 1, "code": "USD", "rate": "1"}]


@pytest.fixture
def planner(tables: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    import boto3

    from cswhmcs.config import get_settings

    sqs = Sqs()
    real_client = boto3.client
    monkeypatch.setattr(boto3, "client", lambda name, *a, **k: sqs if name == "sqs" else real_client(name, *a, **k))
    for key, value in tables.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORK_QUEUE_URL", "https://sqs.example/work")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # as in AWS: the EMF lines are what is alarmed
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location("billing_planner_app", ROOT / "functions/billing_planner/app.py")
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    capsys.readouterr()

    def invoke(event: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
        answer = app.lambda_handler(event, None)
        emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
        return answer, [v for m in emf for v in m.get("MonthEndUnfinished", [])]

    invoke.sqs = sqs  # type: ignore[attr-defined]
    yield invoke
    get_settings.cache_clear()


def test_the_check_alarms_until_the_month_end_run_is_planned_and_worked(planner: Any) -> None:
    from cswhmcs.billing.handlers import planner_handler

    # Given no month-end run at all (the schedule never started it): unfinished
    answer, values = planner(CHECK)
    assert (answer["finished"], answer["reason"], answer["run"], values) == (
        False, "not-started", "bill#2026-10-31T23:00:00Z", [1.0])
    # When the month-end run is planned (no account: planned at once) and 3 work messages are still queued
    planned = planner_handler(BILL, None, None, whmcs=Whmcs(), sqs=planner.sqs)
    assert planned["run"] == "bill#2026-10-31T23:00:00Z" and planned["skipped"] == ""
    planner.sqs.depth = 3
    answer, values = planner(CHECK)
    assert (answer["finished"], answer["reason"], answer["queued"], values) == (False, "queued", 3, [1.0])
    assert planner.sqs.asked[-1]["QueueUrl"] == "https://sqs.example/work"
    # Then once the queue is drained the check says finished, and the metric is 0
    planner.sqs.depth = 0
    answer, values = planner(CHECK)
    assert (answer["finished"], answer["reason"], values) == (True, "finished", [0.0])


def test_a_run_still_planning_is_unfinished(planner: Any, tables: Any) -> None:
    from datetime import timedelta

    from cswhmcs.billing.ledger import Ledger

    ledger = Ledger.from_settings(tables.settings())
    ledger.begin_run("bill#2026-10-31T23:00:00Z", kind="bill", as_of=datetime(2026, 10, 31, 23, tzinfo=UTC),
                     lease=timedelta(minutes=14))
    answer, values = planner(CHECK)
    assert (answer["finished"], answer["reason"], values) == (False, "planning", [1.0])
    assert planner.sqs.asked == []  # the queue is not asked before the plan is complete


def test_the_cut_off_is_found_on_the_schedule_zones_clock() -> None:
    # New York: 23:00 EDT on 31 October 2026; the clocks go back at 02:00 on 1 November, so the check 240 minutes
    # later on the wall clock (03:00 EST = 08:00Z) is 5 hours after the cut-off (03:00Z)
    ny = {**CHECK, "scheduled_time": "2026-11-01T08:00:00Z", "timezone": "America/New_York"}
    assert check_cut_off(ny) == datetime(2026, 11, 1, 3, tzinfo=UTC)
    assert check_cut_off(CHECK) == datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert check_cut_off({**CHECK, "deadline_minutes": "30", "scheduled_time": "2026-10-31T23:30:00Z"}) == \
        datetime(2026, 10, 31, 23, tzinfo=UTC)
    from cswhmcs.errors import InvalidInput

    for bad in ({**CHECK, "deadline_minutes": 0}, {**CHECK, "deadline_minutes": "soon"}, {"mode": "check"}):
        with pytest.raises(InvalidInput):
            check_cut_off(bad)
