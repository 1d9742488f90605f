"""Which code answers a request to the ComputeStacks sandbox, and what is checked before it runs.

``app`` is the Rails pipeline: ``/api/...`` goes through format negotiation (``Accept``, a ``.json`` suffix),
VersionCake's version check (``api_version=NN`` in Accept: 80 works, 51..71 work with ``API-Deprecated: true``,
anything else is 422), ``POST /api/auth`` (always 400), CORS preflights, ``auth_request!`` (``auth.py``), the
route table (``config/routes/api*.rb`` for what the sandbox implements; ``:id`` is ``[^/.?]+``) and
``ensure_admin!``, then the action (``controllers.ACTIONS``); ``GET /`` is the UI's token login; anything else
is Rails' 404 page.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from sandboxes.computestacks.auth import auth_request, not_authorized
from sandboxes.computestacks.controllers import ACTIONS, ui_root
from sandboxes.computestacks.rack import (
    JSON_TYPES,
    UNKNOWN_FORMAT,
    Halt,
    Request,
    errors,
    head,
    json_response,
    plain,
)
from sandboxes.computestacks.rails import rb_split_last
from sandboxes.computestacks.store import Installation
from sandboxes.plumbing import Response

CS_VERSION = "9.3.1"
MISSING_VERSION = 80
SUPPORTED_VERSIONS = frozenset({80})
DEPRECATED_VERSIONS = frozenset({51, 52, 53, 54, 60, 61, 62, 65, 70, 71})

UNKNOWN_ROUTE = "Unknown API Call. Please check the documentation."
BAD_REQUEST = "Bad Request. Please check the documentation."

_BROWSER_LIKE_ACCEPT = re.compile(r",\s*\*/\*|\*/\*\s*,")  # Rails ignores such Accept headers
_VERSION_RE = re.compile(r"api_version=([0-9]+)")

_GET = frozenset({"GET", "HEAD"})
_POST = frozenset({"POST"})
_UPDATE = frozenset({"PATCH", "PUT"})
_DELETE = frozenset({"DELETE"})
# (path segments after /api, methods, route name); the first match wins
ROUTES: tuple[tuple[tuple[str, ...], frozenset[str], str], ...] = (
    (("version",), _GET, "version"),
    (("auth",), _POST, "auth"),
    (("admin", "users"), _GET, "users_index"),
    (("admin", "users"), _POST, "users_create"),
    (("admin", "users", ":id"), _GET, "users_show"),
    (("admin", "users", ":id"), _UPDATE, "users_update"),
    (("admin", "users", ":id"), _DELETE, "users_destroy"),
    (("admin", "users", ":id", "user_sso"), _POST, "user_sso_create"),
    (("admin", "users", ":id", "suspension"), _POST, "suspension_create"),
    (("admin", "users", ":id", "suspension"), _DELETE, "suspension_destroy"),
    (("admin", "users", ":id", "billing_usages"), _GET, "billing_usages_index"),
    (("admin", "user_groups"), _GET, "user_groups_index"),
    (("admin", "user_groups", ":id"), _GET, "user_groups_show"),
    (("admin", "locations"), _GET, "locations_index"),
    (("admin", "locations", ":id"), _GET, "locations_show"),
)


def app(inst: Installation, req: Request) -> Response:
    if req.path == "/api" or req.path.startswith("/api/"):
        try:
            return api(inst, req)
        except Halt as halt:
            return halt.response
    if req.path == "/" and req.method in ("GET", "HEAD"):
        return ui_root(inst, req)
    return plain(404, "<html><body>The page you were looking for doesn't exist.</body></html>")


def api(inst: Installation, req: Request) -> Response:
    name, params, fmt = route(req)
    wants_json = fmt == "json" if fmt is not None else accepts_json(req.headers.get("accept"))

    # VersionCake's check_version! is prepended to every before_action.
    version = requested_version(req)
    if version not in SUPPORTED_VERSIONS and version not in DEPRECATED_VERSIONS:
        if not wants_json:
            raise Halt(plain(406, UNKNOWN_FORMAT))
        requested = rb_split_last(rb_split_last(req.headers.get("accept"), "; "), "=")
        message = (f"You requested an unsupported version ({requested})" if requested is not None
                   else "You requested an unsupported version")
        response = errors(422, message)
        response.headers.append(("API-Version-Supported", "false"))
        return response

    if name == "auth":  # POST /api/auth: no auth_request!, always 400
        if not wants_json:
            return plain(406, UNKNOWN_FORMAT)
        return errors(400, "this authentication method has been replaced with oauth2.",
                      "Please see the api documentation: /documentation/api")

    if req.method == "OPTIONS":  # auth_request! answers CORS preflights itself
        return plain(200, "", "text/plain")

    current_user = auth_request(inst, req, wants_json)
    deprecated = version in DEPRECATED_VERSIONS

    if name is None:
        if not wants_json:
            return plain(404, json.dumps([UNKNOWN_ROUTE]))
        return deprecation(errors(404, UNKNOWN_ROUTE), deprecated)

    if name == "version":
        if current_user is None:
            return head(401)  # doorkeeper_authorize! without a token
        if not wants_json:
            return plain(406, UNKNOWN_FORMAT)
        return deprecation(json_response(200, {
            "version": CS_VERSION, "api_latest_version": int("".join(CS_VERSION.split(".")[:2])),
            "api_available_versions": sorted(DEPRECATED_VERSIONS) + sorted(SUPPORTED_VERSIONS),
        }), deprecated)

    # Api::Admin::ApplicationController#ensure_admin!
    if current_user is None or not current_user.get("is_admin"):
        return deprecation(not_authorized(wants_json), deprecated)
    if not wants_json:
        return plain(406, UNKNOWN_FORMAT)
    return deprecation(ACTIONS[name](inst, req, params), deprecated)


def deprecation(response: Response, deprecated: bool) -> Response:
    if deprecated:
        response.headers.append(("API-Deprecated", "true"))
    return response


def accepts_json(accept: str | None) -> bool:
    """Rails format negotiation for respond_to json/xml: no Accept (or a browser-like one) means HTML."""
    if not accept or _BROWSER_LIKE_ACCEPT.search(accept):
        return False
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(kinds & JSON_TYPES) or kinds == {"*/*"}


def requested_version(req: Request) -> int:
    match = _VERSION_RE.search(req.headers.get("accept") or "")
    return int(match.group(1)) if match else MISSING_VERSION


def route(req: Request) -> tuple[str | None, dict[str, str], str | None]:
    """Match ``config/routes/api*.rb`` for what the sandbox implements; ``:id`` is ``[^/.?]+``.
    Returns (route name or None, path parameters, format suffix or None)."""
    segments = req.path.split("/")[2:]  # after "/api"
    if segments and segments[-1] == "":
        segments.pop()
    fmt: str | None = None
    if segments and "." in segments[-1]:
        pieces = segments[-1].split(".")
        if len(pieces) != 2 or not pieces[0] or not pieces[1]:
            return None, {}, None
        segments[-1], fmt = pieces[0], pieces[1].lower()
    if any(not s or "." in s for s in segments):
        return None, {}, fmt
    for pattern, methods, name in ROUTES:
        if len(pattern) != len(segments) or req.method not in methods:
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith(":"):
                params[want[1:]] = unquote(got)
            elif want != got:
                break
        else:
            return name, params, fmt
    return None, {}, fmt
