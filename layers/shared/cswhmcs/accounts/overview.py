"""The client-area overview and the admin service tab: one ComputeStacks call."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cswhmcs.accounts.lookup import gone, resolve
from cswhmcs.adapters.computestacks import UserSelector
from cswhmcs.api import Request
from cswhmcs.models import ServiceParams, parse
from cswhmcs.money import cents, fmt2, to_decimal


def display(symbol: str, amount: Decimal) -> str:
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{fmt2(abs(amount))}"


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def account_overview(req: Request) -> dict[str, Any]:
    params = parse(ServiceParams, req.payload)
    mapping, _ = resolve(req, params)
    user = req.deps.cs.get_user(UserSelector.by_id(mapping.cs_user_id), include_balance=True)
    if user is None:
        raise gone(mapping)
    services = user.get("services") or {}
    run_rate = cents(to_decimal(user.get("run_rate")))
    usage = cents(to_decimal(user.get("unprocessed_usage")))
    currency = str(user.get("currency") or mapping.currency or "")
    symbol = str(user.get("currency_symbol") or "")
    return {
        "username": str(user.get("email") or mapping.email),
        "cs_user_id": int(user.get("id") or mapping.cs_user_id),
        "active": bool(user.get("active", True)),
        "projects": _count(services.get("deployments")),
        "services": _count(services.get("container_services")),
        "run_rate": fmt2(run_rate),
        "current_usage": fmt2(usage),
        "currency": currency,
        "currency_symbol": symbol,
        "run_rate_display": display(symbol, run_rate),
        "current_usage_display": display(symbol, usage),
    }
