"""httpx client for the ComputeStacks admin API (reference/computestacks-api.md sections 1-2).

What it guarantees (docs/architecture.md "Error mapping"):

* Every request carries ``Accept: application/json; api_version=80`` (without a JSON Accept header
  ComputeStacks answers 406) and HTTP Basic auth with the admin API credential pair, taken from a
  ``CredentialSource`` at each request (``StaticCredentials`` for a fixed pair).
* Errors become ``cswhmcs.errors`` types with ``upstream="ComputeStacks"``. No message contains the
  API key, the secret, a password or a token: messages are fixed sentences plus ComputeStacks' own
  validation messages (scrubbed of those values anyway).
* Retries cannot double an effect (``cswhmcs.adapters.retry`` runs them, inside the request's
  deadline). GETs, PATCHes (absolute values) and SSO token requests are retried on 5xx, timeouts and
  dropped connections; every request is retried when the connection could not even be made (nothing
  was sent) and after a 429 (ComputeStacks refused it before doing anything) when its ``Retry-After``
  fits. ``POST /api/admin/users`` is never re-sent once it may have arrived: a read timeout raises
  ``UpstreamTimeout(maybe_applied=True)``. A 401 is never retried with the same pair: every wrong
  secret counts towards ComputeStacks' lockout of the credential's owner (5 attempts). The
  credential source may offer one different pair (a rotated secret), tried once.
* A 422 naming the email as taken ("Email has already been taken") raises ``EmailTaken`` (an
  ``UpstreamRejected``), so callers decide on the type, never on ComputeStacks' wording.
* A user lookup that misses (404 with an empty body) returns ``None``; a 404 that says
  "Unknown API Call" means a wrong ``CS_API_URL`` and raises ``UpstreamError``.
* Bodies are returned as parsed, without converting money: ComputeStacks sends decimals as numeric
  strings (``"0.02054795"``) and sometimes as numbers (``run_rate`` ``0``); JSON floats are parsed
  as ``Decimal``. Use ``cswhmcs.money.to_decimal`` on them.
* Lists are followed to their last page (``Link: rel="next"``); a row seen twice (rows shifting
  between pages while we read) is yielded once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from cswhmcs.adapters import bounded
from cswhmcs.adapters.pacing import Pacer
from cswhmcs.adapters.retry import Failure, Resend, Retrier, RetryingClient, RetryPolicy, Throttled, retry_after
from cswhmcs.errors import (
    ConfigurationError,
    EmailTaken,
    NotFound,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRejected,
)

if TYPE_CHECKING:
    from cswhmcs.config import Settings

UPSTREAM = "ComputeStacks"
DEFAULT_API_VERSION = 80
UNKNOWN_ROUTE_MESSAGE = "Unknown API Call. Please check the documentation."
USERS_PATH = "/api/admin/users"
_MAX_MESSAGES = 10
_MAX_MESSAGE_CHARS = 300
_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?([^";,]+)"?')
# Rails' full message for a duplicate email (Devise and the model's uniqueness check, section 2.1).
_EMAIL_TAKEN_RE = re.compile(r"^e-?mail has already been taken\.?$", re.IGNORECASE)


def _segment(value: str) -> str:
    """Percent-encode one path segment.

    '.' is encoded too: Rails would read ``a.b`` as id ``a`` with format ``b``.
    """
    return quote(value, safe="").replace(".", "%2E")


@dataclass(frozen=True)
class UserSelector:
    """How ComputeStacks should find a user: the ``:id`` path segment plus its ``find_by_*`` flag.

    ``segment`` is already percent-encoded. See reference section 2.0: the label lookup wins over
    the others, and a miss is a 404 with an empty body.
    """

    segment: str
    params: tuple[tuple[str, str], ...] = ()
    kind: str = "id"

    @classmethod
    def by_id(cls, user_id: int) -> UserSelector:
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
            raise ValueError("A ComputeStacks user id is a positive integer.")
        return cls(str(user_id), (), "id")

    @classmethod
    def by_email(cls, email: str) -> UserSelector:
        """Standard Base64 of the lower-cased email, percent-encoded (CS stores emails lower-cased)."""
        normalized = str(email).strip().lower()
        if not normalized:
            raise ValueError("An email is needed to find a ComputeStacks user by email.")
        token = base64.b64encode(normalized.encode("utf-8")).decode("ascii")
        return cls(_segment(token), (("find_by_email", "1"),), "email")

    @classmethod
    def by_external_id(cls, external_id: str | int) -> UserSelector:
        if isinstance(external_id, bool):
            raise ValueError("An external id is a string or an integer.")
        text = str(external_id)
        if not text.strip():
            raise ValueError("An external id is needed to find a ComputeStacks user by external id.")
        return cls(_segment(text), (("find_by_external_id", "1"),), "external_id")

    @classmethod
    def by_label_service_id(cls, service_id: int) -> UserSelector:
        """The user whose ``labels.whmcs.service_id`` is this integer."""
        return cls._by_label("whmcs_service_id", service_id)

    @classmethod
    def by_label_client_id(cls, client_id: int) -> UserSelector:
        """The first user whose ``labels.whmcs.client_id`` is this integer (a client may have several)."""
        return cls._by_label("whmcs_client_id", client_id)

    @classmethod
    def _by_label(cls, label: str, value: int) -> UserSelector:
        # ComputeStacks uses ``:id.to_i`` and ignores the flag when that is 0.
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError("A WHMCS id is a positive integer.")
        return cls(str(value), (("find_by_label", label),), f"label:{label}")

    def path(self, suffix: str = "") -> str:
        return f"{USERS_PATH}/{self.segment}{suffix}"


AUTH_FAILED_MESSAGE = "ComputeStacks rejected the API credentials."
Pair = tuple[str, str]


class CredentialSource(Protocol):
    """Where the ComputeStacks API key and secret come from, asked at every request."""

    def current(self) -> Pair:
        """The ``(api_key, api_secret)`` to use now."""
        ...

    def rejected(self, used: Pair) -> Pair | None:
        """ComputeStacks answered 401 to ``used``: re-read the secret at once (bypassing caches) and
        return a DIFFERENT pair to try exactly once more, or None (the client then raises
        ``UpstreamAuthFailed``). May raise ``UpstreamAuthFailed`` itself."""
        ...

    def usable(self, pair: Pair) -> bool:
        """False for a pair known to be rejected: it is not sent at all (each try counts towards
        ComputeStacks' lockout of the credential's owner)."""
        ...


class StaticCredentials:
    """A fixed pair: nothing else to try after a 401."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._pair = (api_key, api_secret)

    def current(self) -> Pair:
        return self._pair

    def rejected(self, used: Pair) -> Pair | None:
        return None

    def usable(self, pair: Pair) -> bool:
        return True

    def __repr__(self) -> str:  # never the pair
        return "StaticCredentials()"


@dataclass
class _Auth:
    """The pair one request is sent with; ``swapped`` once the source gave another after a 401."""

    pair: Pair
    swapped: bool = False


class ComputeStacksClient(RetryingClient):
    """The ComputeStacks admin API, as far as this integration needs it. Thread-safe.

    ``credentials``, when given, wins over ``api_key``/``api_secret`` (which may then be empty).
    """

    def __init__(self, base_url: str, api_key: str = "", api_secret: str = "", *, timeout: float = 10.0,
                 connect_timeout: float = 3.0, transport: httpx.BaseTransport | None = None,
                 pacer: Pacer | None = None, max_retries: int = 2,
                 sleep: Callable[[float], object] = time.sleep, api_version: int = DEFAULT_API_VERSION,
                 backoff: float = 0.25, max_rate_limit_wait: float = 30.0,
                 credentials: CredentialSource | None = None) -> None:
        base = (base_url or "").strip().rstrip("/")
        if not base:
            raise ConfigurationError("The backend is not configured: CS_API_URL is not set.")
        if credentials is None:
            if not api_key or not api_secret:
                raise ConfigurationError("The backend is not configured: CS_API_KEY or CS_API_SECRET is not set.")
            credentials = StaticCredentials(api_key, api_secret)
        self._credentials = credentials
        # Every secret value sent so far: scrubbed from ComputeStacks' messages.
        self._hidden_lock = threading.Lock()
        self._hidden: set[str] = {v for v in (api_key, api_secret) if v}
        self._retrier = Retrier(UPSTREAM, timeout=timeout, connect_timeout=connect_timeout, sleep=sleep, pacer=pacer,
                                policy=RetryPolicy(max_retries=max(0, int(max_retries)), backoff=backoff,
                                                   max_backoff=max(backoff, 2.0),
                                                   max_throttle_wait=max_rate_limit_wait))
        # each attempt bounded in total time, one TLS context per process (adapters.bounded)
        self._http = bounded.upstream_client(
            timeout, connect_timeout, transport, base_url=base,
            headers={"Accept": f"application/json; api_version={int(api_version)}",
                     "User-Agent": "cswhmcs (ComputeStacks-WHMCS integration)"})

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ComputeStacksClient:
        settings.require("CS_API_URL", "CS_API_KEY", "CS_API_SECRET")
        return cls(settings.CS_API_URL, settings.CS_API_KEY.get_secret_value(),
                   settings.CS_API_SECRET.get_secret_value(), timeout=settings.CS_TIMEOUT,
                   connect_timeout=settings.CONNECT_TIMEOUT, **kwargs)

    def __repr__(self) -> str:
        return f"ComputeStacksClient({str(self._http.base_url)!r})"

    # ------------------------------------------------------------------ users

    def create_user(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/admin/users`` with ``{"user": fields}``; the created user (unwrapped).

        Never re-sent once it may have reached ComputeStacks (a second one would be a duplicate, or a
        confusing "Email has already been taken").
        """
        hidden = _hidden_values(fields)
        response = self._call("POST", USERS_PATH, body={"user": dict(fields)}, resend=False)
        if response.status_code in (200, 201):
            return self._root(response, "user")
        self._raise_for(response, hidden)

    def get_user(self, sel: UserSelector, *, include_balance: bool = False) -> dict[str, Any] | None:
        """The user (show body), or ``None`` when ComputeStacks has no such user.

        ``include_balance`` adds ``unprocessed_usage`` (a numeric string).
        """
        params = dict(sel.params)
        if include_balance:
            params["include"] = "balance"
        response = self._call("GET", sel.path(), params=params, resend=True)
        if response.status_code == 200:
            return self._root(response, "user")
        if self._is_plain_not_found(response):
            return None
        self._raise_for(response)

    def update_user(self, sel: UserSelector, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """``PATCH`` the user with ``{"user": fields}``; the updated user, or ``None`` if there is none.

        Send absolute values only (``active``, ``password``, complete ``merge_labels`` keys): the PATCH
        is retried after a timeout.
        """
        hidden = _hidden_values(fields)
        response = self._call("PATCH", sel.path(), params=dict(sel.params), body={"user": dict(fields)},
                              resend=True)
        if response.status_code == 200:
            return self._root(response, "user")
        if self._is_plain_not_found(response):
            return None
        self._raise_for(response, hidden)

    def create_sso_token(self, sel: UserSelector) -> dict[str, Any] | None:
        """A fresh login token ``{username, token, expires}`` (valid 60 s), or ``None`` if there is no user.

        Each call invalidates the previous token, so a retry is harmless.
        """
        response = self._call("POST", sel.path("/user_sso"), params=dict(sel.params), resend=True)
        if response.status_code in (200, 201):
            body = self._json(response)
            if isinstance(body, dict) and isinstance(body.get("token"), str) and body.get("username"):
                return body
            self._unexpected(response)
        if self._is_plain_not_found(response):
            return None
        self._raise_for(response, extra_hidden=())

    def iter_users(self, *, per_page: int = 500, include_balance: bool = False) -> Iterator[dict[str, Any]]:
        """Every ComputeStacks user, admins included (check ``is_admin``), all pages, lazily."""
        params = {"include": "balance"} if include_balance else {}
        return self._paginate(USERS_PATH, "users", per_page=per_page, params=params)

    def list_users_page(self, page: int, *, per_page: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of users (admins included) and whether another page follows (one request)."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValueError("page must be a positive integer.")
        if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
            raise ValueError("per_page must be a positive integer.")
        rows, response = self._page(USERS_PATH, "users", page, per_page, {}, None)
        next_page = _next_page(response.headers.get("link"))
        if next_page is not None:
            return rows, next_page > page
        if "link" in response.headers or "total" in response.headers:
            return rows, False
        return rows, len(rows) >= per_page and bool(rows)

    def iter_user_groups(self, *, per_page: int = 500) -> Iterator[dict[str, Any]]:
        return self._paginate("/api/admin/user_groups", "user_groups", per_page=per_page)

    def list_locations(self) -> list[dict[str, Any]]:
        """``GET /api/admin/locations`` (not paginated); also the cheapest credential check."""
        response = self._call("GET", "/api/admin/locations", resend=True)
        if response.status_code != 200:
            self._raise_for(response)
        body = self._json(response)
        rows = body.get("locations") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            self._unexpected(response)
        return rows

    def iter_billing_usages(self, user_id: int, *, per_page: int = 500) -> Iterator[dict[str, Any]]:
        """The user's usage rows, newest first, processed or not, fetched page by page as consumed.

        The caller may stop early (e.g. once rows are older than what it needs). Raises ``NotFound``
        (while iterating) when ComputeStacks has no user with this id.
        """
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
            raise ValueError("A ComputeStacks user id is a positive integer.")
        return self._paginate(f"{USERS_PATH}/{user_id}/billing_usages", "billing_usages", per_page=per_page,
                              missing=lambda: NotFound(f"ComputeStacks has no user {user_id}."))

    # ------------------------------------------------------------------ plumbing

    def _paginate(self, path: str, key: str, *, per_page: int, params: Mapping[str, str] | None = None,
                  missing: Callable[[], Exception] | None = None) -> Iterator[dict[str, Any]]:
        if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
            raise ValueError("per_page must be a positive integer.")
        return self._pages(path, key, per_page, dict(params or {}), missing)

    def _pages(self, path: str, key: str, per_page: int, params: dict[str, str],
               missing: Callable[[], Exception] | None) -> Iterator[dict[str, Any]]:
        page = 1
        seen: set[Any] = set()
        while True:
            rows, response = self._page(path, key, page, per_page, params, missing)
            for row in rows:
                row_id = row.get("id")
                if row_id is not None:
                    if row_id in seen:
                        continue
                    seen.add(row_id)
                yield row
            next_page = _next_page(response.headers.get("link"))
            if next_page is not None:
                if next_page <= page:  # a confused server must not make us loop forever
                    return
                page = next_page
                continue
            if not rows or "link" in response.headers or "total" in response.headers:
                return  # api-pagination omits rel="next" on the last page (and all links on a single page)
            if len(rows) < per_page:
                return
            page += 1  # a server without pagination headers: stop at the first short page

    def _page(self, path: str, key: str, page: int, per_page: int, params: Mapping[str, str],
              missing: Callable[[], Exception] | None) -> tuple[list[dict[str, Any]], httpx.Response]:
        """One page of a paginated list: its rows and the response (for the pagination headers)."""
        query = {**params, "page": str(page), "per_page": str(per_page)}
        response = self._call("GET", path, params=query, resend=True)
        if response.status_code != 200:
            if missing is not None and self._is_plain_not_found(response, allow_errors=True):
                raise missing()
            self._raise_for(response)
        body = self._json(response)
        rows = body.get(key) if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            self._unexpected(response)
        return rows, response

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
              body: Any = None, resend: bool) -> httpx.Response:
        """Send with pacing, retries, 429 waits and the credential source, inside the current deadline;
        returns any response that is not a 5xx, a 429 or a 401.

        ``resend``: may the request be sent again once it may have reached ComputeStacks?
        """
        content: bytes | None = None
        headers: dict[str, str] | None = None
        if body is not None:
            content = json.dumps(body, default=_json_default, separators=(",", ":")).encode("utf-8")
            headers = {"Content-Type": "application/json"}
        pair = self._credentials.current()
        if not self._credentials.usable(pair):
            raise UpstreamAuthFailed(AUTH_FAILED_MESSAGE, upstream=UPSTREAM, http_status=401)
        auth = _Auth(pair)
        self._hide(pair)

        def send(timeout: httpx.Timeout) -> httpx.Response:
            if not self._credentials.usable(auth.pair):  # refused meanwhile (another request, a 429 wait ago)
                raise Failure(UpstreamAuthFailed(AUTH_FAILED_MESSAGE, upstream=UPSTREAM, http_status=401),
                              sent=False, retryable=False)
            key, secret = auth.pair
            return self._http.request(method, path, params=params, content=content, headers=headers,
                                      auth=httpx.BasicAuth(key, secret), timeout=timeout)

        def interpret(response: httpx.Response) -> httpx.Response:
            status = response.status_code
            if status == 429:
                # Rack::Attack refused it before the app saw it: safe to send again after waiting.
                raise Throttled(retry_after(response.headers))
            if status == 401:
                self._after_401(auth)
            if status >= 500:
                raise Failure(UpstreamError(f"ComputeStacks answered with HTTP {status}.", upstream=UPSTREAM,
                                            http_status=status))
            return response

        return self._retrier.run(send, interpret, resend=resend, mutating=method != "GET")

    def _after_401(self, auth: _Auth) -> NoReturn:
        """Never the same pair again; one different pair from the source, once (nothing was applied)."""
        used = auth.pair
        offered = self._credentials.rejected(used)
        if not auth.swapped and offered is not None and tuple(offered) != tuple(used) \
                and self._credentials.usable(offered):
            auth.pair, auth.swapped = (str(offered[0]), str(offered[1])), True
            self._hide(auth.pair)
            raise Resend()
        raise Failure(UpstreamAuthFailed(AUTH_FAILED_MESSAGE, upstream=UPSTREAM, http_status=401), retryable=False)

    def _hide(self, pair: Pair) -> None:
        with self._hidden_lock:
            self._hidden.update(v for v in pair if v)

    def _json(self, response: httpx.Response) -> Any:
        if not response.content.strip():
            return None
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise UpstreamError("ComputeStacks answered with something that is not JSON.", upstream=UPSTREAM,
                                http_status=response.status_code) from None

    def _root(self, response: httpx.Response, key: str) -> dict[str, Any]:
        body = self._json(response)
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, dict):
            self._unexpected(response)
        return value

    def _unexpected(self, response: httpx.Response) -> NoReturn:
        raise UpstreamError(f"ComputeStacks answered HTTP {response.status_code} with an unexpected body.",
                            upstream=UPSTREAM, http_status=response.status_code)

    def _errors(self, response: httpx.Response) -> list[str] | None:
        """The ``{"errors": [...]}`` messages, or None when the body is not that shape."""
        try:
            body = json.loads(response.content) if response.content.strip() else None
        except ValueError:
            return None
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, str):
            errors = [errors]
        if not isinstance(errors, list):
            return None
        return [str(e) for e in errors if e is not None]

    def _is_plain_not_found(self, response: httpx.Response, *, allow_errors: bool = False) -> bool:
        """A 404 meaning "no such record": empty body (``head :not_found``), or, when ``allow_errors``, an
        ``{"errors": [...]}`` body other than the unknown-route one."""
        if response.status_code != 404:
            return False
        if not response.content.strip():
            return True
        errors = self._errors(response)
        return allow_errors and errors is not None and UNKNOWN_ROUTE_MESSAGE not in errors

    def _raise_for(self, response: httpx.Response, extra_hidden: tuple[str, ...] = ()) -> NoReturn:
        status = response.status_code
        if status == 401:
            raise UpstreamAuthFailed(AUTH_FAILED_MESSAGE, upstream=UPSTREAM, http_status=401)
        errors = self._errors(response)
        if status == 422:
            messages = self._clean(errors or [], extra_hidden)
            if not messages:
                raise UpstreamRejected("ComputeStacks rejected the request.", upstream=UPSTREAM)
            text = "; ".join(messages)
            if not text.endswith("."):
                text += "."
            rejected = EmailTaken if any(_EMAIL_TAKEN_RE.match(m) for m in messages) else UpstreamRejected
            raise rejected(f"ComputeStacks rejected the request: {text}", upstream=UPSTREAM, messages=messages)
        if status == 404 and errors is not None and UNKNOWN_ROUTE_MESSAGE in errors:
            raise UpstreamError("ComputeStacks does not know this API call (HTTP 404); check CS_API_URL.",
                                upstream=UPSTREAM, http_status=404)
        if 200 <= status < 300:
            self._unexpected(response)
        raise UpstreamError(f"ComputeStacks answered with HTTP {status}.", upstream=UPSTREAM,
                            http_status=status)

    def _clean(self, messages: list[str], extra_hidden: tuple[str, ...]) -> list[str]:
        """De-duplicated (Devise and the model both say "Email has already been taken"), trimmed, scrubbed."""
        # Only values of 8+ characters (Devise's minimum password length): shorter ones would mangle
        # ComputeStacks' own words ("Password is too short" for the password "short").
        with self._hidden_lock:
            secrets = tuple(self._hidden)
        hidden = [h for h in (*secrets, *extra_hidden) if h and len(h) >= 8]
        out: list[str] = []
        for raw in messages:
            text = " ".join(raw.split())
            for value in hidden:
                text = text.replace(value, "[redacted]")
            text = text[:_MAX_MESSAGE_CHARS]
            if text and text not in out:
                out.append(text)
            if len(out) >= _MAX_MESSAGES:
                break
        return out


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _hidden_values(fields: Mapping[str, Any]) -> tuple[str, ...]:
    if not isinstance(fields, Mapping):
        raise TypeError("fields must be a mapping of ComputeStacks user attributes.")
    return tuple(str(fields[k]) for k in ("password", "password_confirmation") if fields.get(k))


def _next_page(link: str | None) -> int | None:
    """The ``page`` of the ``rel="next"`` link. We never follow the URL itself: ComputeStacks builds it from
    its own idea of scheme and host (``http://`` behind a TLS proxy), and Basic auth must not go there."""
    if not link:
        return None
    for url, rel in _LINK_RE.findall(link):
        if rel.strip().lower() != "next":
            continue
        values = parse_qs(urlsplit(url).query).get("page")
        if values:
            try:
                return int(values[-1])
            except ValueError:
                return None
    return None
