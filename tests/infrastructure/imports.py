"""A static walk of the imports of the functions' code (fast: ``ast`` only, nothing is imported).

Every ``import``/``from ... import`` anywhere in a module counts, also inside functions (the lazy imports the
handlers use), so what a function can reach is over-approximated, never missed."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "shared"


def module_file(name: str, root: Path = LAYER) -> Path | None:
    """The file of module ``name`` under ``root`` (a package's ``__init__.py``), or None (third-party)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports_of(path: Path, package: str) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # ``from cswhmcs import observability``: the names may be modules themselves
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def reachable(entry: Path, root: Path = LAYER, prefix: str = "cswhmcs") -> dict[str, Path]:
    """Every module of ``prefix`` (found under ``root``) that ``entry`` (a file) can import, directly or not,
    with its file. Parent packages count (importing ``a.b`` runs ``a/__init__.py``)."""
    seen: dict[str, Path] = {}
    todo = [name for name in _imports_of(entry, "") if name == prefix or name.startswith(prefix + ".")]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub in seen:
                continue
            path = module_file(sub, root)
            if path is None:
                continue
            seen[sub] = path
            package = sub if path.name == "__init__.py" else ".".join(sub.split(".")[:-1])
            todo += [n for n in _imports_of(path, package) if n == prefix or n.startswith(prefix + ".")]
    return seen
