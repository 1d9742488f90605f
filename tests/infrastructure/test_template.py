"""Template contract: what AWS gets is what the product needs (API.md section 3, issue 2)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cswhmcs.local.template import Template

ROOT = Path(__file__).resolve().parents[2]
API_ROUTES = {
    "/v1/accounts/create", "/v1/accounts/suspend", "/v1/accounts/unsuspend", "/v1/accounts/terminate",
    "/v1/accounts/change-password", "/v1/accounts/change-package", "/v1/accounts/sso", "/v1/accounts/overview",
    "/v1/accounts/list", "/v1/user-groups", "/v1/connection/test", "/v1/hooks/order-paid",
    "/v1/hooks/cs-user", "/v1/hooks/invoice-paid",
}


@pytest.fixture(scope="module")
def tpl() -> Template:
    return Template(ROOT / "template.yaml")


def functions(tpl: Template) -> dict[str, Any]:
    return {k: v for k, v in tpl.resources.items() if v["Type"] == "AWS::Serverless::Function"}


def test_one_function_per_route_on_the_rest_api(tpl: Template) -> None:
    routes = tpl.api_routes()
    assert {r.path for r in routes} == API_ROUTES
    assert len({r.function for r in routes}) == len(API_ROUTES)
    assert all(r.method == "POST" for r in routes)
    for r in routes:
        assert (r.code_uri / "app.py").is_file(), r.function
    assert tpl.data["Globals"]["Function"]["Runtime"] == "python3.13"
    assert tpl.resources["IntegrationApi"]["Type"] == "AWS::Serverless::Api"


def test_data_tables_are_on_demand_recoverable_and_retained(tpl: Template) -> None:
    tables = {t.logical_id: tpl.resources[t.logical_id] for t in tpl.tables()}
    assert set(tables) == {"AccountsTable", "LedgerTable", "ReplayTable"}
    for name, res in tables.items():
        props = res["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", name
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert res["DeletionPolicy"] == "Retain", name
    assert tables["ReplayTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expiration", "Enabled": True}
    # Money records never expire.
    assert "TimeToLiveSpecification" not in tables["LedgerTable"]["Properties"]


def test_each_table_is_named_to_the_functions_through_the_environment(tpl: Template) -> None:
    assert {t.env_var for t in tpl.tables()} == {"ACCOUNTS_TABLE", "LEDGER_TABLE", "REPLAY_TABLE"}


def month_end_schedule(tpl: Template) -> dict[str, Any]:
    props: dict[str, Any] = tpl.resources["BillingPlannerFunction"]["Properties"]["Events"]["MonthEnd"]
    return props


def test_month_end_schedule_is_scheduler_v2_with_retries_dlq_and_time_zone(tpl: Template) -> None:
    event = month_end_schedule(tpl)
    assert event["Type"] == "ScheduleV2"
    p = event["Properties"]
    assert p["ScheduleExpression"] == "cron(0 23 L * ? *)"
    assert p["ScheduleExpressionTimezone"] == {"Ref": "BillingTimezone"}
    assert tpl.data["Parameters"]["BillingTimezone"]["Default"] == "UTC"
    assert p["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert "Arn" in p["DeadLetterConfig"]
    # The run's as-of is the scheduled time, never now().
    payload = json.loads(p["Input"]["Fn::Sub"])
    assert "<aws.scheduler.scheduled-time>" in payload["scheduled_time"]
    # The month is the one of the schedule's own time zone.
    assert payload["timezone"] == "${BillingTimezone}"


def test_month_end_cron_fires_on_the_last_day_of_each_month_at_23_00() -> None:
    # Given the template's own expression (cfn-lint does not check cron semantics)
    from pyawscron import AWSCron

    expr = month_end_schedule(Template(ROOT / "template.yaml"))["Properties"]["ScheduleExpression"]
    inner = re.fullmatch(r"cron\((.*)\)", expr)
    assert inner
    cron = AWSCron(inner.group(1))
    # When: the next 14 occurrences from mid-November 2026 (through a leap February in 2028? no: 2027's 28th)
    runs = []
    dt = datetime(2026, 11, 15, tzinfo=UTC)
    for _ in range(14):
        dt = cron.occurrence(dt).next()
        runs.append(dt)
    # Then: each is 23:00 on the month's last day
    import calendar

    for run in runs:
        assert (run.hour, run.minute) == (23, 0)
        assert run.day == calendar.monthrange(run.year, run.month)[1], run
    assert [r.strftime("%Y-%m-%d") for r in runs[:4]] == ["2026-11-30", "2026-12-31", "2027-01-31", "2027-02-28"]


def test_billing_worker_reports_partial_failures_with_capped_concurrency_and_a_dlq(tpl: Template) -> None:
    worker = tpl.resources["BillingWorkerFunction"]["Properties"]
    event = worker["Events"]["Work"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumConcurrency" in event["Properties"]["ScalingConfig"]
    # Each worker paces itself to its share of the ComputeStacks budget: the share must match the cap.
    assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}
    assert worker["Environment"]["Variables"]["WORKER_MAX_CONCURRENCY"] == {"Ref": "WorkerMaxConcurrency"}
    queue = tpl.resources["BillingWorkQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["BillingWorkDLQ", "Arn"]}


def test_secrets_come_from_secrets_manager_never_parameters_or_plain_env(tpl: Template) -> None:
    params = " ".join(tpl.data["Parameters"]).lower()
    for word in ("secret", "password", "key", "token"):
        assert word not in params
    env = tpl.global_env()
    assert env["CONFIG_SECRET_ARN"] == {"Ref": "ConfigSecret"}
    for name in ("CS_API_KEY", "CS_API_SECRET", "WHMCS_API_SECRET", "WHMCS_API_IDENTIFIER", "SIGNING_SECRET"):
        assert name not in env
    for name, fn in functions(tpl).items():
        assert {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "ConfigSecret"}}} in \
            fn["Properties"]["Policies"], name


def test_policies_are_least_privilege(tpl: Template) -> None:
    for name, fn in functions(tpl).items():
        for policy in fn["Properties"]["Policies"]:
            assert "DynamoDBCrudPolicy" not in policy, name
            for stmt in policy.get("Statement", []):
                actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
                assert all(a != "*" and not a.endswith(":*") for a in actions), name
                assert stmt["Resource"] != "*", name
                assert "dynamodb:DeleteItem" not in actions, name
                assert "dynamodb:Scan" not in actions or name == "BillingPlannerFunction", name


def test_the_users_webhook_reads_and_updates_account_mappings_only(tpl: Template) -> None:
    # Unsigned (token in the URL, checked in code): no replay records, and no new mappings, only the email updated
    props = tpl.resources["CsUserHookFunction"]["Properties"]
    statements = [s for p in props["Policies"] if "Statement" in p for s in p["Statement"]]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], {"Fn::GetAtt": ["AccountsTable", "Arn"]})]
    assert {"Ref": "AccountFunctionsPolicy"} not in props["Policies"]
    assert props["CodeUri"] == "functions/cs_user_hook" and props["Events"]["Api"]["Properties"]["Path"] == \
        "/v1/hooks/cs-user"


def test_api_functions_time_out_before_api_gateway_does(tpl: Template) -> None:
    assert tpl.data["Globals"]["Function"]["Timeout"] < 29
    for route in tpl.api_routes():
        assert "Timeout" not in tpl.resources[route.function]["Properties"]


def test_cfn_lint_passes() -> None:
    from cfnlint.api import lint_file

    matches = lint_file(ROOT / "template.yaml")
    assert [str(m) for m in matches] == []


def alarms(tpl: Template) -> dict[str, Any]:
    return {name: res["Properties"] for name, res in tpl.resources.items() if res["Type"] == "AWS::CloudWatch::Alarm"}


def test_every_dead_letter_queue_has_an_alarm(tpl: Template) -> None:
    queues = {name for name, res in tpl.resources.items()
              if res["Type"] == "AWS::SQS::Queue" and name.endswith("DLQ")}
    alarmed = {props["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
               for props in alarms(tpl).values() if props["Namespace"] == "AWS/SQS"}
    assert queues == {"BillingWorkDLQ", "BillingScheduleDLQ"}
    assert alarmed == queues


def test_every_alarm_reaches_the_operator(tpl: Template) -> None:
    assert alarms(tpl)
    for name, props in alarms(tpl).items():
        assert props["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}], name


def test_a_deposit_credit_open_for_7_days_is_alarmed(tpl: Template) -> None:
    # The metric the daily sweep emits (cswhmcs.credit), with the dimension Powertools gives it
    from cswhmcs.credit import METRIC_NAMESPACE, STALE_METRIC

    matching = [p for p in alarms(tpl).values()
                if (p["Namespace"], p["MetricName"]) == (METRIC_NAMESPACE, STALE_METRIC)]
    assert len(matching) == 1
    alarm = matching[0]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": tpl.global_env()["POWERTOOLS_SERVICE_NAME"]}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    # The sweep runs in the planner with the daily collection
    events = tpl.resources["BillingPlannerFunction"]["Properties"]["Events"]
    assert json.loads(events["DailyCollect"]["Properties"]["Input"]["Fn::Sub"])["mode"] == "collect"


def test_billing_start_is_checked_as_a_date_at_deploy(tpl: Template) -> None:
    # CloudFormation refuses a BillingStart that is not empty or YYYY-MM-DD (the worker would fail on it later)
    param = tpl.data["Parameters"]["BillingStart"]
    pattern = re.compile(param["AllowedPattern"])
    assert param["Default"] == "" and pattern.fullmatch("") and pattern.fullmatch("2026-11-01")
    for typo in ("2026-13-01", "01/11/2026", "2026-11-1", "2026-11-01 ", "November"):
        assert not pattern.fullmatch(typo), typo
    assert "YYYY-MM-DD" in param["ConstraintDescription"]


def test_the_billing_receiver_url_is_an_optional_parameter_every_function_gets(tpl: Template) -> None:
    # API.md section 8: empty (the parameter's default) means the WHMCS API's AddBillableItem path
    param = tpl.data["Parameters"]["WhmcsReceiverUrl"]
    assert param["Type"] == "String" and param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("https://billing.example.com/modules/servers/computestacks/"
                                                       "billing.php")
    assert not pattern.fullmatch("billing.example.com/billing.php")
    assert "billing.php" in param["Description"]
    assert tpl.global_env()["WHMCS_RECEIVER_URL"] == {"Ref": "WhmcsReceiverUrl"}
    # The functions that bill and the connection test see it (no function overrides it)
    for name in ("BillingWorkerFunction", "BillingPlannerFunction", "TestConnectionFunction"):
        own = tpl.resources[name]["Properties"].get("Environment", {}).get("Variables", {})
        assert "WHMCS_RECEIVER_URL" not in own, name


def test_a_billing_worker_takes_up_to_100_messages_so_their_lines_go_to_the_receiver_together(tpl: Template) -> None:
    props = tpl.resources["BillingWorkerFunction"]["Properties"]["Events"]["Work"]["Properties"]
    assert props["BatchSize"] == 100
    # SQS requires a batching window for batches over 10
    assert props["MaximumBatchingWindowInSeconds"] == 5


def test_the_close_schedule_ends_its_lead_at_the_month_end_cut_off(tpl: Template) -> None:
    # docs/billing.md 3b: the close run's as-of (scheduled time + lead_minutes) must be the MonthEnd run's
    # scheduled time, or the month-end run would find no account read for its as-of and read them all again.
    events = tpl.resources["BillingPlannerFunction"]["Properties"]["Events"]

    def minute_of_day(expr: str) -> int:
        minute, hour, dom = expr.removeprefix("cron(").split()[:3]
        assert dom == "L"
        return int(hour) * 60 + int(minute)

    close = events["MonthEndClose"]["Properties"]
    payload = json.loads(close["Input"]["Fn::Sub"])
    assert payload["mode"] == "close" and "<aws.scheduler.scheduled-time>" in payload["scheduled_time"]
    assert close["ScheduleExpressionTimezone"] == month_end_schedule(tpl)["Properties"]["ScheduleExpressionTimezone"]
    cut_off = minute_of_day(month_end_schedule(tpl)["Properties"]["ScheduleExpression"])
    assert minute_of_day(close["ScheduleExpression"]) + payload["lead_minutes"] == cut_off
    # ComputeStacks' last collection before a 23:00 cut-off is at 21:20 (every 3 hours at :20)
    assert minute_of_day(close["ScheduleExpression"]) == 21 * 60 + 20


def test_samconfig_has_the_dev_and_prod_environments_the_readme_deploys_with(tpl: Template) -> None:
    import shlex
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    stacks = {}
    for env in ("dev", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        overrides = dict(kv.split("=", 1) for kv in shlex.split(deploy["parameter_overrides"]))
        # Every override names a template parameter with an allowed value, and the stage is the environment's
        for name, value in overrides.items():
            param = tpl.data["Parameters"][name]
            assert value in param.get("AllowedValues", [value]), (env, name, value)
        assert overrides["Stage"] == env
        stacks[env] = deploy.get("stack_name") or config[env]["global"]["parameters"]["stack_name"]
        assert f"--config-env {env}" in (ROOT / "README.md").read_text()
    assert stacks["dev"] != stacks["prod"]


def test_overdue_suspension_is_an_optional_parameter_of_the_planner_and_the_invoice_paid_hook(tpl: Template) -> None:
    # API.md section 9: OVERDUE_SUSPEND_DAYS, 0 = off (the collection then asks WHMCS for no invoice)
    param = tpl.data["Parameters"]["OverdueSuspendDays"]
    assert (param["Type"], str(param["Default"]), param["MinValue"]) == ("Number", "0", 0)
    for name in ("BillingPlannerFunction", "InvoicePaidHookFunction"):
        env = tpl.resources[name]["Properties"]["Environment"]["Variables"]
        assert env["OVERDUE_SUSPEND_DAYS"] == {"Ref": "OverdueSuspendDays"}, name
    hook = tpl.resources["InvoicePaidHookFunction"]["Properties"]
    assert hook["LoggingConfig"] == {"LogGroup": {"Ref": "InvoicePaidHookFunctionLogGroup"}}
    assert tpl.resources["InvoicePaidHookFunctionLogGroup"]["Properties"]["LogGroupName"] == \
        {"Fn::Sub": "/${AWS::StackName}/InvoicePaidHookFunction"}
    for suffix in ("ErrorsAlarm", "ThrottlesAlarm"):
        assert tpl.resources[f"InvoicePaidHookFunction{suffix}"]["Type"] == "AWS::CloudWatch::Alarm"
    # a failed ModuleSuspend/ModuleUnsuspend (retried by the next collection) reaches the operator
    alarm = tpl.resources["OverdueSuspensionsFailedAlarm"]["Properties"]
    assert alarm["MetricName"] == "OverdueSuspensionsFailed" and alarm["Namespace"] == "ComputeStacksWHMCS"
    # the pass reads the ledger lines an invoice names in one BatchGetItem
    planner = json.dumps(tpl.resources["BillingPlannerFunction"]["Properties"]["Policies"])
    assert "dynamodb:BatchGetItem" in planner and "dynamodb:BatchGetItem" in json.dumps(hook["Policies"])

