"""A faithful fake of the ComputeStacks admin API: a real HTTP server on loopback.

Standard library only: a ``ThreadingHTTPServer`` in a daemon thread, one lock around all state.
It reproduces what reference/computestacks-api.md documents (sections 1, 2 and 6), checked against
the ComputeStacks controller source (``ComputeStacks/controller`` 9.3.1) where the two disagree:

* transport: ``Accept`` must ask for JSON (else 406 plain text), ``api_version=NN`` in the Accept
  header (40/50/unknown: 422; 51..71: works with ``API-Deprecated: true``; missing: 80), a ``.json``
  path suffix also selects JSON, any other suffix gives 406;
* auth: HTTP Basic ``key:secret`` of an admin's API credential, else 401 ``{"errors":["Not Authorized"]}``
  (a valid non-admin credential too); each wrong secret counts against the owner, who is locked
  after 5 (then even the right secret is refused), as ``User::ApiCredential#valid_password?`` does;
* users: create (Rails ParamsWrapper, permit list, Devise + model validations in Rails' order,
  generated password, currency coercion, default-group fallback, shallow ``merge_labels``), show,
  update, delete, the four lookups with their precedence, list, SSO tokens, suspension;
* user groups, locations, billing usages (newest first), pagination headers exactly as
  api-pagination + will_paginate build them, 404 shapes, Rack::Attack's 429.

Webhook: set ``webhook_users_url`` and every user create/update that changes a watched field (also
``update_user_in_ui``) POSTs ``{"user": {...}}`` there in the background (``webhooks.py``).

Knobs for tests: ``latency``, ``fail_next``, ``timeout_after_commit_next``, ``hang``, ``throttle_all``,
``drop_next``, ``slow_next``, ``throttle_next``; ``requests`` records every request (passwords included:
it is a sandbox; the ``Authorization`` header is left out).

Where things are:

* ``server.py``: ``ComputeStacksSandbox`` (lifecycle, the request log, one request from handler to answer);
* ``store.py``: the installation's records, seeding (``add_user``, ``add_usage`` ...) and inspection;
* ``routing.py``: the pipeline (format, version, auth, route table, admin check) up to the action;
* ``auth.py``: HTTP Basic credentials and the lockout;
* ``controllers.py``: the actions, ``locate_user``'s lookups, the UI's token login;
* ``validation.py``: request body to user record, and the validation errors;
* ``views.py``: the JSON of each record (RABL) and the pagination headers;
* ``faults.py``: the knobs and Rack::Attack's throttle;
* ``webhooks.py``: the ``webhook_users`` webhook after a user changes (``webhook_users_url`` and its knobs);
* ``rack.py``, ``rails.py``: the request as Rack sees it, Rails' answers, Ruby's value semantics;
* ``demo.py``: ``seed_demo`` and the command line; the HTTP plumbing is ``sandboxes/plumbing.py``.

Run it: ``python -m sandboxes.computestacks --port 8081 --seed-demo``.
"""

from sandboxes.computestacks.auth import MAX_FAILED_ATTEMPTS, NOT_AUTHORIZED, UNLOCK_IN
from sandboxes.computestacks.controllers import CREATE_TOKEN_TTL, SSO_TOKEN_TTL, SUPPORT_EMAILS
from sandboxes.computestacks.demo import main, seed_demo
from sandboxes.computestacks.rack import UNKNOWN_FORMAT
from sandboxes.computestacks.routing import (
    BAD_REQUEST,
    CS_VERSION,
    DEPRECATED_VERSIONS,
    MISSING_VERSION,
    SUPPORTED_VERSIONS,
    UNKNOWN_ROUTE,
)
from sandboxes.computestacks.server import ComputeStacksSandbox
from sandboxes.computestacks.validation import EMAIL_RE, USER_COLUMNS
from sandboxes.computestacks.views import CURRENCY_SYMBOLS, DEFAULT_PER_PAGE
from sandboxes.plumbing import CaseInsensitiveHeaders

__all__ = [
    "BAD_REQUEST", "CREATE_TOKEN_TTL", "CS_VERSION", "CURRENCY_SYMBOLS", "DEFAULT_PER_PAGE", "DEPRECATED_VERSIONS",
    "EMAIL_RE", "MAX_FAILED_ATTEMPTS", "MISSING_VERSION", "NOT_AUTHORIZED", "SSO_TOKEN_TTL", "SUPPORTED_VERSIONS",
    "SUPPORT_EMAILS", "UNKNOWN_FORMAT", "UNKNOWN_ROUTE", "UNLOCK_IN", "USER_COLUMNS", "CaseInsensitiveHeaders",
    "ComputeStacksSandbox", "main", "seed_demo",
]
