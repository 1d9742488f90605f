"""The JSON ComputeStacks renders (its RABL views) and its pagination headers.

A user has three views (``create``, ``show``, ``index``: which fields, in which order); a billing usage nests
its subscription product, product and user; user groups and locations. ``paginate`` is api-pagination over
will_paginate: the page of rows and the ``Link``, ``Per-Page`` and ``Total`` headers.
"""

from __future__ import annotations

import copy
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from sandboxes.computestacks.rack import Request
from sandboxes.computestacks.rails import iso, rb_decimal, rb_to_i, to_query
from sandboxes.computestacks.store import SERVICE_KEYS, Installation

DEFAULT_PER_PAGE = 30  # will_paginate's default; api-pagination sets no maximum

CURRENCY_SYMBOLS = {
    "USD": "$", "EUR": "€", "GBP": "£", "CAD": "$", "AUD": "$", "NZD": "$", "SGD": "$", "HKD": "$",
    "MXN": "$", "JPY": "¥", "CNY": "¥", "CHF": "CHF", "SEK": "kr", "NOK": "kr", "DKK": "kr.",
    "PLN": "zł", "CZK": "Kč", "INR": "₹", "BRL": "R$", "ZAR": "R",
}

_CREATE_FIELDS = (
    "id", "fname", "lname", "email", "active", "company_name", "is_admin", "api_key", "api_version",
    "external_id", "currency", "confirmed_at", "confirmation_sent_at", "last_request_at", "last_sign_in_at",
    "current_sign_in_at", "sign_in_count", "reset_password_sent_at", "locked_at", "failed_attempts",
    "address1", "address2", "city", "state", "zip", "country", "vat", "user_group_id", "created_at",
    "updated_at", "auth_token", "auth_token_exp", "labels",
)
_SHOW_FIELDS = (
    "id", "fname", "lname", "email", "phone", "active", "is_admin", "api_key", "api_version", "external_id",
    "currency", "confirmed_at", "confirmation_sent_at", "last_request_at", "last_sign_in_at",
    "current_sign_in_at", "sign_in_count", "reset_password_sent_at", "locked_at", "failed_attempts",
    "address1", "address2", "city", "state", "zip", "country", "vat", "company_name", "run_rate", "labels",
    "created_at", "updated_at",
)
_INDEX_FIELDS = (
    "id", "fname", "lname", "email", "active", "is_admin", "api_key", "api_version", "external_id", "currency",
    "confirmed_at", "confirmation_sent_at", "last_request_at", "last_sign_in_at", "current_sign_in_at",
    "sign_in_count", "reset_password_sent_at", "locked_at", "failed_attempts", "address1", "address2", "city",
    "state", "zip", "country", "vat", "labels", "created_at", "updated_at",
)


def user_json(inst: Installation, user: dict[str, Any], view: str, *,
              include_usage: bool = False) -> dict[str, Any]:
    names = {"create": _CREATE_FIELDS, "show": _SHOW_FIELDS, "index": _INDEX_FIELDS}[view]
    out: dict[str, Any] = {}
    for name in names:
        value = user.get(name)
        if isinstance(value, datetime):
            value = iso(value)
        elif isinstance(value, Decimal):
            value = rb_decimal(value)
        out[name] = copy.deepcopy(value)
    out["currency_symbol"] = CURRENCY_SYMBOLS.get(str(user["currency"]), str(user["currency"]))
    out["current_sign_in_ip"] = user.get("current_sign_in_ip") or ""
    out["last_sign_in_ip"] = user.get("last_sign_in_ip") or ""
    if view == "create":
        return out
    if include_usage:
        total = sum((r["total"] for r in inst._usages_by_user.get(user["id"], {}).values()
                     if not r["processed"]), Decimal(0))
        out["unprocessed_usage"] = rb_decimal(total)
    group = inst._groups.get(user.get("user_group_id") or 0)
    plan = inst._plans.get(group["billing_plan_id"]) if group and group.get("billing_plan_id") else None
    out["security_keys"] = []
    out["billing_plan"] = {"id": plan["id"], "name": plan["name"]} if plan else None
    out["user_group"] = {"id": group["id"], "name": group["name"]} if group else None
    out["external_integrations"] = []
    if view == "show":
        out["services"] = {key: int(user["services"].get(key, 0)) for key in SERVICE_KEYS}
    return out


def usage_json(inst: Installation, row: dict[str, Any]) -> dict[str, Any]:
    sub = inst._sub_products[row["subscription_product_id"]]
    product = inst._products[sub["product_name"]]
    user = inst._users.get(row["user_id"])
    return {
        "id": row["id"], "period_start": iso(row["period_start"]), "period_end": iso(row["period_end"]),
        "external_id": row["external_id"], "rate": rb_decimal(row["rate"]), "rate_period": row["rate_period"],
        "qty": rb_decimal(row["qty"]), "qty_total": rb_decimal(row["qty_total"]),
        "total": rb_decimal(row["total"]), "processed": row["processed"],
        "processed_on": iso(row["processed_on"]), "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "subscription_product": {
            "id": sub["id"], "external_id": sub["external_id"], "start_on": iso(sub["start_on"]),
            "active": sub["active"], "phase_type": sub["phase_type"], "created_at": iso(sub["created_at"]),
            "updated_at": iso(sub["updated_at"]),
            # products/_product.rabl: ``label``, no ``name`` (only the month-end webhook has ``name``)
            "product": {k: product[k] for k in ("id", "label", "resource_kind", "unit", "unit_type",
                                                 "external_id", "group", "package")},
        },
        "user": None if user is None else {
            "id": user["id"], "full_name": f"{user['fname'] or ''} {user['lname'] or ''}",
            "email": user["email"], "external_id": user["external_id"], "labels": copy.deepcopy(user["labels"]),
        },
    }


def group_json(inst: Installation, group: dict[str, Any]) -> dict[str, Any]:
    out = {k: (iso(v) if isinstance(v, datetime) else v) for k, v in group.items() if k != "location_ids"}
    out["locations"] = [{"id": inst._locations[i]["id"], "name": inst._locations[i]["name"]}
                        for i in group["location_ids"] if i in inst._locations]
    out["regions"] = []
    return out


def location_json(location: dict[str, Any]) -> dict[str, Any]:
    out = {k: (iso(v) if isinstance(v, datetime) else v) for k, v in location.items() if k != "active"}
    out["links"] = {"regions": f"/api/admin/locations/{location['id']}/regions"}
    return out


def paginate(req: Request, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """api-pagination 5 over will_paginate: Link (first, prev, last, next), Per-Page, Total."""
    page = rb_to_i(req.query.get("page"))
    page = page if page > 0 else 1
    per_page = rb_to_i(req.query.get("per_page"))
    per_page = per_page if per_page > 0 else DEFAULT_PER_PAGE
    total = len(rows)
    total_pages = max(1, math.ceil(total / per_page))
    links: list[tuple[str, int]] = []
    if page != 1:
        links += [("first", 1), ("prev", page - 1)]
    if page < total_pages:
        links += [("last", total_pages), ("next", page + 1)]
    base = f"http://{req.host_with_port}{req.path}"
    headers: list[tuple[str, str]] = []
    if links:
        headers.append(("Link", ", ".join(
            f'<{base}?{to_query({**req.query, "page": number})}>; rel="{rel}"' for rel, number in links)))
    headers += [("Per-Page", str(per_page)), ("Total", str(total))]
    start = (page - 1) * per_page
    return rows[start:start + per_page], headers
