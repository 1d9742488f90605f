"""Server Sync Tool (ListAccounts) and the User Group loader: every page, large pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cswhmcs.accounts import caches
from cswhmcs.deps import Request
from cswhmcs.models import MAX_ID, parse

PAGE = 500
# Users per paged answer: ~240 bytes each in JSON, so 2,000 make ~0.5 MB from one ComputeStacks request.
DEFAULT_PAGE_SIZE = 2000
MAX_PAGE_SIZE = 5000


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


class SyncPage(BaseModel):
    """Optional paging of /v1/accounts/list (an addition to API.md): without `page`, every user at once."""

    model_config = ConfigDict(extra="ignore")
    page: int | None = Field(default=None, ge=1, le=MAX_ID)
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)


def list_accounts(req: Request) -> dict[str, Any]:
    paging = parse(SyncPage, req.payload)
    if paging.page is None:
        accounts = [to_sync_account(u) for u in req.deps.cs.iter_users(per_page=PAGE) if not u.get("is_admin")]
        return {"accounts": accounts}
    # One ComputeStacks page per call: each answer stays far inside API Gateway's 29 s and Lambda's
    # 6 MB response, however many users there are. The module follows `next_page` until it is null.
    rows, more = req.deps.cs.list_users_page(paging.page, per_page=paging.page_size)
    return {"accounts": [to_sync_account(u) for u in rows if not u.get("is_admin")],
            "page": paging.page, "next_page": paging.page + 1 if more else None}


def user_groups(req: Request) -> dict[str, Any]:
    groups = caches.user_groups(req, refresh=True)
    return {"groups": groups}
