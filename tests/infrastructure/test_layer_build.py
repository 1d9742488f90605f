"""The Lambda layer ships the runtime package only (issue 11 section 6): layers/shared/Makefile, the
`BuildMethod: makefile` of template.yaml's SharedLayer, run as `sam build` runs it (into an ARTIFACTS_DIR),
with the pip step skipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cswhmcs.local.template import Template
from tests.infrastructure.imports import reachable

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("cswhmcs.local", "cswhmcs.cli", "cswhmcs.billing.cli", "cswhmcs.billing.report")


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is required to build the layer (apt-get install make)")
    artifacts = tmp_path_factory.mktemp("layer")
    done = subprocess.run(["make", "-s", "-C", str(ROOT / "layers/shared"), "build-SharedLayer",
                           f"ARTIFACTS_DIR={artifacts}", "SKIP_PIP=1", f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return artifacts / "python"


def test_the_layer_is_built_by_its_makefile() -> None:
    layer = Template(ROOT / "template.yaml").resources["SharedLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"] == "layers/shared"
    makefile = (ROOT / "layers/shared/Makefile").read_text(encoding="utf-8")
    assert "build-SharedLayer:" in makefile and "requirements.txt" in makefile
    # arm64 wheels whatever machine builds it
    assert "manylinux2014_aarch64" in makefile and layer["Metadata"]["BuildArchitecture"] == "arm64"


def test_the_dev_tools_are_not_in_the_layer(layer: Path) -> None:
    assert (layer / "cswhmcs" / "__init__.py").is_file()
    assert (layer / "cswhmcs" / "billing" / "worker.py").is_file()
    for name in DEV_ONLY:
        base = layer.joinpath(*name.split("."))
        assert not base.exists() and not base.with_suffix(".py").exists(), name
    # Everything else of the package is there
    source = ROOT / "layers/shared/cswhmcs"
    shipped = {p.relative_to(layer / "cswhmcs") for p in (layer / "cswhmcs").rglob("*.py")}
    expected = {p.relative_to(source) for p in source.rglob("*.py")
                if not any(str(p.relative_to(source.parent)).replace("/", ".").removesuffix(".py")
                           .removesuffix(".__init__").startswith(d) for d in DEV_ONLY)}
    assert shipped == expected


def test_the_layer_ships_unchecked_bytecode_for_the_runtime(layer: Path, tmp_path: Path) -> None:
    # /opt is read-only in Lambda: without bytecode every cold start compiles the package in memory again.
    assert sys.version_info[:2] == (3, 13), "the suite runs on the functions' runtime (make setup builds it)"
    sources = sorted((layer / "cswhmcs").rglob("*.py"))
    caches = sorted((layer / "cswhmcs").rglob("*.pyc"))
    assert len(caches) == len(sources)
    for source in sources:
        cache = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        header = cache.read_bytes()[:16]
        # PEP 552 flags: 0b01 = hash-based, not checked against the source (a zip keeps file times to 2 s)
        assert int.from_bytes(header[4:8], "little") == 0b01, cache
    # The bytecode is what runs: a copy whose source no longer compiles still imports.
    copy = tmp_path / "python"
    shutil.copytree(layer, copy)
    (copy / "cswhmcs" / "money.py").write_text("this is not python\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-S", "-c", "import cswhmcs.money; print(cswhmcs.money.__name__)"],
                          cwd=copy, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "cswhmcs.money", done.stderr


def test_every_function_imports_only_what_the_layer_ships(layer: Path) -> None:
    # Static walk of every import (lazy ones included) from each function's app.py through the built layer
    template = Template(ROOT / "template.yaml")
    functions = {name: res["Properties"] for name, res in template.resources.items()
                 if res["Type"] == "AWS::Serverless::Function"}
    assert len(functions) == 16  # 14 + CsUserHookFunction + InvoicePaidHookFunction
    for name, props in functions.items():
        app = ROOT / props["CodeUri"] / "app.py"
        in_layer = reachable(app, root=layer)
        in_source = reachable(app)
        assert set(in_source) == set(in_layer), f"{name} imports {sorted(set(in_source) - set(in_layer))}"
        assert not [m for m in in_source if m.startswith(DEV_ONLY)], name
        assert "cswhmcs.billing.handlers" in in_layer or "cswhmcs.api" in in_layer, name
