"""Run every benchmark module (``bench/bench_*.py``, each with a ``main(argv) -> int``) in turn.

    python -m bench                 # all of them, default settings
    python -m bench billing --full  # one of them, with its own options
"""

from __future__ import annotations

import importlib
import sys
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
    for name in chosen:
        print(f"== bench {name} ==", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        status = max(status, int(module.main(rest) or 0))
    return status


if __name__ == "__main__":
    sys.exit(main())
