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

from typing import TYPE_CHECKING, Any

from cswhmcs import deadline
from cswhmcs.adapters.computestacks import UPSTREAM, UserSelector
from cswhmcs.adapters.retry import OutOfTime
from cswhmcs.deps import Request
from cswhmcs.errors import BadRequest, InvalidInput
from cswhmcs.observability import count, logger

if TYPE_CHECKING:
    from cswhmcs.billing.messages import WorkMessage
    from cswhmcs.ports import AccountsRepo, Whmcs

ROUTE = "/v1/hooks/cs-user"
# CloudWatch EMF counts (namespace ComputeStacksWHMCS, dimension service).
WITHOUT_USER_ID = "UserWebhooksWithoutUserId"  # deliveries with no user id (ComputeStacks 9.3.1's empty body)
USERNAMES_UPDATED = "ServiceUsernamesUpdated"  # WHMCS service usernames set to the ComputeStacks email
RECONCILES_FAILED = "UsernameReconcilesFailed"  # the daily collection could not bring a username in line
MAX_USER_ID = 2**63 - 1  # ComputeStacks' ids are bigint
ROUNDS = 3  # read -> write -> read again; a change racing the delivery costs one more round, at most two
NO_USER_ID = ("The webhook carries no user id (expected ComputeStacks' {\"user\": {\"id\": ...}} body; "
              "ComputeStacks 9.3.1 posts webhook_users with an empty body), so nothing was changed.")


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


def _service_username(whmcs: Whmcs, service_id: int) -> str | None:
    """The WHMCS service's username, or None when WHMCS has no such service."""
    for row in whmcs.get_clients_products(serviceid=service_id):
        if str(row.get("id")) == str(service_id):
            return str(row.get("username") or "")
    return None


def apply_email(whmcs: Whmcs, accounts: AccountsRepo, service_id: int, email: str,
                stored_email: str) -> tuple[bool, bool] | None:
    """Makes the WHMCS service's username and the mapping's stored email ``email`` (ComputeStacks' own).
    Returns (username changed, anything written), or None when WHMCS has no such service. WHMCS is read
    first, so a repeat writes nothing."""
    current = _service_username(whmcs, service_id)
    if current is None:
        return None
    changed = wrote = False
    if current != email:
        whmcs.update_client_product(service_id, serviceusername=email)
        count(USERNAMES_UPDATED)
        changed = wrote = True
    if stored_email != email:
        accounts.update_fields(service_id, email=email)
        wrote = True
    return changed, wrote


def reconcile_from_billing(message: WorkMessage, user: dict[str, Any] | None, whmcs: Whmcs,
                           accounts: AccountsRepo) -> bool:
    """The daily collection's reconcile (for deliveries that carried no user id, or were lost): ``user``
    is ComputeStacks' user as the account's usage rows (``user`` of each row: id, email, external_id,
    labels) or the worker's currency re-read showed it, at no extra ComputeStacks request. When its email
    is not the one the planner's mapping holds, and the user is this service's own, the username and the
    mapping follow as the webhook would do it. Never raises: a failure is logged, counted
    (``UsernameReconcilesFailed``) and tried again by the next collection (the mapping still differs)."""
    account = message.account
    if not user or message.run.kind != "collect":
        return False
    email = _email(user)
    if not email or email == account.email or user.get("is_admin"):
        return False
    if str(user.get("id")) != str(account.cs_user_id) or linked_service_id(user) != account.service_id:
        return False  # not shown as this service's own user: leave it to the webhook (which reads it back)
    extra = {"serviceid": account.service_id, "cs_user_id": account.cs_user_id}
    try:
        mapping = accounts.get(account.service_id)
        if mapping is None or int(mapping.cs_user_id) != account.cs_user_id:
            return False
        step = apply_email(whmcs, accounts, account.service_id, email, mapping.email)
    except Exception as exc:  # never the billing's problem: the next collection tries again
        count(RECONCILES_FAILED)
        logger.warning("reconciling the service username failed; the next collection tries again",
                       extra={**extra, "error_type": type(exc).__name__})
        return False
    changed = bool(step and step[0])
    logger.info("service username reconciled from ComputeStacks", extra={**extra, "updated": changed})
    return changed


def cs_user_changed(req: Request) -> dict[str, Any]:
    user_id = user_id_of(req.payload)
    whmcs, accounts = req.deps.whmcs, req.deps.accounts
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
        step = apply_email(whmcs, accounts, service_id, email, mapping.email)
        if step is None:
            logger.info("users webhook: the linked WHMCS service does not exist",
                        extra={"cs_user_id": user_id, "serviceid": service_id, "updated": updated})
            return {"updated": updated}
        changed_username, wrote = step
        updated = updated or changed_username
        if not wrote:
            break
        # Written: read again, so a change that raced this delivery is applied too (it wins: it is newer).
        again = _read_user(req, user_id)
        if again is not None and _email(again) == email and linked_service_id(again) == service_id:
            break
        user = again
    logger.info("users webhook applied", extra={"cs_user_id": user_id, "updated": updated})
    return {"updated": updated}
