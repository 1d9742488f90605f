"""POST /v1/hooks/cs-user: ComputeStacks' ``webhook_users`` -> the WHMCS service username (API.md section 3).

ComputeStacks posts this after a user's email, name, password, ... changed (reference computestacks-api.md
section 7), unsigned (``cswhmcs.api.make_token_handler`` checks the URL's token before this runs) and
asynchronously, so deliveries may repeat and arrive out of order. So nothing in the body is trusted but
``user.id``: the user is read back from ComputeStacks, and what ComputeStacks holds *now* is applied.

1. ``user.id`` (an integer > 0). None (ComputeStacks 9.3.1 posts this webhook with an empty body) is a 400
   ``no_user_id``, counted (``UserWebhooksWithoutUserId``) and logged: there is nothing to read back.
2. The user, read back (``GET /api/admin/users/:id``). Unknown, or an admin: ``updated: false``.
3. Its WHMCS service: the link create/import writes (label ``whmcs.service_id``, else the numeric
   ``external_id``, as ``accounts.lookup.belongs_to_service`` reads it), and the accounts mapping of that
   service must name this user. Anything else is unlinked: ``updated: false``, nothing written.
4. WHMCS's current service username (``GetClientsProducts`` by service id); when it differs from the
   ComputeStacks email, ``UpdateClientProduct serviceusername=<email>`` (``updated: true``). The mapping's
   stored email follows.
5. After writing anything, the user is read again: if its email changed meanwhile (a later change whose
   own delivery may already have finished), the round repeats with the newer email. A delivery whose read
   was overtaken can therefore never leave an older email behind: every write is followed by a read.

A WHMCS failure answers 502 (ComputeStacks retries a non-2xx answer), a read timeout 504; ComputeStacks
failures map as every route's do (API.md section 2). Everything fits one request deadline (23 s of
ComputeStacks' 30 s).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from cswhmcs import deadline
from cswhmcs.adapters.computestacks import UPSTREAM, UserSelector
from cswhmcs.adapters.retry import OutOfTime
from cswhmcs.deps import Request
from cswhmcs.errors import BadRequest, InvalidInput
from cswhmcs.observability import count, logger

ROUTE = "/v1/hooks/cs-user"
# CloudWatch EMF counts (namespace ComputeStacksWHMCS, dimension service).
WITHOUT_USER_ID = "UserWebhooksWithoutUserId"  # deliveries with no user id (ComputeStacks 9.3.1's empty body)
USERNAMES_UPDATED = "ServiceUsernamesUpdated"  # WHMCS service usernames set to the ComputeStacks email
MAX_USER_ID = 2**63 - 1  # ComputeStacks' ids are bigint
ROUNDS = 3  # read -> write -> read again; a change racing the delivery costs one more round, at most two
NO_USER_ID = ("The webhook carries no user id (expected ComputeStacks' {\"user\": {\"id\": ...}} body; "
              "ComputeStacks 9.3.1 posts webhook_users with an empty body), so nothing was changed.")


class _ServiceUsernames(Protocol):
    """What this module asks of WHMCS (``adapters.whmcs.WhmcsClient``)."""

    def get_clients_products(self, *, serviceid: int | None = ...) -> list[dict[str, Any]]:
        ...

    def update_client_product(self, service_id: int, /, **fields: Any) -> None:
        ...


class _Mappings(Protocol):
    """What this module asks of the accounts table (``adapters.dynamo.AccountsRepo``)."""

    def get(self, service_id: int, /) -> Any:
        ...

    def update_fields(self, service_id: int, /, **fields: Any) -> None:
        ...


def user_id_of(payload: dict[str, Any]) -> int:
    """``user.id`` of the body: the one value trusted. ``BadRequest`` (400 ``no_user_id``) when absent."""
    user = payload.get("user")
    raw = user.get("id") if isinstance(user, dict) else None
    if raw is None or raw == "":
        count(WITHOUT_USER_ID)
        logger.warning("users webhook without a user id", extra={
            "route": ROUTE, "body_keys": sorted(str(k)[:40] for k in payload)[:10]})
        raise BadRequest(NO_USER_ID, code="no_user_id")
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_USER_ID:
        raise InvalidInput("The field 'user.id' must be a ComputeStacks user id (an integer above 0).",
                           field="user.id")
    return raw


def linked_service_id(user: dict[str, Any]) -> int | None:
    """The WHMCS service id the user carries: label ``whmcs.service_id``, else a numeric ``external_id``."""
    labels = user.get("labels")
    whmcs = labels.get("whmcs") if isinstance(labels, dict) else None
    label = whmcs.get("service_id") if isinstance(whmcs, dict) else None
    for value in (label, user.get("external_id")):
        if isinstance(value, bool) or value in (None, ""):
            continue
        text = str(value).strip()
        if text.isdigit() and 0 < int(text) <= 2_147_483_647:
            return int(text)
        return None  # set, but not a service id: not linked to any service
    return None


def _read_user(req: Request, user_id: int) -> dict[str, Any] | None:
    if deadline.current().expired():
        raise OutOfTime(UPSTREAM)
    user = req.deps.cs.get_user(UserSelector.by_id(user_id))
    return dict(user) if user else None


def _email(user: dict[str, Any]) -> str:
    return str(user.get("email") or "").strip()


def _service_username(whmcs: _ServiceUsernames, service_id: int) -> str | None:
    """The WHMCS service's username, or None when WHMCS has no such service."""
    for row in whmcs.get_clients_products(serviceid=service_id):
        if str(row.get("id")) == str(service_id):
            return str(row.get("username") or "")
    return None


def cs_user_changed(req: Request) -> dict[str, Any]:
    user_id = user_id_of(req.payload)
    whmcs = cast(_ServiceUsernames, req.deps.whmcs)
    accounts = cast(_Mappings, req.deps.accounts)
    user = _read_user(req, user_id)
    updated = False
    for _ in range(ROUNDS):
        if user is None or user.get("is_admin"):
            logger.info("users webhook: no such user (or an admin)", extra={"cs_user_id": user_id, "updated": updated})
            return {"updated": updated}
        service_id = linked_service_id(user)
        mapping = accounts.get(service_id) if service_id is not None else None
        email = _email(user)
        if service_id is None or mapping is None or int(mapping.cs_user_id) != user_id or not email:
            logger.info("users webhook: user not linked to a WHMCS service",
                        extra={"cs_user_id": user_id, "serviceid": service_id, "updated": updated})
            return {"updated": updated}
        current = _service_username(whmcs, service_id)
        if current is None:
            logger.info("users webhook: the linked WHMCS service does not exist",
                        extra={"cs_user_id": user_id, "serviceid": service_id, "updated": updated})
            return {"updated": updated}
        wrote = False
        if current != email:
            whmcs.update_client_product(service_id, serviceusername=email)
            count(USERNAMES_UPDATED)
            updated = wrote = True
        if mapping.email != email:
            accounts.update_fields(service_id, email=email)
            wrote = True
        if not wrote:
            break
        # Written: read again, so a change that raced this delivery is applied too (it wins: it is newer).
        again = _read_user(req, user_id)
        if again is not None and _email(again) == email and linked_service_id(again) == service_id:
            break
        user = again
    logger.info("users webhook applied", extra={"cs_user_id": user_id, "updated": updated})
    return {"updated": updated}
