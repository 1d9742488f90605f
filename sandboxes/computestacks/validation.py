"""How ComputeStacks turns a request body into a user record, and the validation errors it answers.

Rails' ParamsWrapper (``params[:user]`` from a flat JSON body: only the users table's columns), the
UsersController permit list, the attribute casts, the callbacks before validation (default group, email
normalisation, currency coercion), the errors in Rails' order (belongs_to, Devise validatable, the model's
own, user_address) and ``merge_labels``' shallow merge.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from sandboxes.computestacks.rack import Halt, Request, rails_error_page
from sandboxes.computestacks.rails import cast_bool, cast_int, cast_string, rb_blank
from sandboxes.computestacks.store import Installation

EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\Z")  # Devise.email_regexp

# Columns of the users table (CTL db/schema.rb): what Rails' ParamsWrapper copies into ``user``
# from a flat JSON body. ``password``, ``merge_labels`` and ``skip_email_confirm`` are not columns.
USER_COLUMNS = frozenset({
    "id", "fname", "lname", "timezone", "lang", "active", "created_at", "updated_at", "last_request_at",
    "token", "locale", "email", "encrypted_password", "reset_password_token", "reset_password_sent_at",
    "remember_created_at", "sign_in_count", "current_sign_in_at", "last_sign_in_at", "current_sign_in_ip",
    "last_sign_in_ip", "confirmation_token", "confirmed_at", "confirmation_sent_at", "failed_attempts",
    "unlock_token", "locked_at", "is_admin", "currency", "api_key", "api_secret", "api_version",
    "external_id", "auth_token", "auth_token_exp", "country", "bypass_billing", "city", "state", "address1",
    "address2", "zip", "req_second_factor", "last_second_factor_auth", "bypass_second_factor", "vat",
    "phase_started", "user_group_id", "comments", "last_request_ip", "company_name", "phone", "labels",
    "otp_secret_enc", "last_otp_at", "webauthn_id", "c_sftp_pass",
})
# UsersController#user_params (scalars), plus ``merge_labels: {}`` (any JSON object).
_STRING_PARAMS = ("fname", "lname", "email", "currency", "external_id", "country", "city", "state", "address1",
                  "address2", "zip", "vat", "company_name", "phone", "locale")
_BOOL_PARAMS = ("active", "is_admin", "bypass_billing")
_PERMITTED = frozenset({*_STRING_PARAMS, *_BOOL_PARAMS, "password", "password_confirmation", "user_group_id",
                        "skip_email_confirm", "merge_labels"})
NOT_NULL = ("active", "is_admin", "country", "locale", "currency")
LOCALES = frozenset({"en", "de", "fr", "es", "it", "nl", "pt", "ja", "zh"})


def user_params(req: Request) -> tuple[bool, Any]:
    """``params[:user]`` after Rails' JSON parsing and ParamsWrapper. (present?, value)."""
    body: Any = None
    if req.is_json_body and req.body.strip():
        try:
            body = json.loads(req.body)
        except ValueError:
            raise Halt(rails_error_page(400)) from None  # ActionDispatch ParseError
        if not isinstance(body, dict):
            body = {"_json": body}
    if not req.is_json_body:
        return False, None
    body = body or {}
    if "user" in body:
        return True, body["user"]
    # wrap_parameters format: [:json] copies the keys that are User columns into params[:user].
    return True, {k: v for k, v in body.items() if k in USER_COLUMNS}


def permit(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in _PERMITTED:
            continue
        if key == "merge_labels":
            if isinstance(value, dict):
                out[key] = copy.deepcopy(value)
        elif not isinstance(value, dict | list):
            out[key] = value
    return out


def assign(record: dict[str, Any], permitted: Mapping[str, Any]) -> None:
    for key in _STRING_PARAMS:
        if key in permitted:
            record[key] = cast_string(permitted[key])
    for key in _BOOL_PARAMS:
        if key in permitted:
            record[key] = cast_bool(permitted[key])
    if "user_group_id" in permitted:
        record["user_group_id"] = cast_int(permitted["user_group_id"])


def before_validation(inst: Installation, record: dict[str, Any]) -> None:
    if record.get("user_group_id") not in inst._groups:  # set_user_group
        record["user_group_id"] = inst._default_group_id()
    if isinstance(record.get("email"), str):  # Devise strip_whitespace_keys, case_insensitive_keys
        record["email"] = record["email"].strip().lower()
    if record.get("currency") not in inst._currencies:  # set_currency: "eur" and nil included
        record["currency"] = inst._default_currency
    if isinstance(record.get("currency"), str):
        record["currency"] = record["currency"].upper()


def validate(inst: Installation, record: dict[str, Any], *, creating: bool, password: Any, confirmation: Any,
             email_changed: bool) -> list[str]:
    """Errors in Rails' order: belongs_to, Devise validatable, the model's own, user_address."""
    errors: list[str] = []
    if record.get("user_group_id") is None:
        errors.append("User group must exist")
    raw_email = record.get("email")
    email = "" if raw_email is None else str(raw_email)
    if rb_blank(email):
        errors.append("Email can't be blank")
    elif email_changed:
        if inst._email_taken(email, record.get("id")):
            errors.append("Email has already been taken")
        if not EMAIL_RE.match(email):
            errors.append("Email is invalid")
    if creating or password is not None or confirmation is not None:  # Devise password_required?
        if rb_blank(password):
            errors.append("Password can't be blank")
        if confirmation is not None and password != confirmation:
            errors.append("Password confirmation doesn't match Password")
    if not rb_blank(password):
        length = len(str(password))
        if length < 8:
            errors.append("Password is too short (minimum is 8 characters)")
        elif length > 128:
            errors.append("Password is too long (maximum is 128 characters)")
    if rb_blank(record.get("fname")):
        errors.append("Fname can't be blank")
    if rb_blank(record.get("lname")):
        errors.append("Lname can't be blank")
    if rb_blank(email):
        errors.append("Email can't be blank")
    elif inst._email_taken(email, record.get("id")):
        errors.append("Email has already been taken")
    if creating and inst._billing_address:
        if rb_blank(record.get("country")):
            errors.append("Country must be present")
        if rb_blank(record.get("state")) and record.get("country") in ("US", "CA"):
            errors.append("State must be present")
        if rb_blank(record.get("address1")):
            errors.append("Address1 must be present")
        if rb_blank(record.get("city")):
            errors.append("City must be present")
        if inst._billing_phone:
            phone = record.get("phone")
            if rb_blank(phone):
                errors.append("Phone must be present")
            elif not 7 <= len(str(phone)) <= 16:
                errors.append("Phone must be between 8 and 15 digits")
    elif creating and rb_blank(record.get("country")):
        record["country"] = "US"
    return errors


def merge_labels(record: dict[str, Any], merge: Any) -> None:
    """User#combine_labels: each top-level key of merge_labels replaces that key (a shallow merge)."""
    if isinstance(merge, dict):
        labels = record["labels"] if isinstance(record["labels"], dict) else {}
        for key, value in merge.items():
            labels[key] = copy.deepcopy(value)
        record["labels"] = labels
