"""The admin API's actions and the UI's token login: what each route does to the installation's records.

Each action is ``action(inst, req, params) -> Response`` and runs under the installation's lock, after
``routing.py`` has checked format, version, credential and admin; ``ACTIONS`` maps route names to them.
Users (create, show, update, destroy, index, SSO token, suspension) are found as ``ApiAdminFindUser`` finds
them (``locate_user``); billing usages, user groups and locations are read-only.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sandboxes.computestacks.auth import UNLOCK_IN
from sandboxes.computestacks.rack import Halt, Request, errors, head, json_response, rails_error_page
from sandboxes.computestacks.rails import b64decode_lenient, iso, rb_blank, rb_to_i, rb_truthy, ruby_class
from sandboxes.computestacks.store import Installation
from sandboxes.computestacks.validation import (
    LOCALES,
    NOT_NULL,
    assign,
    before_validation,
    merge_labels,
    permit,
    user_params,
    validate,
)
from sandboxes.computestacks.views import group_json, location_json, paginate, usage_json, user_json
from sandboxes.plumbing import Response

SUPPORT_EMAILS = frozenset({"hello@computestacks.com", "kris@computestacks.com"})
SSO_TOKEN_TTL = timedelta(minutes=1)
CREATE_TOKEN_TTL = timedelta(minutes=10)

Action = Callable[[Installation, Request, dict[str, str]], Response]


# --------------------------------------------------------------------------- users


def locate_user(inst: Installation, req: Request, pid: str) -> dict[str, Any]:
    """ApiAdminFindUser#locate_user; halts with ``head :not_found`` on a miss."""
    found: dict[str, Any] | None = None
    label = req.query.get("find_by_label")
    number = rb_to_i(pid)
    ordered = [inst._users[k] for k in sorted(inst._users)]
    if label in ("whmcs_service_id", "whmcs_client_id") and number != 0:
        key = "service_id" if label == "whmcs_service_id" else "client_id"
        for user in ordered:
            whmcs = user["labels"].get("whmcs") if isinstance(user["labels"], dict) else None
            value = whmcs.get(key) if isinstance(whmcs, dict) else None
            # jsonb containment: numbers compare by value, a string "10" does not match 10
            if isinstance(value, int | float) and not isinstance(value, bool) and value == number:
                found = user
                break
    elif req.query.get("find_by_external_id") is not None:
        found = next((u for u in ordered if u["external_id"] == pid), None)
    elif req.query.get("find_by_email") is not None:
        try:
            wanted = b64decode_lenient(pid)
        except ValueError:
            wanted = b""
        found = next((u for u in ordered if u["email"].encode("utf-8") == wanted), None)
    else:
        found = inst._users.get(number) if number else None
    if found is None or found["email"] in SUPPORT_EMAILS:
        raise Halt(head(404))
    return found


def users_create(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    present, wrapped = user_params(req)
    if not present or wrapped is None:
        return errors(422, "Missing User Object")
    if not isinstance(wrapped, dict):
        return errors(500, f"undefined method `dig' for an instance of {ruby_class(wrapped)}")
    wrapped = dict(wrapped)
    if rb_blank(wrapped.get("password")):
        generated = base64.b64encode(secrets.token_bytes(12)).decode().replace("=", "")
        wrapped["password"] = wrapped["password_confirmation"] = generated
    elif wrapped.get("password_confirmation") is None:
        wrapped["password_confirmation"] = wrapped["password"]
    permitted = permit(wrapped)
    now = inst._now()
    record = inst._blank_user(now)
    record["id"] = None
    assign(record, permitted)
    if rb_blank(record.get("locale")) or record.get("locale") not in LOCALES:
        record["locale"] = "en"
    password, confirmation = permitted.get("password"), permitted.get("password_confirmation")
    before_validation(inst, record)
    problems = validate(inst, record, creating=True, password=password, confirmation=confirmation,
                        email_changed=True)
    if problems:
        return errors(422, *problems)
    for column in NOT_NULL:
        if record.get(column) is None:
            return errors(500, f'PG::NotNullViolation: ERROR:  null value in column "{column}" of '
                               'relation "users" violates not-null constraint')
    merge_labels(record, permitted.get("merge_labels"))
    record.update({
        "id": inst._next("user"), "password": str(password), "run_rate": 0,
        "auth_token": secrets.token_urlsafe(24), "auth_token_exp": now + CREATE_TOKEN_TTL,
        "created_at": now, "updated_at": now,
    })
    if rb_truthy(wrapped.get("skip_email_confirm")):
        record["confirmed_at"] = now
    else:
        record["confirmation_sent_at"] = now
    inst._users[record["id"]] = record
    inst._user_committed(None, record, password_changed=True)
    return json_response(201, {"user": user_json(inst, record, "create")})


def users_show(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    user = locate_user(inst, req, params["id"])
    include_usage = req.query.get("include") == "balance"
    return json_response(200, {"user": user_json(inst, user, "show", include_usage=include_usage)})


def users_update(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    user = locate_user(inst, req, params["id"])
    present, wrapped = user_params(req)
    if present and wrapped is not None and not isinstance(wrapped, dict):
        return rails_error_page(500)
    changes = dict(wrapped) if isinstance(wrapped, dict) else None
    if changes is not None and rb_truthy(changes.get("password")):
        if rb_blank(changes["password"]):
            changes.pop("password", None)
            changes.pop("password_confirmation", None)
        elif changes.get("password_confirmation") is None:
            changes["password_confirmation"] = changes["password"]
    if rb_blank(changes):  # params.require(:user) -> ParameterMissing, rendered by Rails as 400
        return rails_error_page(400)
    assert changes is not None
    permitted = permit(changes)
    candidate = copy.deepcopy(user)
    assign(candidate, permitted)
    if "locale" in permitted and candidate.get("locale") is None:
        return rails_error_page(500)
    password, confirmation = permitted.get("password"), permitted.get("password_confirmation")
    before_validation(inst, candidate)
    problems = validate(inst, candidate, creating=False, password=password, confirmation=confirmation,
                        email_changed=candidate.get("email") != user["email"])
    if problems:
        return errors(422, *problems)
    if any(candidate.get(column) is None for column in NOT_NULL):
        return rails_error_page(500)
    merge_labels(candidate, permitted.get("merge_labels"))
    if password is not None:
        candidate["password"] = str(password)
    if candidate != user:
        candidate["updated_at"] = inst._now()
    before = dict(user)
    user.clear()
    user.update(candidate)
    inst._user_committed(before, user, password_changed=password is not None)
    return json_response(200, {"user": user_json(inst, user, "show")})


def users_destroy(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    user = locate_user(inst, req, params["id"])
    del inst._users[user["id"]]
    for usage_id in inst._usages_by_user.pop(user["id"], {}):
        del inst._usages[usage_id]
    inst._credentials = {k: v for k, v in inst._credentials.items() if v["user_id"] != user["id"]}
    return head(204)


def users_index(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    ordered = sorted(inst._users.values(),
                     key=lambda u: ((u["lname"] or "").lower(), (u["fname"] or "").lower(), u["id"]))
    rows, headers = paginate(req, ordered)
    include_usage = req.query.get("include") == "balance"
    return json_response(200, {"users": [user_json(inst, u, "index", include_usage=include_usage)
                                         for u in rows]}, headers)


def user_sso_create(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    user = locate_user(inst, req, params["id"])
    now = inst._now()
    user.update(auth_token=secrets.token_urlsafe(24), auth_token_exp=now + SSO_TOKEN_TTL, updated_at=now)
    return json_response(201, {"username": user["email"], "token": user["auth_token"],
                               "expires": iso(user["auth_token_exp"])})


def _set_active(inst: Installation, req: Request, params: dict[str, str], active: bool) -> Response:
    user = locate_user(inst, req, params["id"])
    if user["active"] != active:
        user.update(active=active, updated_at=inst._now())
    return json_response(202, {})


def suspension_create(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    return _set_active(inst, req, params, False)


def suspension_destroy(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    return _set_active(inst, req, params, True)


def billing_usages_index(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    # Subscriptions::BaseController#load_parent: numeric id only, no find_by_* flags.
    number = rb_to_i(params["id"])
    user = inst._users.get(number) if number else None
    if user is None:
        return errors(404, "Unknown User")
    rows = sorted(inst._usages_by_user.get(user["id"], {}).values(),
                  key=lambda r: (r["created_at"], r["id"]), reverse=True)  # default_scope created_at desc
    page, headers = paginate(req, rows)
    return json_response(200, {"billing_usages": [usage_json(inst, r) for r in page]}, headers)


# --------------------------------------------------------------------------- groups, locations


def user_groups_index(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    ordered = sorted(inst._groups.values(), key=lambda g: (str(g["name"]).lower(), g["id"]))
    rows, headers = paginate(req, ordered)
    return json_response(200, {"user_groups": [group_json(inst, g) for g in rows]}, headers)


def user_groups_show(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    group = inst._groups.get(rb_to_i(params["id"]))
    if group is None:
        return head(404)
    return json_response(200, {"user_group": group_json(inst, group)})


def locations_index(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    ordered = sorted(inst._locations.values(), key=lambda loc: (str(loc["name"]).lower(), loc["id"]))
    return json_response(200, {"locations": [location_json(loc) for loc in ordered]})


def locations_show(inst: Installation, req: Request, params: dict[str, str]) -> Response:
    location = inst._locations.get(rb_to_i(params["id"]))
    if location is None:
        return head(404)
    return json_response(200, {"location": location_json(location)})


ACTIONS: dict[str, Action] = {
    "users_index": users_index, "users_create": users_create, "users_show": users_show,
    "users_update": users_update, "users_destroy": users_destroy, "user_sso_create": user_sso_create,
    "suspension_create": suspension_create, "suspension_destroy": suspension_destroy,
    "billing_usages_index": billing_usages_index, "user_groups_index": user_groups_index,
    "user_groups_show": user_groups_show, "locations_index": locations_index, "locations_show": locations_show,
}


# --------------------------------------------------------------------------- the UI's token login


def ui_root(inst: Installation, req: Request) -> Response:
    """ApplicationController#auth_from_token!: ``/?username=<email>&token=<token>``."""
    username, token = req.query.get("username"), req.query.get("token")
    target = "/login"
    if username is not None and token is not None:
        user = next((u for u in inst._users.values() if u["email"] == username), None)
        if user is not None and user["auth_token"] and user["auth_token_exp"]:
            valid = (user["auth_token_exp"] > inst._now()
                     and secrets.compare_digest(token.encode(), str(user["auth_token"]).encode()))
            locked = user["locked_at"] is not None and user["locked_at"] > inst._now() - UNLOCK_IN
            if valid and user["confirmed_at"] is not None and not locked:
                has_subscriptions = any(s["user_id"] == user["id"] for s in inst._sub_products.values())
                target = ("/deployments" if req.query.get("from_admin") is not None or has_subscriptions
                          else "/deployments/orders")
                now = inst._now()
                user.update(sign_in_count=user["sign_in_count"] + 1, last_sign_in_at=user["current_sign_in_at"],
                            current_sign_in_at=now, last_sign_in_ip=user["current_sign_in_ip"],
                            current_sign_in_ip=req.client_ip)
                inst._sso_logins.append({"user_id": user["id"], "at": now})
    return Response(302, b"", "text/html; charset=utf-8", [("Location", f"http://{req.host_with_port}{target}")])
