"""Test Connection: checks ComputeStacks and WHMCS, and says which side failed and why.

Both are asked at the same time, within the one request deadline, so a side that hangs still leaves
the other one its answer (and the admin learns which side was slow).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cswhmcs.api import Request
from cswhmcs.errors import (
    ConfigurationError,
    DomainError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)


def _client(get: Callable[[], Any]) -> tuple[Any, DomainError | None]:
    try:
        return get(), None
    except DomainError as exc:  # e.g. not configured
        return None, exc


def _check(probe: Callable[[], object]) -> DomainError | None:
    try:
        probe()
    except DomainError as exc:
        return exc
    return None


def test_connection(req: Request) -> dict[str, Any]:
    # The clients are taken here (they are per thread), then used from two threads (they are thread-safe).
    cs, cs_err = _client(lambda: req.deps.cs)
    whmcs, whmcs_err = _client(lambda: req.deps.whmcs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="connection-test") as pool:
        # The helper thread runs in a copy of this context: it keeps the request's deadline.
        cs_probe = pool.submit(contextvars.copy_context().run, _check, cs.list_locations) if cs_err is None else None
        if whmcs_err is None:
            whmcs_err = _check(whmcs.get_health_status)
        if cs_probe is not None:
            cs_err = cs_probe.result()
    if cs_err is None and whmcs_err is None:
        return {"message": "ComputeStacks and WHMCS both accepted the backend's credentials."}
    parts = []
    for name, err in (("ComputeStacks", cs_err), ("WHMCS", whmcs_err)):
        if err is None:
            parts.append(f"{name}: OK.")
        elif isinstance(err, UpstreamAuthFailed):
            parts.append(f"{name}: bad credentials ({err.message})")
        elif isinstance(err, UpstreamUnreachable):
            parts.append(f"{name}: unreachable ({err.message})")
        elif isinstance(err, UpstreamTimeout):
            parts.append(f"{name}: too slow ({err.message})")
        elif isinstance(err, ConfigurationError):
            parts.append(f"{name}: not configured ({err.message})")
        else:
            parts.append(f"{name}: error ({err.message})")
    message = " ".join(parts)
    first = cs_err or whmcs_err
    assert first is not None
    side = "computestacks" if cs_err is not None else "whmcs"
    if cs_err is not None and whmcs_err is not None:
        side = "both"
    if isinstance(first, UpstreamTimeout):
        raise UpstreamTimeout(message, upstream=side, maybe_applied=False, code=f"{side}_unreachable")
    kind = "auth_failed" if isinstance(first, UpstreamAuthFailed) else "failed"
    raise UpstreamError(message, upstream=side, code=f"{side}_{kind}")
