"""Test Connection: checks ComputeStacks and WHMCS, and says which side failed and why."""

from __future__ import annotations

from typing import Any

from cswhmcs.api import Request
from cswhmcs.errors import (
    ConfigurationError,
    DomainError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
)


def _check(name: str, probe: Any) -> DomainError | None:
    try:
        probe()
    except DomainError as exc:
        return exc
    return None


def test_connection(req: Request) -> dict[str, Any]:
    cs_err = _check("ComputeStacks", lambda: req.deps.cs.list_locations())
    whmcs_err = _check("WHMCS", lambda: req.deps.whmcs.get_health_status())
    if cs_err is None and whmcs_err is None:
        return {"message": "ComputeStacks and WHMCS both accepted the backend's credentials."}
    parts = []
    for name, err in (("ComputeStacks", cs_err), ("WHMCS", whmcs_err)):
        if err is None:
            parts.append(f"{name}: OK.")
        elif isinstance(err, UpstreamAuthFailed):
            parts.append(f"{name}: bad credentials ({err.message})")
        elif isinstance(err, UpstreamTimeout):
            parts.append(f"{name}: unreachable ({err.message})")
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
