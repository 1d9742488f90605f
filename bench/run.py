"""Run every benchmark module (``bench/bench_*.py``, each with a ``main(argv) -> int``) in turn.

    python -m bench                 # all of them, default settings
    python -m bench billing --full  # one of them, with its own options
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = str(HERE.parent)
    for path in (root, str(HERE.parent / "layers/shared")):
        if path not in sys.path:
            sys.path.insert(0, path)
    names = modules()
    if args and args[0] in names:
        chosen, rest = [args[0]], args[1:]
    else:
        chosen, rest = names, args
    status = 0
    walls: dict[str, float] = {}
    started = time.perf_counter()
    for name in chosen:
        print(f"== bench {name} ==", flush=True)
        t0 = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        status = max(status, int(module.main(rest) or 0))
        walls[name] = time.perf_counter() - t0
    if len(chosen) > 1:
        print("\n== bench: " + ", ".join(f"{name} {wall:.0f} s" for name, wall in walls.items())
              + f"; all {time.perf_counter() - started:.0f} s wall", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
