"""Create, suspend, unsuspend, terminate, change password, change package.

Each WHMCS service is one ComputeStacks user. Once the mapping is known every action costs one
ComputeStacks call; every action is safe to repeat.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from cswhmcs.accounts import caches
from cswhmcs.accounts.lookup import belongs_to_service, gone, link_fields, looks_like_email, remember, resolve
from cswhmcs.adapters.computestacks import UserSelector
from cswhmcs.adapters.dynamo import AccountMapping
from cswhmcs.deps import Request
from cswhmcs.errors import Conflict, EmailTaken, InvalidInput, UpstreamTimeout
from cswhmcs.models import CreateParams, PasswordParams, ServiceParams, parse
from cswhmcs.observability import logger

_LOCAL_PART_JUNK = re.compile(r"[^a-z0-9._+-]+")


def generated_email(params: CreateParams, cs_api_url: str) -> str:
    """The old module's login for services without an email username:
    `<username or client email local part><client id>-<service id>@<ComputeStacks host>`."""
    cd = params.clientsdetails
    base = params.username.strip() or cd.email.split("@", 1)[0]
    base = _LOCAL_PART_JUNK.sub("", base.lower()).strip(".") or "user"
    host = urlsplit(cs_api_url).hostname or "computestacks.local"
    client_id = params.client_id() or 0
    return f"{base}{client_id}-{params.serviceid}@{host}"


def login_email(params: CreateParams, cs_api_url: str) -> str:
    if params.username and looks_like_email(params.username):
        return params.username.strip().lower()
    return generated_email(params, cs_api_url)


def resolve_currency(req: Request, params: CreateParams) -> str | None:
    """The client's ISO currency code: from the params, else from its currency id via WHMCS (cached).

    The old module lost this (a typo sent null, so every user fell back to the default currency)."""
    cd = params.clientsdetails
    if cd.currency_code.strip():
        return cd.currency_code.strip().upper()
    if cd.currency is None:
        return None
    for cur in caches.currencies(req):
        if int(cur.id) == int(cd.currency):
            return str(cur.code).upper()
    for cur in caches.currencies(req, refresh=True):
        if int(cur.id) == int(cd.currency):
            return str(cur.code).upper()
    raise InvalidInput(f"The field 'clientsdetails.currency' names WHMCS currency #{cd.currency}, "
                       "which WHMCS does not list.", field="clientsdetails.currency")


def user_group_id(req: Request, params: ServiceParams, *, required: bool) -> int | None:
    """configoption1 as a ComputeStacks user group id that exists (checked against a cached list, because
    ComputeStacks silently falls back to its default group for an unknown id)."""
    raw = params.configoption1.strip()
    if not raw:
        if required:
            raise InvalidInput("The field 'configoption1' (User Group) is required to change the package.",
                               field="configoption1")
        return None
    if not raw.isdigit():
        raise InvalidInput("The field 'configoption1' (User Group) must be a ComputeStacks user group id.",
                           field="configoption1")
    if raw not in caches.user_groups(req) and raw not in caches.user_groups(req, refresh=True):
        raise InvalidInput(f"The field 'configoption1' names ComputeStacks user group #{raw}, which does not exist.",
                           field="configoption1")
    return int(raw)


def _user_fields(req: Request, params: CreateParams, email: str) -> dict[str, Any]:
    cd = params.clientsdetails
    fields: dict[str, Any] = {
        "fname": cd.firstname,
        "lname": cd.lastname,
        "email": email,
        "skip_email_confirm": True,
        "company_name": cd.companyname,
        "address1": cd.address1,
        "address2": cd.address2,
        "city": cd.city,
        "state": cd.fullstate or cd.state,
        "zip": cd.postcode,
        "country": cd.countrycode or cd.country,
        "phone": cd.phonenumberformatted or cd.telephoneNumber or cd.phonenumber,
        "vat": cd.tax_id,
        **link_fields(params),
    }
    if params.password:
        fields["password"] = params.password
        fields["password_confirmation"] = params.password
    currency = resolve_currency(req, params)
    if currency:
        fields["currency"] = currency
    group = user_group_id(req, params, required=False)
    if group is not None:
        fields["user_group_id"] = group
    return {k: v for k, v in fields.items() if v not in ("", None)}


def _adopt_existing(req: Request, params: CreateParams, email: str) -> dict[str, Any] | None:
    """After "email taken" or a timeout: the user with that email, if it is this service's own."""
    user = req.deps.cs.get_user(UserSelector.by_email(email))
    if not user:
        return None
    labels = (user.get("labels") or {}).get("whmcs") or {}
    ours = str(user.get("external_id") or "") == str(params.serviceid) or (
        isinstance(labels, dict) and str(labels.get("service_id", "")) == str(params.serviceid))
    if ours and belongs_to_service(user, params.serviceid):
        return dict(user)
    raise Conflict(f"The email {email} is already used by another ComputeStacks user (#{user.get('id')}).",
                   code="email_taken")


def create_account(req: Request) -> dict[str, Any]:
    params = parse(CreateParams, req.payload)
    existing: AccountMapping | None = req.deps.accounts.get(params.serviceid)
    if existing is not None:
        # A repeated create: never a second user.
        return {"username": existing.email, "cs_user_id": existing.cs_user_id}
    email = login_email(params, req.settings.CS_API_URL)
    fields = _user_fields(req, params, email)
    try:
        user = req.deps.cs.create_user(fields)
    except EmailTaken:
        # Another user has this email: ours after a crash (adopt it), or someone else's (409).
        adopted = _adopt_existing(req, params, email)
        if adopted is None:
            raise
        user = adopted
    except UpstreamTimeout as exc:
        if not exc.maybe_applied:
            raise
        # ComputeStacks may have created the user before the answer was lost: look before failing.
        adopted = _adopt_existing(req, params, email)
        if adopted is None:
            raise
        user = adopted
    mapping = remember(req, params, user)
    logger.info("account created", extra={"serviceid": params.serviceid, "cs_user_id": mapping.cs_user_id})
    return {"username": mapping.email, "cs_user_id": mapping.cs_user_id}


def _update(req: Request, params: ServiceParams, fields: dict[str, Any]) -> dict[str, Any]:
    mapping, discovered = resolve(req, params)
    if discovered:
        fields = {**link_fields(params), **fields}
    user = req.deps.cs.update_user(UserSelector.by_id(mapping.cs_user_id), fields)
    if user is None:
        raise gone(mapping)
    if not discovered and not _linked(user, params.serviceid):
        # The mapping was stored before the user was linked: the linking update failed or the function died
        # in between (the mapping is written first), or an overview/SSO found the account. Link it now.
        user = req.deps.cs.update_user(UserSelector.by_id(mapping.cs_user_id), link_fields(params)) or user
    return dict(user)


def _linked(user: dict[str, Any], service_id: int) -> bool:
    """The user carries this service's link: its external id and the (integer) ``whmcs.service_id`` label."""
    labels = user.get("labels") or {}
    whmcs = labels.get("whmcs") if isinstance(labels, dict) else None
    label = whmcs.get("service_id") if isinstance(whmcs, dict) else None
    return str(user.get("external_id") or "") == str(service_id) and label == service_id


def suspend_account(req: Request) -> dict[str, Any]:
    _update(req, parse(ServiceParams, req.payload), {"active": False})
    return {}


def unsuspend_account(req: Request) -> dict[str, Any]:
    _update(req, parse(ServiceParams, req.payload), {"active": True})
    return {}


def terminate_account(req: Request) -> dict[str, Any]:
    # Terminate suspends and never deletes: the customer's data stays recoverable.
    _update(req, parse(ServiceParams, req.payload), {"active": False})
    return {}


def change_password(req: Request) -> dict[str, Any]:
    params = parse(PasswordParams, req.payload)
    _update(req, params, {"password": params.password, "password_confirmation": params.password})
    return {}


def change_package(req: Request) -> dict[str, Any]:
    params = parse(ServiceParams, req.payload)
    group = user_group_id(req, params, required=True)
    _update(req, params, {"user_group_id": group})
    return {}
