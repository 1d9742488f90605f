"""Month-end billing end to end: DynamoDB Local, the ComputeStacks and WHMCS sandboxes over HTTP, the
real clients, the in-process runner and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.usage import iso
from tests.support.billing_stack import NOV_END, OCT_END, REF, BillingStack, seed_month

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tables: Any, cs_sandbox: Any, whmcs_sandbox: Any) -> BillingStack:
    return BillingStack(tables, cs_sandbox, whmcs_sandbox)


def test_a_full_month_for_several_accounts_and_currencies(stack: BillingStack) -> None:
    # Given four accounts: USD, EUR, EUR->GBP and one with under a cent of usage
    accts = seed_month(stack)

    # When October is billed
    summary = stack.run(OCT_END)

    # Then one item per (account, product) with the exact sum rounded once, in the client's currency
    assert summary.exit_code == 0 and summary.failed == []
    by_ref = stack.items_by_ref()
    assert all(len(items) == 1 for items in by_ref.values())
    got: dict[tuple[int, str], Decimal] = {}
    for ref, (item,) in by_ref.items():
        user = int(ref.split(":")[0])
        product = item["description"].split(":")[0].split(" (")[0].lower()
        got[(user, product)] = Decimal(item["amount"])
        assert item["duedate"] == "2026-11-01" and item["invoiceaction"] == "duedate"
        assert item["unit"] == "quantity"
        assert "(period 2026-10)" in item["description"]
    want = {(a.cs_user_id, p): v for a in accts
            for p, v in stack.expected(a, "2026-10", datetime(2026, 1, 1, tzinfo=UTC), OCT_END).items()}
    assert got == want
    assert accts[3].cs_user_id not in {u for u, _ in got}  # 0.004: carried over
    assert summary.carried == 1

    # The conversion is stated; the quantity is the sum of qty
    [gbp_item] = [i for r, (i,) in by_ref.items() if int(r.split(":")[0]) == accts[2].cs_user_id]
    assert "converted from" in gbp_item["description"] and "EUR at 1 EUR = 0.858696 GBP" in gbp_item["description"]
    [eur_item] = [i for r, (i,) in by_ref.items() if int(r.split(":")[0]) == accts[1].cs_user_id]
    assert Decimal(eur_item["quantity"]) == 2 * len(accts[1].rows)
    assert summary.totals() == {cur: sum((v for (u, _), v in got.items()
                                          if next(a for a in accts if a.cs_user_id == u).client_currency == cur),
                                         Decimal(0))
                                for cur in ("EUR", "GBP", "USD")}


def test_second_run_creates_nothing_next_month_only_new_rows(stack: BillingStack) -> None:
    accts = seed_month(stack)
    stack.run(OCT_END)
    before = stack.whmcs.billable_items

    # When the same month-end runs again
    again = stack.run(OCT_END)

    # Then nothing is created, and no account is read from ComputeStacks again
    assert stack.whmcs.billable_items == before and again.created == [] and again.accounts_read == 0

    # When November's usage is billed
    for a in accts[:2]:
        stack.add_usage(a, "containerm", start=OCT_END + timedelta(hours=1), end=NOV_END, total="0.5")
    nov = stack.run(NOV_END)

    # Then only rows that ended after October's cut-off are in November's items
    new = [i for i in stack.whmcs.billable_items if i not in before]
    assert len(new) == len(nov.created) == 2
    for a in accts[:2]:
        want = stack.expected(a, "2026-11", OCT_END, NOV_END)
        mine = [i for i in new if f"[ref {a.cs_user_id}:2026-11:" in i["description"]]
        assert sorted(Decimal(i["amount"]) for i in mine) == sorted(want.values())
        assert all(i["duedate"] == "2026-12-01" for i in mine)


def test_preview_writes_nothing_anywhere(stack: BillingStack) -> None:
    seed_month(stack)
    stack.cs.reset_requests()

    summary = stack.run(OCT_END, dry_run=True)

    assert summary.dry_run and len(summary.would_bill) == 4  # containerm, storage, containerl, containerm
    assert stack.whmcs.billable_items == []
    assert stack.tables.scan("ledger") == []
    assert {r["method"] for r in stack.cs.requests} == {"GET"}
    assert "AddBillableItem" not in stack.whmcs.actions_called()
    assert "PREVIEW" in summary.render() and "totals per currency" in summary.render()


def test_whmcs_before_8_2_gets_hours(tables: Any, cs_sandbox: Any) -> None:
    from sandboxes.whmcs import WhmcsSandbox

    old = WhmcsSandbox(version="8.1.3").start()
    try:
        stack = BillingStack(tables, cs_sandbox, old)
        acct = stack.add_account("USD")
        stack.add_usage(acct, "containerm", start=OCT_END - timedelta(days=2), end=OCT_END, total="1", qty="3")
        stack.run(OCT_END)
        [item] = old.billable_items
        assert item["unit"] == "hours" and Decimal(item["hours"]) == 3 * len(acct.rows)
        assert [a for a in old.actions_called() if a == "WhmcsDetails"] == ["WhmcsDetails"]  # once per run
    finally:
        old.stop()


def test_whmcs_details_denied_means_hours(tables: Any, cs_sandbox: Any) -> None:
    from sandboxes.whmcs import WhmcsSandbox

    wh = WhmcsSandbox(deny_actions=["WhmcsDetails"]).start()
    try:
        stack = BillingStack(tables, cs_sandbox, wh)
        acct = stack.add_account("USD")
        stack.add_usage(acct, "containerm", start=OCT_END - timedelta(days=1), end=OCT_END, total="1")
        stack.run(OCT_END)
        [item] = wh.billable_items
        assert item["unit"] == "hours"  # 8.2+ reads unit=hours + quantity: still billed right
    finally:
        wh.stop()


def test_cs_pacing_keeps_the_run_under_the_budget(stack: BillingStack) -> None:
    # Given 12 accounts and a ComputeStacks budget of 4 requests at once, then 20 per second
    for _ in range(12):
        a = stack.add_account("USD")
        stack.add_usage(a, "containerm", start=OCT_END - timedelta(days=1), end=OCT_END, total="1")
    rt = stack.runtime(options=BillingOptions(cs_limit=6000 * 4 // 3, cs_share=0.75, cs_burst=4, cs_window=300,
                                              concurrency=4, whmcs_rate=1000))
    stack.cs.reset_requests()

    # When billed
    summary = stack.run(OCT_END, runtime=rt)
    rt.close()

    # Then the requests (a currency lookup and a listing per account, and the run's one credential check)
    # were paced: ~20 per second
    assert summary.failed == [] and len(stack.whmcs.billable_items) == 12
    times = sorted(r["at"] for r in stack.cs.requests)
    assert len(times) == 25
    assert times[-1] - times[0] >= (25 - 4) / 20 * 0.9


def test_cli_run_attention_resolve(stack: BillingStack, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from cswhmcs.cli import main
    from cswhmcs.config import get_settings

    acct = stack.add_account("USD")
    stack.add_usage(acct, "containerm", start=OCT_END - timedelta(days=2), end=OCT_END, total="1.25")
    for key, value in stack.settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(key, value.get_secret_value() if hasattr(value, "get_secret_value") else str(value))
    monkeypatch.setenv("WHMCS_TIMEOUT", "0.5")
    get_settings.cache_clear()
    stack.whmcs.timeout_after_commit_next(1, 1.0, actions=["AddBillableItem"])

    # When the operator runs the month-end and WHMCS times out after creating the item
    code = main(["billing", "run", "--as-of", iso(OCT_END)])
    out = capsys.readouterr().out

    # Then the exit code says attention is needed, and the summary names the line
    ref = f"{acct.cs_user_id}:2026-10:"
    assert code == 3 and "needing attention: 1 from this run" in out and ref in out
    assert main(["billing", "attention"]) == 3
    listed = capsys.readouterr().out
    line_ref = REF.search(stack.whmcs.billable_items[0]["description"]).group(1)  # type: ignore[union-attr]
    assert line_ref in listed

    # When they find the item in WHMCS and record it
    assert main(["billing", "resolve", line_ref, "--billed", str(stack.whmcs.billable_items[0]["id"])]) == 0
    capsys.readouterr()

    # Then nothing needs attention and a new run sends nothing
    assert main(["billing", "attention"]) == 0
    assert main(["billing", "run", "--as-of", iso(OCT_END)]) == 0
    assert len(stack.whmcs.billable_items) == 1
    assert main(["billing", "preview", "--as-of", iso(OCT_END)]) == 0
    assert "PREVIEW" in capsys.readouterr().out
    get_settings.cache_clear()


def test_usage_after_a_mid_month_run_waits_for_the_next_period_and_is_shown(
        stack: BillingStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cswhmcs.cli import main
    from cswhmcs.config import get_settings

    acct = stack.add_account("EUR")
    for key, value in stack.settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(key, value.get_secret_value() if hasattr(value, "get_secret_value") else str(value))
    get_settings.cache_clear()
    oct1 = datetime(2026, 10, 1, tzinfo=UTC)
    sp = stack.add_usage(acct, "containerm", start=oct1, end=oct1 + timedelta(days=10), total="0.5",
                         every=timedelta(days=1))

    # Given an operator's `billing run` in the middle of October (as-of = now) that billed October's line
    assert main(["billing", "run", "--as-of", iso(oct1 + timedelta(days=15))]) == 0
    capsys.readouterr()
    assert [Decimal(i["amount"]) for i in stack.whmcs.billable_items] == [Decimal("5.00")]

    # And one more row of that product in October, ending before the month-end's as-of
    stack.add_usage(acct, "containerm", sp=sp, start=oct1 + timedelta(days=19), end=oct1 + timedelta(days=20),
                    total="0.15", every=timedelta(days=1))

    # When the month-end runs
    assert main(["billing", "run", "--as-of", iso(OCT_END)]) == 0
    out = capsys.readouterr().out

    # Then no second item for (service, product, period), and the summary says where the row went
    assert len(stack.whmcs.billable_items) == 1
    assert "1 new usage rows" in out and "billable items created: 0" in out
    assert "held for the next period (a line for this period was already billed): 1 lines (0.15 EUR)" in out
    assert main(["billing", "preview", "--as-of", iso(OCT_END), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["held_for_next_period"] == {"lines": 1, "amounts": {"EUR": "0.15"}}

    # When November's month-end runs, its line bills the row, and nothing is held any more
    assert main(["billing", "run", "--as-of", iso(NOV_END), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(ln["period"], ln["amount"]) for ln in summary["lines"]] == [("2026-11", "0.15")]
    assert summary["held_for_next_period"] == {"lines": 0, "amounts": {}}
    assert [Decimal(i["amount"]) for i in stack.whmcs.billable_items] == [Decimal("5.00"), Decimal("0.15")]
    get_settings.cache_clear()


def test_lambda_entry_points_end_to_end(stack: BillingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """functions/billing_planner and functions/billing_worker as Lambda calls them (SQS stood in)."""
    import importlib.util
    import json
    from pathlib import Path

    import boto3

    from cswhmcs.billing import handlers
    from cswhmcs.config import get_settings

    root = Path(__file__).resolve().parents[2]

    def load(name: str) -> Any:
        spec = importlib.util.spec_from_file_location(f"{name}_app", root / "functions" / name / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    class FakeSqs:
        def __init__(self) -> None:
            self.bodies: list[str] = []

        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
            assert QueueUrl == "https://sqs.example/work" and len(Entries) <= 10
            self.bodies += [e["MessageBody"] for e in Entries]
            return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    sqs = FakeSqs()
    real_client = boto3.client
    monkeypatch.setattr(boto3, "client", lambda name, *a, **k: sqs if name == "sqs" else real_client(name, *a, **k))
    for key, value in stack.settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(key, value.get_secret_value() if hasattr(value, "get_secret_value") else str(value))
    monkeypatch.setenv("WORK_QUEUE_URL", "https://sqs.example/work")
    monkeypatch.setenv("WORKER_MAX_CONCURRENCY", "2")
    monkeypatch.setenv("BILLING_WHMCS_RATE", "1000")
    get_settings.cache_clear()
    handlers._worker_deps.cache_clear()
    accts = [stack.add_account("USD"), stack.add_account("EUR", "USD")]
    for a in accts:
        stack.add_usage(a, "containerm", start=OCT_END - timedelta(days=3), end=OCT_END, total="0.25")
    try:
        # Given the Scheduler's month-end input
        event = json.loads((root / "events/billing_planner.json").read_text())

        # When the planner runs, twice (a retried trigger), and the worker gets its messages
        planned = load("billing_planner").lambda_handler(event, None)
        again = load("billing_planner").lambda_handler(event, None)
        template = json.loads((root / "events/billing_worker.json").read_text())["Records"][0]
        records = [dict(template, messageId=f"m{i}", body=b) for i, b in enumerate(sqs.bodies)]
        answer = load("billing_worker").lambda_handler({"Records": records}, None)

        # Then one message per account, one run, every account billed, no failure reported
        assert planned["accounts"] == 2 and again["skipped"] == "done" and len(sqs.bodies) == 2
        assert answer == {"batchItemFailures": []}
        assert len(stack.whmcs.billable_items) == 2
        eur = next(i for i in stack.whmcs.billable_items if f"[ref {accts[1].cs_user_id}:" in i["description"])
        assert Decimal(eur["amount"]) == stack.expected(accts[1], "2026-10", OCT_END - timedelta(days=30),
                                                        OCT_END)["containerm"]
    finally:
        get_settings.cache_clear()
        handlers._worker_deps.cache_clear()


def test_cli_takes_the_period_in_the_stacks_timezone(stack: BillingStack, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cswhmcs.cli import main
    from cswhmcs.config import get_settings

    # Given a stack whose schedules run in New York: its October cut-off (23:00 local) is 03:00 UTC on 1 November
    acct = stack.add_account("USD")
    cut_off = datetime(2026, 11, 1, 3, tzinfo=UTC)
    stack.add_usage(acct, "containerm", start=cut_off - timedelta(days=1), end=cut_off, total="0.5")
    for key, value in stack.settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(key, value.get_secret_value() if hasattr(value, "get_secret_value") else str(value))
    get_settings.cache_clear()
    # When the operator previews that cut-off in UTC, and in the stack's zone
    assert main(["billing", "preview", "--as-of", iso(cut_off), "--json"]) == 0
    in_utc = {ln["period"] for ln in json.loads(capsys.readouterr().out)["lines"]}
    assert main(["billing", "preview", "--as-of", iso(cut_off), "--json", "--timezone", "America/New_York"]) == 0
    in_zone = {ln["period"] for ln in json.loads(capsys.readouterr().out)["lines"]}
    # Then UTC names November (the instant before 03:00 UTC on 1 November), the stack's zone October, as the
    # scheduled month-end run in that zone does
    assert in_utc == {"2026-11"} and in_zone == {"2026-10"}
    # And a zone the system does not know is refused in one sentence, before anything is read
    stack.cs.reset_requests()
    assert main(["billing", "run", "--as-of", iso(cut_off), "--timezone", "Mars/Olympus"]) == 2
    assert "'Mars/Olympus' is not an IANA time zone" in capsys.readouterr().err
    assert stack.cs.requests == [] and stack.whmcs.billable_items == []
    get_settings.cache_clear()
