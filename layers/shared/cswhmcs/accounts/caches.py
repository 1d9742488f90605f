"""Small per-execution-environment caches of upstream reference data (5 minutes).

Currencies and user groups change rarely; caching them keeps each action at one upstream call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cswhmcs.adapters.whmcs import Currency
    from cswhmcs.deps import Request

TTL_SECONDS = 300.0
_lock = threading.Lock()
_entries: dict[tuple[str, str], tuple[float, Any]] = {}


def cached(kind: str, key: str, loader: Callable[[], Any], *, refresh: bool = False,
           clock: Callable[[], float] = time.monotonic) -> Any:
    now = clock()
    with _lock:
        hit = _entries.get((kind, key))
    if hit is not None and not refresh and now - hit[0] < TTL_SECONDS:
        return hit[1]
    value = loader()
    with _lock:
        _entries[(kind, key)] = (now, value)
    return value


def clear() -> None:
    with _lock:
        _entries.clear()


def currencies(req: Request, *, refresh: bool = False) -> list[Currency]:
    """WHMCS GetCurrencies, cached."""
    result: list[Currency] = cached("currencies", req.settings.WHMCS_API_URL, req.deps.whmcs.get_currencies,
                               refresh=refresh)
    return result


def user_groups(req: Request, *, refresh: bool = False) -> dict[str, str]:
    """ComputeStacks user groups id -> name (every page), cached."""

    def load() -> dict[str, str]:
        return {str(g["id"]): str(g.get("name", "")) for g in req.deps.cs.iter_user_groups(per_page=500)}

    result: dict[str, str] = cached("user_groups", req.settings.CS_API_URL, load, refresh=refresh)
    return result
