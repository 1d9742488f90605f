"""Single sign-on: a fresh ComputeStacks token -> the login URL (client area and admin button alike)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from cswhmcs.accounts.lookup import gone, resolve
from cswhmcs.adapters.computestacks import UserSelector
from cswhmcs.deps import Request
from cswhmcs.errors import UpstreamError
from cswhmcs.models import ServiceParams, parse


def login_url(cs_api_url: str, username: str, token: str) -> str:
    parts = urlsplit(cs_api_url)
    # Percent-encode both values: an email with '+' or '&' must survive the query string
    # (the old module sent it raw).
    return f"{parts.scheme}://{parts.netloc}/?username={quote(username, safe='')}&token={quote(token, safe='')}"


def single_sign_on(req: Request) -> dict[str, Any]:
    params = parse(ServiceParams, req.payload)
    mapping, _ = resolve(req, params)
    answer = req.deps.cs.create_sso_token(UserSelector.by_id(mapping.cs_user_id))
    if answer is None:
        raise gone(mapping)
    token = str(answer.get("token") or "")
    if not token:
        raise UpstreamError("ComputeStacks answered the SSO request without a token.", upstream="ComputeStacks")
    username = str(answer.get("username") or mapping.email)
    return {"redirect_url": login_url(req.settings.CS_API_URL, username, token)}
