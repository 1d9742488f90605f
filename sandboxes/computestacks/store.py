"""The records of the fake ComputeStacks installation, how tests seed them and how they read them back.

``Installation`` holds, under one lock, the users, billing plans, user groups, locations, products,
subscription products, billing usages (also per user), API credentials and SSO logins, plus the settings
that change the API's validation (currencies, billing address/phone, lockout). Its public methods are the
sandbox's seeding (``add_user``, ``add_usage`` ...) and inspection (``users``, ``usages`` ...) surface; the
API's controllers (``controllers.py``) change the same records.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sandboxes.computestacks.rails import to_datetime, to_decimal

SERVICE_KEYS = ("deployments", "containers", "container_services", "container_images", "container_registries",
                "dns_zones")


class Installation:
    """One ComputeStacks installation's data. All access holds ``_lock``; getters return copies."""

    def __init__(self, *, api_key: str, api_secret: str, currencies: Iterable[str], default_currency: str,
                 lockout: bool, billing_address: bool, billing_phone: bool, with_admin_user: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        # settings
        self._currencies = frozenset(currencies)
        self._default_currency = default_currency
        self._lockout = lockout
        self._billing_address = billing_address
        self._billing_phone = billing_phone
        # records
        self._seq: dict[str, int] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._plans: dict[int, dict[str, Any]] = {}
        self._groups: dict[int, dict[str, Any]] = {}
        self._locations: dict[int, dict[str, Any]] = {}
        self._products: dict[str, dict[str, Any]] = {}
        self._sub_products: dict[int, dict[str, Any]] = {}
        self._usages: dict[int, dict[str, Any]] = {}
        # the same rows per user, by id (a user's list reads its own rows, not every user's)
        self._usages_by_user: dict[int, dict[int, dict[str, Any]]] = {}
        self._credentials: dict[str, dict[str, Any]] = {}
        self._ghost_owner: dict[str, Any] = {"id": None, "is_admin": True, "failed_attempts": 0, "locked_at": None}
        self._sso_logins: list[dict[str, Any]] = []

        plan = self.add_billing_plan("default")
        self.add_user_group("default", is_default=True, billing_plan_id=plan["id"])
        owner_id = None
        if with_admin_user:
            owner_id = self.add_user("admin@sandbox.computestacks.test", "Sandbox", "Admin", is_admin=True)["id"]
        self.add_credential(api_key, api_secret, user_id=owner_id)

    # ------------------------------------------------------------------ inspection

    @property
    def users(self) -> dict[int, dict[str, Any]]:
        """A snapshot of every user record (internal form: datetimes, ``password`` in clear, ``services``)."""
        with self._lock:
            return copy.deepcopy(self._users)

    def user(self, user_id: int) -> dict[str, Any] | None:
        with self._lock:
            record = self._users.get(user_id)
            return copy.deepcopy(record) if record else None

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        with self._lock:
            for record in self._users.values():
                if record["email"] == email.strip().lower():
                    return copy.deepcopy(record)
            return None

    @property
    def user_groups(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._groups)

    @property
    def locations(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._locations)

    @property
    def usages(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._usages)

    @property
    def sso_logins(self) -> list[dict[str, Any]]:
        """Successful ``GET /?username=&token=`` logins: user_id, at."""
        with self._lock:
            return list(self._sso_logins)

    # ------------------------------------------------------------------ seeding

    def _next(self, kind: str) -> int:
        self._seq[kind] = self._seq.get(kind, 0) + 1
        return self._seq[kind]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def add_billing_plan(self, name: str) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            plan: dict[str, Any] = {"id": self._next("plan"), "name": name, "created_at": now, "updated_at": now}
            self._plans[plan["id"]] = plan
            return dict(plan)

    def add_user_group(self, name: str, is_default: bool = False, *, billing_plan_id: int | None = None,
                       location_ids: Iterable[int] = (), **attrs: Any) -> dict[str, Any]:
        with self._lock:
            if billing_plan_id is not None and billing_plan_id not in self._plans:
                raise ValueError(f"no billing plan {billing_plan_id}")
            now = self._now()
            group: dict[str, Any] = {
                "id": self._next("group"), "name": name, "is_default": bool(is_default),
                "billing_plan_id": billing_plan_id if billing_plan_id is not None else (min(self._plans) if
                                                                                        self._plans else None),
                "active": True, "q_containers": 250, "q_dns_zones": 250, "q_cr": 20, "allow_local_volume": False,
                "bill_offline": True, "bill_suspended": True, "remove_stopped": False,
                "created_at": now, "updated_at": now, "location_ids": list(location_ids),
            }
            unknown = set(attrs) - set(group)
            if unknown:
                raise TypeError(f"unknown user group attributes: {sorted(unknown)}")
            group.update(attrs)
            if group["is_default"]:
                for other in self._groups.values():
                    other["is_default"] = False
            self._groups[group["id"]] = group
            return copy.deepcopy(group)

    def add_location(self, name: str, **attrs: Any) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            location: dict[str, Any] = {
                "id": self._next("location"), "name": name, "active": True, "fill_strategy": "least",
                "fill_by_qty": True, "overcommit_memory": True, "overcommit_cpu": True,
                "created_at": now, "updated_at": now,
            }
            location.update(attrs)
            self._locations[location["id"]] = location
            return dict(location)

    def add_credential(self, api_key: str, api_secret: str, *, user_id: int | None) -> None:
        """An API credential pair owned by ``user_id`` (None: an admin that is not in the user list)."""
        with self._lock:
            if user_id is not None and user_id not in self._users:
                raise ValueError(f"no user {user_id}")
            self._credentials[api_key] = {"secret": api_secret, "user_id": user_id}

    def add_user(self, email: str, fname: str, lname: str, *, currency: str = "USD",
                 external_id: str | int | None = None, labels: Mapping[str, Any] | None = None,
                 user_group_id: int | None = None, active: bool = True, is_admin: bool = False,
                 run_rate: str | int | Decimal = "0.0", deployments: int = 0, container_services: int = 0,
                 password: str | None = None, created_at: datetime | str | None = None,
                 confirmed: bool = True, **attrs: Any) -> dict[str, Any]:
        """Seed a user directly (no API validation beyond a unique email). Returns the record."""
        with self._lock:
            normalized = email.strip().lower()
            if self._email_taken(normalized, None):
                raise ValueError(f"email already taken: {normalized}")
            if user_group_id is not None and user_group_id not in self._groups:
                raise ValueError(f"no user group {user_group_id}")
            when = to_datetime(created_at) if created_at is not None else self._now()
            record = self._blank_user(when)
            record.update({
                "id": self._next("user"), "email": normalized, "fname": fname, "lname": lname,
                "currency": currency, "external_id": None if external_id is None else str(external_id),
                "labels": copy.deepcopy(dict(labels or {})), "user_group_id": user_group_id or self._default_group_id(),
                "active": active, "is_admin": is_admin, "run_rate": run_rate,
                "password": password or secrets.token_urlsafe(12), "confirmed_at": when if confirmed else None,
            })
            record["services"].update({"deployments": deployments, "container_services": container_services,
                                       "containers": container_services})
            unknown = set(attrs) - set(record)
            if unknown:
                raise TypeError(f"unknown user attributes: {sorted(unknown)}")
            record.update(attrs)
            self._users[record["id"]] = record
            return copy.deepcopy(record)

    def set_user_fields(self, user_id: int, **fields: Any) -> dict[str, Any]:
        """Change a user record behind the API's back (e.g. ``run_rate``, ``services``, ``locked_at``)."""
        with self._lock:
            record = self._users[user_id]
            unknown = set(fields) - set(record)
            if unknown:
                raise TypeError(f"unknown user attributes: {sorted(unknown)}")
            record.update(copy.deepcopy(fields))
            return copy.deepcopy(record)

    def update_user_in_ui(self, user_id: int, **fields: Any) -> dict[str, Any]:
        """The user edits their own profile in the ComputeStacks UI (e.g. ``email=``, ``fname=``, ``password=``):
        the email is normalised and must stay unique (ValueError), and the app's after-commit hooks run (the
        ``webhook_users`` webhook, ``webhooks.py``), as after an API update. Returns the record."""
        with self._lock:
            record = self._users[user_id]
            unknown = set(fields) - set(record)
            if unknown:
                raise TypeError(f"unknown user attributes: {sorted(unknown)}")
            if "email" in fields:
                fields["email"] = str(fields["email"]).strip().lower()
                if self._email_taken(fields["email"], user_id):
                    raise ValueError("Email has already been taken")
            before = copy.deepcopy(record)
            record.update(copy.deepcopy(fields))
            if record != before:
                record["updated_at"] = self._now()
            self._user_committed(before, record, password_changed="password" in fields)
            return copy.deepcopy(record)

    def add_usage(self, user_id: int, *, product_name: str, subscription_product_id: int, total: str | Decimal,
                  qty: str | Decimal, period_start: datetime | str, period_end: datetime | str,
                  rate: str | Decimal | None = None, rate_period: int = 1, qty_total: str | Decimal | None = None,
                  processed: bool = False, processed_on: datetime | str | None = None,
                  external_id: str | None = None, product_label: str | None = None,
                  created_at: datetime | str | None = None) -> dict[str, Any]:
        """Seed one BillingUsage row. ``created_at`` defaults to ``period_end`` (rows are written when a
        collection period ends); the API lists rows newest ``created_at`` first."""
        with self._lock:
            if user_id not in self._users:
                raise ValueError(f"no user {user_id}")
            total_d, qty_d = to_decimal(total, "total"), to_decimal(qty, "qty")
            if rate is None:
                rate_d = (total_d / qty_d).quantize(Decimal("1e-8")).normalize() if qty_d else Decimal(0)
            else:
                rate_d = to_decimal(rate, "rate")
            start, end = to_datetime(period_start), to_datetime(period_end)
            product = self._products.get(product_name)
            if product is None:
                product = {"id": self._next("product"), "name": product_name,
                           "label": product_label or product_name, "resource_kind": "package", "unit": 1,
                           "unit_type": "hour", "external_id": None, "group": None, "package": None}
                self._products[product_name] = product
            sub = self._sub_products.get(subscription_product_id)
            if sub is None:
                sub = {"id": subscription_product_id, "product_name": product_name, "user_id": user_id,
                       "external_id": None, "start_on": start, "active": True, "phase_type": "final",
                       "created_at": start, "updated_at": start}
                self._sub_products[subscription_product_id] = sub
            elif sub["product_name"] != product_name or sub["user_id"] != user_id:
                raise ValueError(f"subscription product {subscription_product_id} belongs to another "
                                 "product or user")
            made = to_datetime(created_at) if created_at is not None else end
            row: dict[str, Any] = {
                "id": self._next("usage"), "user_id": user_id, "subscription_product_id": subscription_product_id,
                "period_start": start, "period_end": end, "external_id": external_id, "rate": rate_d,
                "rate_period": rate_period, "qty": qty_d,
                "qty_total": to_decimal(qty_total, "qty_total") if qty_total is not None else qty_d,
                "total": total_d, "processed": processed,
                "processed_on": (to_datetime(processed_on) if processed_on is not None
                                 else (end if processed else None)),
                "created_at": made, "updated_at": made,
            }
            self._usages[row["id"]] = row
            self._usages_by_user.setdefault(user_id, {})[row["id"]] = row
            return copy.deepcopy(row)

    def mark_usage_processed(self, user_id: int | None = None) -> int:
        """What ComputeStacks' month-end job does to the rows it aggregated; returns how many changed."""
        with self._lock:
            now = self._now()
            changed = 0
            rows = self._usages if user_id is None else self._usages_by_user.get(user_id, {})
            for row in rows.values():
                if not row["processed"]:
                    row.update(processed=True, processed_on=now, updated_at=now)
                    changed += 1
            return changed

    # ------------------------------------------------------------------ for the controllers (under the lock)

    def _user_committed(self, before: dict[str, Any] | None, after: dict[str, Any], *,
                        password_changed: bool = False) -> None:
        """After a create (``before`` None) or update of a user commits; ``webhooks.UserWebhooks`` acts on it."""

    def _blank_user(self, now: datetime) -> dict[str, Any]:
        return {
            "id": 0, "fname": None, "lname": None, "email": "", "phone": None, "active": True, "is_admin": False,
            "api_key": None, "api_version": 0, "external_id": None, "currency": "USD", "confirmed_at": None,
            "confirmation_sent_at": None, "last_request_at": None, "last_sign_in_at": None,
            "current_sign_in_at": None, "sign_in_count": 0, "reset_password_sent_at": None, "locked_at": None,
            "failed_attempts": 0, "address1": None, "address2": None, "city": None, "state": None, "zip": None,
            "country": "US", "vat": None, "company_name": None, "locale": "en", "labels": {},
            "user_group_id": None, "created_at": now, "updated_at": now, "auth_token": None,
            "auth_token_exp": None, "current_sign_in_ip": None, "last_sign_in_ip": None,
            "bypass_billing": False, "password": None, "run_rate": 0,
            "services": dict.fromkeys(SERVICE_KEYS, 0),
        }

    def _default_group_id(self) -> int | None:
        for group in self._groups.values():
            if group["is_default"]:
                return int(group["id"])
        return None

    def _email_taken(self, email: str, except_id: int | None) -> bool:
        return any(u["email"] == email and u["id"] != except_id for u in self._users.values())
