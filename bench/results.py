"""bench/results.json (API.md section 5): `{"figures": [{"name", "value", "unit", "reference", "ratio",
"target", "pass"}]}`, shared by every benchmark: each one merges its own figures in by name, keeping the
figures other benchmarks wrote."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"
FIELDS = ("name", "value", "unit", "reference", "ratio", "target", "pass")
# Names no benchmark writes any more; a merge drops them, so an old results.json does not keep a stale figure.
# billing_speedup_vs_sequential_receiver is billing_speedup_vs_sequential since 2026-12-02 (bench_receiver).
RETIRED = frozenset({"billing_speedup_vs_sequential_receiver"})


def figure(name: str, value: float, unit: str, *, reference: float | None, target: str, passed: bool,
           ratio: float | None = None) -> dict[str, Any]:
    """One figure; ``ratio`` defaults to value / reference."""
    if ratio is None and reference:
        ratio = value / reference
    return {"name": name, "value": value, "unit": unit, "reference": reference,
            "ratio": None if ratio is None else round(ratio, 4), "target": target, "pass": bool(passed)}


def merge(figures: list[dict[str, Any]], path: Path = RESULTS) -> list[dict[str, Any]]:
    """Read-modify-write: replace the figures with these names, keep every other one; returns them all."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
        existing = current.get("figures", []) if isinstance(current, dict) else []
    except (OSError, ValueError):
        existing = []
    names = {f["name"] for f in figures}
    merged = [f for f in existing if isinstance(f, dict) and f.get("name") not in names | RETIRED] + \
        [{k: f.get(k) for k in FIELDS} for f in figures]
    merged.sort(key=lambda f: str(f.get("name")))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"figures": merged}, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return merged


def markdown(figures: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):  # small figures (0.0105 requests per line) keep 3 significant digits
            return f"{v:,.2f}" if abs(v) >= 10 or v == 0 else f"{v:.3g}"
        return "" if v is None else str(v)

    rows = ["| figure | value | unit | reference | ratio | target | pass |", "|---|---:|---|---:|---:|---|---|"]
    rows += ["| " + " | ".join(cell(f.get(k)) for k in FIELDS) + " |" for f in figures]
    return "\n".join(rows)
