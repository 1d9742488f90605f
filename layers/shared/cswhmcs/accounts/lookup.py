"""Finding the ComputeStacks user of a WHMCS service.

Mapping first (no ComputeStacks call). Else, in this order: the service username (find_by_email),
the external id (= service id), the `whmcs.service_id` label. An account found that way (e.g. imported
by the Server Sync Tool) gets its mapping written, so every later action costs one ComputeStacks call.
The chain stops when the request's time budget is gone (``cswhmcs.deadline``): no lookup is started
that could not be answered in time, and the answer is a 504, not a wrong "not found".
"""

from __future__ import annotations

import re
from typing import Any

from cswhmcs import deadline
from cswhmcs.adapters.computestacks import UPSTREAM, UserSelector
from cswhmcs.adapters.dynamo import AccountMapping
from cswhmcs.adapters.retry import OutOfTime
from cswhmcs.deps import Request
from cswhmcs.errors import NotFound
from cswhmcs.models import ServiceParams

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


def looks_like_email(value: str) -> bool:
    return bool(EMAIL_RE.match(value.strip()))


def belongs_to_service(user: dict[str, Any], service_id: int) -> bool:
    """False when the user is clearly linked to another WHMCS service."""
    labels = user.get("labels") or {}
    whmcs = labels.get("whmcs") if isinstance(labels, dict) else None
    linked = whmcs.get("service_id") if isinstance(whmcs, dict) else None
    if linked not in (None, ""):
        try:
            return int(linked) == service_id
        except (TypeError, ValueError):
            return False
    # No label (an imported or legacy user): the external id is the WHMCS service id when it is set
    # (reference computestacks-api.md section 3), so a user carrying another service's id is not ours.
    external = str(user.get("external_id") or "").strip()
    if external.isdigit():
        return int(external) == service_id
    return True


def link_fields(params: ServiceParams) -> dict[str, Any]:
    """The fields that link a ComputeStacks user to this service (sent with the first update)."""
    whmcs: dict[str, int] = {"service_id": params.serviceid}
    client_id = params.client_id()
    if client_id:
        whmcs["client_id"] = client_id
    # merge_labels replaces the whole top-level key, so both ids always go together.
    return {"external_id": str(params.serviceid), "merge_labels": {"whmcs": whmcs}}


def find_unmapped(req: Request, params: ServiceParams) -> dict[str, Any] | None:
    cs = req.deps.cs
    selectors = []
    if params.username and looks_like_email(params.username):
        selectors.append(UserSelector.by_email(params.username))
    selectors.append(UserSelector.by_external_id(str(params.serviceid)))
    selectors.append(UserSelector.by_label_service_id(params.serviceid))
    for sel in selectors:
        if deadline.current().expired():
            raise OutOfTime(UPSTREAM)
        user = cs.get_user(sel)
        if user and not user.get("is_admin") and belongs_to_service(user, params.serviceid):
            return dict(user)
    return None


def remember(req: Request, params: ServiceParams, user: dict[str, Any]) -> AccountMapping:
    mapping = AccountMapping(
        service_id=params.serviceid,
        cs_user_id=int(user["id"]),
        email=str(user.get("email", "")),
        client_id=params.client_id(),
        currency=user.get("currency"),
    )
    stored: AccountMapping = req.deps.accounts.put(mapping)
    return stored


def not_found(service_id: int) -> NotFound:
    return NotFound(f"No ComputeStacks account is linked to service #{service_id} "
                    "(none found by mapping, username, external id or label).")


def resolve(req: Request, params: ServiceParams) -> tuple[AccountMapping, bool]:
    """The service's mapping, and whether it was just discovered (then the caller links the user)."""
    mapping: AccountMapping | None = req.deps.accounts.get(params.serviceid)
    if mapping is not None:
        return mapping, False
    user = find_unmapped(req, params)
    if user is None:
        raise not_found(params.serviceid)
    return remember(req, params, user), True


def gone(mapping: AccountMapping) -> NotFound:
    return NotFound(f"The ComputeStacks user #{mapping.cs_user_id} linked to service #{mapping.service_id} "
                    "no longer exists in ComputeStacks.", code="account_gone")
