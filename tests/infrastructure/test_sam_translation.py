"""What CloudFormation really gets: template.yaml translated by the SAM translator `sam validate` uses.

The SAM source can look right and still deploy more than it says: without `OpenApiVersion`, SAM gives
the API's deployment a `StageName: Stage`, an implicit second stage without the throttling
MethodSettings, so the 20 rps / 50 burst limit could be bypassed through `/Stage/...` (issue 8).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM_PYTHON = ROOT / ".tools" / "sam" / "bin" / "python"
THROTTLE = {"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingBurstLimit": 50, "ThrottlingRateLimit": 20}


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    if not SAM_PYTHON.exists():
        pytest.fail(f"{SAM_PYTHON} is missing: run `make sam` (the SAM CLI that `make cfn-lint` uses)")
    out = subprocess.run([str(SAM_PYTHON), str(Path(__file__).with_name("sam_translate.py")),
                          str(ROOT / "template.yaml")], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    resources: dict[str, Any] = json.loads(out.stdout)["Resources"]
    return resources


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def stages_by_api(resources: dict[str, Any]) -> dict[str, list[Any]]:
    """Every stage CloudFormation will create, per RestApi: Stage resources, and the stage a Deployment
    creates by itself when it carries a StageName."""
    out: dict[str, list[Any]] = {}
    for kind in ("AWS::ApiGateway::Stage", "AWS::ApiGateway::Deployment"):
        for res in of_type(resources, kind).values():
            props = res["Properties"]
            if "StageName" in props:
                out.setdefault(props["RestApiId"]["Ref"], []).append(props["StageName"])
    return out


def test_the_rest_api_has_exactly_the_named_stage(translated: dict[str, Any]) -> None:
    assert list(of_type(translated, "AWS::ApiGateway::RestApi")) == ["IntegrationApi"]
    assert stages_by_api(translated) == {"IntegrationApi": [{"Ref": "Stage"}]}
    for name, deployment in of_type(translated, "AWS::ApiGateway::Deployment").items():
        assert "StageName" not in deployment["Properties"], f"{name} creates a stage of its own"


def test_every_stage_carries_the_throttle(translated: dict[str, Any]) -> None:
    stages = of_type(translated, "AWS::ApiGateway::Stage")
    assert stages
    for name, stage in stages.items():
        assert THROTTLE in stage["Properties"].get("MethodSettings", []), name

