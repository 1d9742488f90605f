"""Issue 11 section 1 and 6 in the template: tracing, log retention, the operator's alarms, one policy for the
account functions, the replay table, no unused environment variable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cswhmcs import observability
from cswhmcs.local.template import Template
from tests.infrastructure.imports import reachable

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_FUNCTIONS = {"CreateAccountFunction", "SuspendAccountFunction", "UnsuspendAccountFunction",
                     "TerminateAccountFunction", "ChangePasswordFunction", "ChangePackageFunction",
                     "SingleSignOnFunction", "AccountOverviewFunction"}
TOPIC = [{"Ref": "OperatorAlarmTopic"}]


@pytest.fixture(scope="module")
def tpl() -> Template:
    return Template(ROOT / "template.yaml")


def functions(tpl: Template) -> dict[str, Any]:
    return {k: v for k, v in tpl.resources.items() if v["Type"] == "AWS::Serverless::Function"}


def of_type(tpl: Template, kind: str) -> dict[str, Any]:
    return {k: v["Properties"] for k, v in tpl.resources.items() if v["Type"] == kind}


def alarms_on(tpl: Template, namespace: str, metric: str) -> list[dict[str, Any]]:
    return [p for p in of_type(tpl, "AWS::CloudWatch::Alarm").values()
            if (p.get("Namespace"), p.get("MetricName")) == (namespace, metric)]


def assert_above_zero(alarm: dict[str, Any]) -> None:
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "GreaterThanThreshold", 0, 1)
    assert alarm["AlarmActions"] == TOPIC


def test_every_function_and_the_api_are_traced(tpl: Template) -> None:
    assert tpl.data["Globals"]["Function"]["Tracing"] == "Active"
    for name, fn in functions(tpl).items():
        assert fn["Properties"].get("Tracing", "Active") == "Active", name
    assert tpl.resources["IntegrationApi"]["Properties"]["TracingEnabled"] is True
    # The tracer's SDK ships in the layer
    requirements = (ROOT / "layers/shared/requirements.txt").read_text(encoding="utf-8")
    assert "aws-xray-sdk" in requirements


def test_every_function_has_its_log_group_with_the_retention_parameter(tpl: Template) -> None:
    param = tpl.data["Parameters"]["LogRetentionDays"]
    assert param["Default"] == 90 and 90 in param["AllowedValues"]
    # CloudWatch Logs' allowed retention values only
    assert set(param["AllowedValues"]) <= {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                                           1827, 2192, 2557, 2922, 3288, 3653}
    groups = of_type(tpl, "AWS::Logs::LogGroup")
    named = {p["LogGroupName"]["Fn::Sub"]: p for p in groups.values()}
    resources = tpl.resources
    for name, fn in functions(tpl).items():
        # Its own group, named after the stack (Lambda's /aws/lambda/<name> may exist already on an older stack)
        group = named.get(f"/${{AWS::StackName}}/{name}")
        assert group is not None, f"{name} has no log group"
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        ref = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[ref]["Properties"] is group, f"{name} does not write to its declared log group"
    assert len(groups) == len(functions(tpl))


def test_lines_needing_attention_alarm_the_operator(tpl: Template) -> None:
    (alarm,) = alarms_on(tpl, observability.NAMESPACE, observability.LINES_NEEDING_ATTENTION)
    assert_above_zero(alarm)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": tpl.global_env()["POWERTOOLS_SERVICE_NAME"]}]
    assert alarm["Statistic"] == "Sum"


def test_each_function_alarms_on_errors_and_on_throttles(tpl: Template) -> None:
    for metric in ("Errors", "Throttles"):
        alarmed = {}
        for alarm in alarms_on(tpl, "AWS/Lambda", metric):
            assert_above_zero(alarm)
            assert alarm["Statistic"] == "Sum"
            (dim,) = alarm["Dimensions"]
            assert dim["Name"] == "FunctionName"
            alarmed[dim["Value"]["Ref"]] = alarm
        assert set(alarmed) == set(functions(tpl)), metric


def test_api_5xx_alarm_is_on_the_stage_of_the_integration_api(tpl: Template) -> None:
    (alarm,) = alarms_on(tpl, "AWS/ApiGateway", "5XXError")
    assert_above_zero(alarm)
    api = tpl.resources["IntegrationApi"]["Properties"]
    dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert dims == {"ApiName": api["Name"], "Stage": api["StageName"]}


def test_both_dead_letter_queues_are_alarmed(tpl: Template) -> None:
    alarmed = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
               for a in alarms_on(tpl, "AWS/SQS", "ApproximateNumberOfMessagesVisible")}
    assert alarmed == {"BillingWorkDLQ", "BillingScheduleDLQ"}


def test_a_month_end_run_not_finished_by_the_deadline_is_alarmed(tpl: Template) -> None:
    # Given the deadline parameter and its check schedule on the planner
    param = tpl.data["Parameters"]["MonthEndDeadlineMinutes"]
    assert param["Default"] == 240
    event = tpl.resources["BillingPlannerFunction"]["Properties"]["Events"]["MonthEndDeadline"]
    props = event["Properties"]
    assert event["Type"] == "ScheduleV2"
    payload = json.loads(props["Input"]["Fn::Sub"].replace("${MonthEndDeadlineMinutes}", "240"))
    assert payload["mode"] == "check" and payload["deadline_minutes"] == 240
    assert "<aws.scheduler.scheduled-time>" in payload["scheduled_time"] and payload["timezone"] == "${BillingTimezone}"
    month_end = tpl.resources["BillingPlannerFunction"]["Properties"]["Events"]["MonthEnd"]["Properties"]
    assert props["ScheduleExpressionTimezone"] == month_end["ScheduleExpressionTimezone"]
    assert props["DeadLetterConfig"] == month_end["DeadLetterConfig"] and props["RetryPolicy"]
    # Then each allowed value's schedule fires that many minutes after the 23:00 cut-off of the last day
    assert props["ScheduleExpression"] == {"Fn::FindInMap": ["MonthEndDeadline", {"Ref": "MonthEndDeadlineMinutes"},
                                                             "Cron"]}
    mapping = tpl.data["Mappings"]["MonthEndDeadline"]
    assert {int(k) for k in mapping} == set(param["AllowedValues"])
    for minutes, row in mapping.items():
        minute, hour, day = row["Cron"].removeprefix("cron(").split()[:3]
        after = int(hour) * 60 + int(minute) + (24 * 60 if day == "1" else 0) - 23 * 60
        assert (day in ("L", "1"), after) == (True, int(minutes)), row
    # And the metric the check emits is alarmed
    (alarm,) = alarms_on(tpl, observability.NAMESPACE, observability.MONTH_END_UNFINISHED)
    assert_above_zero(alarm)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": tpl.global_env()["POWERTOOLS_SERVICE_NAME"]}]
    assert alarm["Statistic"] == "Maximum"
    # (it may read the queue's depth)
    statements = [s for p in tpl.resources["BillingPlannerFunction"]["Properties"]["Policies"]
                  for s in p.get("Statement", [])]
    assert any(s["Action"] == "sqs:GetQueueAttributes" and s["Resource"] == {"Fn::GetAtt": ["BillingWorkQueue", "Arn"]}
               for s in statements)


def test_the_account_functions_share_one_managed_policy(tpl: Template) -> None:
    policies = of_type(tpl, "AWS::IAM::ManagedPolicy")
    assert list(policies) == ["AccountFunctionsPolicy"]
    statements = policies["AccountFunctionsPolicy"]["PolicyDocument"]["Statement"]
    assert {s["Sid"]: (s["Action"], s["Resource"]) for s in statements} == {
        "ReplayGuard": ("dynamodb:PutItem", {"Fn::GetAtt": ["ReplayTable", "Arn"]}),
        "AccountMappings": (["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                            {"Fn::GetAtt": ["AccountsTable", "Arn"]}),
    }
    users = {name for name, fn in functions(tpl).items()
             if {"Ref": "AccountFunctionsPolicy"} in fn["Properties"]["Policies"]}
    assert users == ACCOUNT_FUNCTIONS
    # and no account function keeps a copy of its statements inline; the overview alone also reads the ledger
    for name in ACCOUNT_FUNCTIONS:
        inline = [s for p in tpl.resources[name]["Properties"]["Policies"] if "Statement" in p for s in p["Statement"]]
        expected = ([{"Sid": "ReadLedger", "Effect": "Allow", "Action": "dynamodb:Query",
                      "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]}}]
                    if name == "AccountOverviewFunction" else [])
        assert inline == expected, name


def test_the_replay_table_is_named_for_what_it_holds(tpl: Template) -> None:
    assert "IdempotencyTable" not in tpl.resources
    table = tpl.resources["ReplayTable"]
    assert table["DeletionPolicy"] == "Retain"
    assert tpl.global_env()["REPLAY_TABLE"] == {"Ref": "ReplayTable"}
    assert "IDEMPOTENCY_TABLE" not in json.dumps(tpl.data)
    # Every signed API function (the replay guard) may write it, the billing functions may not, nor the unsigned
    # users webhook (token-authenticated: a repeated delivery only reads the user back again)
    for name, fn in functions(tpl).items():
        text = json.dumps(fn["Properties"]["Policies"])
        signed = any(e["Type"] == "Api" for e in fn["Properties"]["Events"].values()) and name != "CsUserHookFunction"
        assert ("ReplayTable" in text or "AccountFunctionsPolicy" in text) is signed, name


def test_no_function_gets_a_variable_its_code_never_mentions(tpl: Template) -> None:
    # Every variable a function is given (Globals + its own) is mentioned by a module its app.py can import
    # (a static walk; the settings model, which names them all, does not count).
    names = set(tpl.global_env())
    for fn in functions(tpl).values():
        names |= set((fn["Properties"].get("Environment") or {}).get("Variables") or {})
    for name, fn in functions(tpl).items():
        props = fn["Properties"]
        given = set(tpl.global_env()) | set((props.get("Environment") or {}).get("Variables") or {})
        modules = reachable(ROOT / props["CodeUri"] / "app.py")
        text = "".join(path.read_text(encoding="utf-8") for mod, path in modules.items() if mod != "cswhmcs.config")
        unused = {v for v in given - {"CONFIG_SECRET_ARN"} if v not in text and not v.startswith("POWERTOOLS_")}
        assert unused == set(), f"{name} gets {sorted(unused)}"
    # The worker never reads the queue it is triggered by (only the planner sends to it)
    worker_env = tpl.resources["BillingWorkerFunction"]["Properties"]["Environment"]["Variables"]
    planner_env = tpl.resources["BillingPlannerFunction"]["Properties"]["Environment"]["Variables"]
    assert "WORK_QUEUE_URL" not in worker_env and planner_env["WORK_QUEUE_URL"] == {"Ref": "BillingWorkQueue"}


def test_managed_policy_is_least_privilege(tpl: Template) -> None:
    for name, props in of_type(tpl, "AWS::IAM::ManagedPolicy").items():
        for stmt in props["PolicyDocument"]["Statement"]:
            actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
            assert all(a != "*" and not a.endswith(":*") for a in actions), name
            assert stmt["Resource"] != "*" and "dynamodb:DeleteItem" not in actions, name


def test_cloudwatch_alarms_can_publish_to_the_encrypted_alarm_topic(tpl: Template) -> None:
    # Given the operator alarm topic
    topic = tpl.resources["OperatorAlarmTopic"]["Properties"]
    # Then it is encrypted with the stack's own key, not SNS's AWS managed key (alias/aws/sns), whose policy
    # cannot let CloudWatch alarms publish (their actions would fail silently: no alarm would ever reach anyone)
    assert topic["KmsMasterKeyId"] == {"Ref": "OperatorAlarmTopicKey"}
    key = tpl.resources["OperatorAlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    grants = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
              if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(grants) == 1 and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(grants[0]["Action"])
    assert grants[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    # And the topic's policy lets CloudWatch (of this account only) publish to it
    policies = [p for p in of_type(tpl, "AWS::SNS::TopicPolicy").values() if TOPIC[0] in p["Topics"]]
    assert len(policies) == 1
    (publish,) = [s for s in policies[0]["PolicyDocument"]["Statement"] if s["Action"] == "sns:Publish"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and publish["Resource"] == TOPIC[0]
    assert publish["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
