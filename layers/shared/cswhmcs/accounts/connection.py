"""Test Connection: checks ComputeStacks and WHMCS (and the module's billing receiver when
``WHMCS_RECEIVER_URL`` is set), and says which side failed and why.

All are asked at the same time, within the one request deadline, so a side that hangs still leaves
the others their answer (and the admin learns which side was slow). Without ``WHMCS_RECEIVER_URL``
the receiver is not asked and nothing (messages, codes) differs from before it existed.

Which side a failure is reported under (``code``): ComputeStacks and WHMCS first, as before
(``computestacks_*``, ``whmcs_*``, ``both_*``); the receiver (``receiver_auth_failed``,
``receiver_missing``, ``receiver_unreachable``, ``receiver_failed``) when only it failed. The message
always names every side.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from cswhmcs.adapters.receiver import ReceiverClient, ReceiverMissing, ReceiverSignatureRefused, ReceiverUnknownOutcome
from cswhmcs.deps import Request
from cswhmcs.errors import (
    ConfigurationError,
    DomainError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

RECEIVER = "WHMCS billing receiver"
T = TypeVar("T")


def _client(get: Callable[[], T]) -> tuple[T | None, DomainError | None]:
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


def _receiver_slow(err: DomainError) -> bool:
    """Did the receiver not answer (in time)? Then the test fails as 504, like a slow upstream."""
    if isinstance(err, ReceiverUnknownOutcome):
        return err.reason in ("unreachable", "timeout")
    return isinstance(err, UpstreamTimeout)


def _receiver_part(err: DomainError | None) -> str:
    if err is None:
        return f"{RECEIVER}: OK."
    if isinstance(err, ReceiverSignatureRefused):
        return (f"{RECEIVER}: refused the backend's signature (set the ComputeStacks server's Access Hash "
                "to the backend's SIGNING_SECRET)")
    if isinstance(err, ReceiverMissing):
        return (f"{RECEIVER}: missing (404): the module files in WHMCS are older than the backend; upload "
                "modules/servers/computestacks/billing.php")
    if isinstance(err, ConfigurationError):
        return f"{RECEIVER}: not configured ({err.message})"
    unreachable = isinstance(err, UpstreamUnreachable) or (
        isinstance(err, ReceiverUnknownOutcome) and err.reason == "unreachable")
    if unreachable:
        return f"{RECEIVER}: unreachable ({err.message})"
    if _receiver_slow(err):
        return f"{RECEIVER}: too slow ({err.message})"
    return f"{RECEIVER}: error ({err.message})"


def test_connection(req: Request) -> dict[str, Any]:
    # The clients are taken here (they are per thread), then used from other threads (they are thread-safe).
    cs, cs_err = _client(lambda: req.deps.cs)
    whmcs, whmcs_err = _client(lambda: req.deps.whmcs)
    with_receiver = bool(req.settings.WHMCS_RECEIVER_URL)
    receiver: ReceiverClient | None = None
    receiver_err: DomainError | None = None
    if with_receiver:
        receiver, receiver_err = _client(lambda: req.deps.receiver)
    receiver_probe: Future[DomainError | None] | None = None
    with ThreadPoolExecutor(max_workers=2 if with_receiver else 1, thread_name_prefix="connection-test") as pool:
        # The helper threads run in a copy of this context: they keep the request's deadline.
        cs_probe = pool.submit(contextvars.copy_context().run, _check, cs.list_locations) if cs is not None else None
        if with_receiver and receiver is not None:
            receiver_probe = pool.submit(contextvars.copy_context().run, _check, receiver.ping)
        if whmcs is not None:
            whmcs_err = _check(whmcs.get_health_status)
        if cs_probe is not None:
            cs_err = cs_probe.result()
        if receiver_probe is not None:
            receiver_err = receiver_probe.result()
    if cs_err is None and whmcs_err is None and receiver_err is None:
        if with_receiver:
            return {"message": "ComputeStacks and WHMCS both accepted the backend's credentials, and the WHMCS "
                               "billing receiver accepted its signature."}
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
    if with_receiver:
        parts.append(_receiver_part(receiver_err))
    message = " ".join(parts)
    if cs_err is None and whmcs_err is None:
        assert receiver_err is not None
        if _receiver_slow(receiver_err):
            raise UpstreamTimeout(message, upstream="receiver", maybe_applied=False, code="receiver_unreachable")
        if isinstance(receiver_err, ReceiverSignatureRefused):
            code = "receiver_auth_failed"
        elif isinstance(receiver_err, ReceiverMissing):
            code = "receiver_missing"
        else:
            code = "receiver_failed"
        raise UpstreamError(message, upstream="receiver", code=code)
    first = cs_err or whmcs_err
    assert first is not None
    side = "computestacks" if cs_err is not None else "whmcs"
    if cs_err is not None and whmcs_err is not None:
        side = "both"
    if isinstance(first, UpstreamTimeout):
        raise UpstreamTimeout(message, upstream=side, maybe_applied=False, code=f"{side}_unreachable")
    kind = "auth_failed" if isinstance(first, UpstreamAuthFailed) else "failed"
    raise UpstreamError(message, upstream=side, code=f"{side}_{kind}")
