"""bench/results.json is merged by figure name (API.md section 5 shape): a benchmark replaces its own
figures and keeps everyone else's."""

from __future__ import annotations

import json
from pathlib import Path

from bench.results import FIELDS, figure, markdown, merge


def test_merge_replaces_by_name_and_keeps_other_figures(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"figures": [
        {"name": "billing_accounts_per_s", "value": 9.5, "unit": "accounts/s", "reference": 10, "ratio": 0.95,
         "target": ">= 0.5", "pass": True},
        {"name": "api_rps", "value": 1.0, "unit": "requests/s", "reference": 20, "ratio": 0.05, "target": "x",
         "pass": False}]}))
    merged = merge([figure("api_rps", 150.0, "requests/s", reference=20.0, target=">= 1 x reference", passed=True),
                    figure("api_p99_over_median", 2.5, "x", reference=3.0, target="<= 3", passed=True)], path)
    on_disk = json.loads(path.read_text())["figures"]
    assert on_disk == merged
    assert [f["name"] for f in on_disk] == ["api_p99_over_median", "api_rps", "billing_accounts_per_s"]
    api = next(f for f in on_disk if f["name"] == "api_rps")
    assert api == {"name": "api_rps", "value": 150.0, "unit": "requests/s", "reference": 20.0, "ratio": 7.5,
                   "target": ">= 1 x reference", "pass": True}
    assert all(tuple(f) == FIELDS for f in on_disk if f["name"].startswith("api_"))
    assert "| api_rps | 150.00 |" in markdown(on_disk)


def test_merge_starts_a_missing_or_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{not json")
    merge([figure("api_errors", 0.0, "requests", reference=100.0, target="0", passed=True)], path)
    assert [f["name"] for f in json.loads(path.read_text())["figures"]] == ["api_errors"]


def test_merge_drops_a_retired_figure_name(tmp_path: Path) -> None:
    """A figure renamed in a later version (billing_speedup_vs_sequential_receiver is now
    billing_speedup_vs_sequential) must not stay in an old results.json beside its new name."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"figures": [
        {"name": "billing_speedup_vs_sequential_receiver", "value": 14.0, "unit": "x", "reference": 10.0,
         "ratio": 1.4, "target": "reported", "pass": True},
        {"name": "billing_rss_growth", "value": 1.01, "unit": "x", "reference": 1.2, "ratio": 0.84,
         "target": "<= 1.2", "pass": True}]}))
    merge([figure("billing_speedup_vs_sequential", 14.0, "x", reference=10.0, target=">= 10", passed=True)], path)
    assert [f["name"] for f in json.loads(path.read_text())["figures"]] == [
        "billing_rss_growth", "billing_speedup_vs_sequential"]
