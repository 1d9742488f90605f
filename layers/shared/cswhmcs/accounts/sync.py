"""Server Sync Tool (ListAccounts) and the User Group loader: every page, large pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cswhmcs.accounts import caches
from cswhmcs.api import Request

PAGE = 500


def whmcs_datetime(value: Any) -> str:
    """ComputeStacks ISO time -> WHMCS `Y-m-d H:i:s` (UTC); empty when absent or unreadable."""
    if not value:
        return ""
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return ""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def to_sync_account(user: dict[str, Any]) -> dict[str, str]:
    email = str(user.get("email") or "")
    group = user.get("user_group") or {}
    product = group.get("id") if isinstance(group, dict) and group.get("id") is not None else user.get("user_group_id")
    return {
        "email": email,
        "username": email,
        "domain": "",
        "uniqueIdentifier": email,
        "product": "" if product is None else str(product),
        "primaryip": "",
        "created": whmcs_datetime(user.get("created_at")),
        "status": "Active" if user.get("active", True) else "Suspended",
    }


def list_accounts(req: Request) -> dict[str, Any]:
    accounts = [to_sync_account(u) for u in req.deps.cs.iter_users(per_page=PAGE) if not u.get("is_admin")]
    return {"accounts": accounts}


def user_groups(req: Request) -> dict[str, Any]:
    groups = caches.user_groups(req, refresh=True)
    return {"groups": groups}
