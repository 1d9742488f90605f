"""Reads template.yaml: the functions, their API routes, and the DynamoDB tables.

Used by `cswhmcs serve` and by the tests, so local tables and routes cannot drift from what AWS gets.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short intrinsic tags (!Ref, !GetAtt, !Sub ...)."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation/SAM template")
    return data


def find_template(start: str | os.PathLike[str] | None = None) -> Path:
    """template.yaml in the given directory or the nearest parent (so serve works from any subfolder)."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "template.yaml").is_file():
            return d / "template.yaml"
    raise FileNotFoundError("template.yaml not found in this directory or any parent")


@dataclass(frozen=True)
class ApiRoute:
    function: str
    method: str
    path: str
    code_uri: Path
    handler: str

    def load_handler(self) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        module_name, _, attr = self.handler.rpartition(".")
        file = self.code_uri / (module_name.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(f"cswhmcs_fn_{self.function}", file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler: Callable[[dict[str, Any], Any], dict[str, Any]] = getattr(module, attr)
        return handler


@dataclass(frozen=True)
class TableDef:
    logical_id: str
    env_var: str | None
    properties: dict[str, Any]

    def create_kwargs(self, name: str) -> dict[str, Any]:
        """boto3 create_table arguments built from the template's own definition."""
        p = self.properties
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": p.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if p.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {k: v for k, v in gsi.items() if k in ("IndexName", "KeySchema", "Projection")}
                for gsi in p["GlobalSecondaryIndexes"]
            ]
        return kwargs


class Template:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else find_template()
        self.root = self.path.parent
        self.data = load_template(self.path)

    @property
    def resources(self) -> dict[str, Any]:
        res: dict[str, Any] = self.data["Resources"]
        return res

    def global_env(self) -> dict[str, Any]:
        env: dict[str, Any] = (
            self.data.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        return env

    def api_routes(self) -> list[ApiRoute]:
        routes = []
        for name, res in self.resources.items():
            if res.get("Type") != "AWS::Serverless::Function":
                continue
            props = res.get("Properties", {})
            for event in (props.get("Events") or {}).values():
                if event.get("Type") != "Api":
                    continue
                ep = event["Properties"]
                routes.append(ApiRoute(function=name, method=str(ep["Method"]).upper(), path=ep["Path"],
                                       code_uri=self.root / props["CodeUri"], handler=props["Handler"]))
        return routes

    def tables(self) -> list[TableDef]:
        env_for = {v["Ref"]: k for k, v in self.global_env().items() if isinstance(v, dict) and "Ref" in v}
        return [
            TableDef(logical_id=name, env_var=env_for.get(name), properties=res.get("Properties", {}))
            for name, res in self.resources.items()
            if res.get("Type") == "AWS::DynamoDB::Table"
        ]


def ensure_tables(template: Template, dynamodb_client: Any, names: dict[str, str]) -> list[str]:
    """Create each template table that does not exist yet under the name given by ``names[env_var]``.
    Returns the names created."""
    existing: set[str] = set()
    for page in dynamodb_client.get_paginator("list_tables").paginate():
        existing.update(page.get("TableNames", []))
    created = []
    for table in template.tables():
        if not table.env_var or table.env_var not in names:
            continue
        name = names[table.env_var]
        if name in existing:
            continue
        dynamodb_client.create_table(**table.create_kwargs(name))
        dynamodb_client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        created.append(name)
    return created
