"""How ComputeStacks authenticates an API request: HTTP Basic with an API credential, and its lockout.

``ApiAuth#auth_request!`` acts only on ``Basic``; a bad pair halts with 401 ``Not Authorized`` (406 when the
request does not want JSON). ``User::ApiCredential#valid_password?`` with Devise lockable: each wrong secret
counts against the credential's owner, who is locked after ``MAX_FAILED_ATTEMPTS`` (then even the right
secret is refused) until ``UNLOCK_IN`` has passed.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sandboxes.computestacks.rack import UNKNOWN_FORMAT, Halt, Request, errors, plain
from sandboxes.computestacks.rails import b64decode_lenient
from sandboxes.computestacks.store import Installation
from sandboxes.plumbing import Response

NOT_AUTHORIZED = "Not Authorized"
MAX_FAILED_ATTEMPTS = 5
UNLOCK_IN = timedelta(hours=4)


def not_authorized(wants_json: bool) -> Response:
    return errors(401, NOT_AUTHORIZED) if wants_json else plain(406, UNKNOWN_FORMAT)


def auth_request(inst: Installation, req: Request, wants_json: bool) -> dict[str, Any] | None:
    """ApiAuth#auth_request!: only acts on ``Basic``; a bad pair halts with 401. Returns the owner."""
    header = req.headers.get("authorization") or ""
    if "Basic" not in header:
        return None
    try:
        scheme, _, encoded = header.strip().partition(" ")
        if scheme != "Basic":
            raise ValueError("not basic")
        username, sep, password = b64decode_lenient(encoded.strip()).decode("utf-8").partition(":")
        if not sep:
            raise ValueError("no colon")
        owner = check_credential(inst, username, password)
    except (ValueError, UnicodeDecodeError):
        owner = None
    if owner is None:
        raise Halt(not_authorized(wants_json))
    return owner


def check_credential(inst: Installation, username: str, password: str) -> dict[str, Any] | None:
    """User::ApiCredential#valid_password? with Devise lockable (maximum_attempts = 5)."""
    credential = inst._credentials.get(username)
    if credential is None:
        return None
    owner = inst._ghost_owner if credential["user_id"] is None else inst._users.get(credential["user_id"])
    if owner is None:
        return None
    now = inst._now()
    if inst._lockout:
        locked_at = owner.get("locked_at")
        if locked_at is not None and locked_at > now - UNLOCK_IN:
            return None
        if owner["failed_attempts"] >= MAX_FAILED_ATTEMPTS:
            owner["locked_at"] = now
            return None
    if secrets.compare_digest(password.encode(), str(credential["secret"]).encode()):
        owner["failed_attempts"] = 0
        owner["locked_at"] = None
        return owner
    owner["failed_attempts"] += 1
    return None
