"""tests/run_suite.py (`make test`): its sessions together run every test directory, each once."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_suite", ROOT / "tests/run_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_test_directory_is_in_exactly_one_session() -> None:
    runner = load_runner()
    paths = [path for _, group in runner.GROUPS for path in group]
    assert len(paths) == len(set(paths))
    assert runner.missing_directories() == []
    assert all((ROOT / path).exists() for path in paths)


def test_every_test_file_runs_in_exactly_one_session() -> None:
    # Given the sessions' paths and what each skips (a file that another session runs)
    runner = load_runner()
    sessions = [runner.collected(group) for _, group in runner.GROUPS]
    # Then every test file of the suite is collected by one session, none by two
    every = {f.relative_to(ROOT).as_posix() for f in (ROOT / "tests").rglob("test_*.py")}
    assert sorted(f for f in every if sum(f in s for s in sessions) != 1) == []
    # And the billing fault schedules run beside the unit tests, not in the integration session
    assert "tests/integration/test_billing_faults.py" in sessions[1]
    assert runner.ignored(runner.GROUPS[0][1]) == ["tests/integration/test_billing_faults.py"]


def test_a_new_test_directory_outside_the_groups_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load_runner()
    (tmp_path / "tests/unit").mkdir(parents=True)
    (tmp_path / "tests/unit/test_a.py").write_text("")
    (tmp_path / "tests/contract").mkdir()
    (tmp_path / "tests/contract/test_b.py").write_text("")
    (tmp_path / "tests/support").mkdir()  # no tests in it: not a test directory
    (tmp_path / "tests/deep/nested").mkdir(parents=True)  # tests only further down still count
    (tmp_path / "tests/deep/nested/test_c.py").write_text("")
    (tmp_path / "tests/test_top.py").write_text("")  # a test file directly in tests/ would run in no session
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    assert runner.missing_directories() == ["tests/contract", "tests/deep", "tests/test_top.py"]
    assert runner.main([]) == 2
