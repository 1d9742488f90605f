"""bench/cost.py: the AWS cost model of one month (docs/performance.md), checked on hand-computable cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.cost import TEMPLATE, Prices, monthly_cost, read_template
from cswhmcs.local.template import Template

TINY = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  ComputeStacksRateLimit: {{Type: Number, Default: 3000}}
  WorkerMaxConcurrency: {{Type: Number, Default: 2}}
Globals:
  Function:
    MemorySize: {api_mb}
    Architectures: [x86_64]
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties: {{StageName: prod}}
  Secret:
    Type: AWS::SecretsManager::Secret
{api_functions}  Planner:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: 512
      Events:
        Daily: {{Type: ScheduleV2, Properties: {{ScheduleExpression: "cron(30 0 * * ? *)"}}}}
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: {worker_mb}
      Events:
        Work:
          Type: SQS
          Properties:
            BatchSize: 10
            ScalingConfig: {{MaximumConcurrency: !Ref WorkerMaxConcurrency}}
"""
# Three API functions on the REST API, the same but for their name and path.
API_FUNCTIONS = "".join(
    f"  {name}:\n"
    "    Type: AWS::Serverless::Function\n"
    "    Properties:\n"
    "      Events:\n"
    f"        Api: {{Type: Api, Properties: {{RestApiId: !Ref Api, Path: /v1/accounts/{path}, Method: post}}}}\n"
    for name, path in (("Overview", "overview"), ("Sso", "sso"), ("Suspend", "suspend"))
)

# Everything that is not being checked switched off, so the figures can be computed by hand.
QUIET: dict[str, Any] = {"overview_views": 10.0, "sso_clicks": 0.0, "module_actions": 0.0, "admin_requests": 0.0,
                         "api_duration_s": 0.1, "init_s": 0.0, "collections": 1, "incomplete_fraction": 0.0,
                         "cs_latency_s": 0.0, "ddb_latency_s": 0.0, "whmcs_latency_s": 0.0, "lines_per_account": 1.0,
                         "state_item_kb": 2.0, "line_item_kb": 1.0}


def tiny(tmp_path: Path, *, api_mb: int = 1024, worker_mb: int = 512) -> Path:
    path = tmp_path / f"template-{api_mb}-{worker_mb}.yaml"
    path.write_text(TINY.format(api_mb=api_mb, worker_mb=worker_mb, api_functions=API_FUNCTIONS), encoding="utf-8")
    return path


def line(result: dict[str, Any], service: str, starts: str) -> dict[str, Any]:
    return next(x for x in result["lines"] if x["service"] == service and x["item"].startswith(starts))


def test_hand_computed_month(tmp_path: Path) -> None:
    # Given 1,000 accounts, 10 overview views each (0.1 s at 1 GB, x86), one collection and one month-end,
    # CS_RATE_LIMIT 3,000 (billing: 80 % / 300 s = 8 requests/s) and 2 workers
    r = monthly_cost(1000, template=tiny(tmp_path), **QUIET)
    p = Prices()
    # Then 10,000 REST API requests at $3.50 per million
    assert line(r, "API Gateway", "REST")["quantity"] == 10_000
    assert line(r, "API Gateway", "REST")["usd"] == pytest.approx(10_000 * 3.50 / 1e6)
    # And 10,000 x 0.1 s x 1 GB = 1,000 GB-s at the x86 price
    api = line(r, "Lambda", "API functions: duration")
    assert api["quantity"] == pytest.approx(1000.0)
    assert api["usd"] == pytest.approx(1000.0 * p.lambda_gb_s_x86)
    # And each read holds a worker C / r = 2 / 8 = 0.25 s: (collection + month-end) x 1,000 x 0.25 s = 500 s
    assert r["usage"]["per_read_s"] == pytest.approx(0.25)
    assert r["usage"]["worker_s"] == pytest.approx(500.0)
    assert line(r, "Lambda", "billing worker: duration")["quantity"] == pytest.approx(500.0 * 0.5)
    # And DynamoDB per account: collection 2 WRU + month-end 2 state writes (4) + 1 transaction 2 x (2 + 1) = 12,
    # + the shared window's 1 WRU before each of the 2 ComputeStacks reads = 14
    assert r["usage"]["billing_wru_per_account"] == pytest.approx(14.0)
    # plus the replay guard's 1 WRU per API request
    assert line(r, "DynamoDB", "write request units")["quantity"] == pytest.approx(1000 * 14 + 10_000)
    # And SQS: (1 + 2) x 1,000 messages = 300 batches of 10, each sent, received and deleted, + idle polls
    idle = 5 * 3 * 31 * 1440
    assert r["usage"]["sqs_requests"] == pytest.approx(900 + idle)
    # And the template's one secret is billed for the month; the Scheduler's 33 invocations are free
    assert line(r, "Secrets Manager", "secrets")["usd"] == pytest.approx(0.40)
    # And a template without a customer managed key pays no KMS
    assert line(r, "KMS", "customer managed keys")["usd"] == 0.0
    assert line(r, "EventBridge Scheduler", "invocations")["usd"] == 0.0
    assert r["total_usd"] == pytest.approx(sum(x["usd"] for x in r["lines"]))


def test_memory_size_is_read_from_the_template(tmp_path: Path) -> None:
    small = monthly_cost(1000, template=tiny(tmp_path, api_mb=128, worker_mb=128), **QUIET)
    large = monthly_cost(1000, template=tiny(tmp_path, api_mb=1024, worker_mb=1024), **QUIET)
    for item in ("API functions: duration", "billing worker: duration"):
        assert line(large, "Lambda", item)["quantity"] == pytest.approx(8 * line(small, "Lambda", item)["quantity"])
    # The real template: the values its own loader sees, whatever they are today
    raw = Template(TEMPLATE).data
    default_mb = raw["Globals"]["Function"]["MemorySize"]
    facts = read_template(TEMPLATE)
    for name, res in raw["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            assert facts.functions[name].memory_mb == res["Properties"].get("MemorySize", default_mb)
    assert facts.api_type == "REST" and facts.batch_size == 100


def test_cost_grows_with_accounts() -> None:
    facts = read_template(TEMPLATE)
    runs = [monthly_cost(n, template=facts) for n in (1_000, 10_000, 100_000)]
    totals = [r["total_usd"] for r in runs]
    assert totals[0] < totals[1] < totals[2]
    for service in runs[0]["by_service"]:
        assert runs[0]["by_service"][service] <= runs[1]["by_service"][service] <= runs[2]["by_service"][service]
    # Fixed costs spread thinner: the cost per account falls
    assert runs[0]["per_account_usd"] > runs[2]["per_account_usd"]


def test_unknown_assumption_is_refused() -> None:
    with pytest.raises(TypeError, match="overview_veiws"):
        monthly_cost(10, overview_veiws=3)


def test_the_real_template_pays_for_its_kms_key_its_alarms_and_log_retention() -> None:
    # Given template.yaml as it is
    r = monthly_cost(1000, **QUIET)
    # Then the alarm topic's own key (CloudWatch cannot publish to SNS's AWS managed key) costs $1 a month
    assert line(r, "KMS", "customer managed keys")["quantity"] == 1
    assert line(r, "KMS", "customer managed keys")["usd"] == pytest.approx(1.00)
    # And every alarm of the template is counted, and logs are kept LogRetentionDays (90: 3 months stored)
    assert r["template"]["alarms"] == 39 and r["template"]["kms_keys"] == 1
    stored = line(r, "CloudWatch", "Logs storage")
    assert "90 days" in stored["item"] and stored["quantity"] == pytest.approx(3 * r["usage"]["log_gb"])
