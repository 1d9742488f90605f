"""Typed domain errors. Each one knows its HTTP status and API code (API.md section 2).

Adapters and logic raise these; the one place that turns them into responses is
``cswhmcs.api.error_response``. Messages are one human sentence, shown to a WHMCS admin:
never a secret, never a stack trace.
"""

from __future__ import annotations


class DomainError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: object) -> None:
        """``class X(DomainError, status=..., code=...)``: the subclass's HTTP status and API code."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code


class BadRequest(DomainError, status=400, code="bad_request"):
    """The body is not a JSON object, or too large."""


class Unauthorized(DomainError, status=401, code="unauthorized"):
    """Signature missing, wrong, stale or replayed."""


class NotFound(DomainError, status=404, code="account_not_found"):
    """The service has no ComputeStacks account."""


class Conflict(DomainError, status=409, code="conflict"):
    """A conflicting state, e.g. the email belongs to another ComputeStacks user."""


class InvalidInput(DomainError, status=422, code="invalid_field"):
    """A required field is missing or invalid; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class UpstreamRejected(DomainError, status=422, code="upstream_rejected"):
    """ComputeStacks or WHMCS refused the data (validation); its messages are passed on."""

    def __init__(self, message: str, *, upstream: str, messages: list[str] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.upstream = upstream
        self.messages = messages or [message]


class EmailTaken(UpstreamRejected):
    """ComputeStacks refused the user because its email belongs to another user ("Email has already been
    taken", reference computestacks-api.md section 2.1). Raised by the ComputeStacks client
    (``ports.ComputeStacks.create_user``/``update_user``); still a 422 ``upstream_rejected`` when nobody
    handles it (account creation adopts the user when it is this service's own, else answers 409)."""


class UpstreamError(DomainError, status=502, code="upstream_error"):
    """ComputeStacks or WHMCS answered with an error, a 5xx, or something that is not JSON."""

    def __init__(self, message: str, *, upstream: str, http_status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.upstream = upstream
        self.http_status = http_status


class UpstreamApiError(UpstreamError):
    """The upstream's API itself answered with an error of its own (WHMCS ``result: error``): a definite
    answer, so nothing was applied and sending the same request again would get the same answer.
    ``action``: what we called; ``upstream_message``: the upstream's own text (scrubbed of secrets), for
    decisions such as "WHMCS has no such invoice". ``adapters.whmcs.WhmcsApiError`` is the WHMCS client's one.
    """

    def __init__(self, message: str, *, upstream: str, action: str, upstream_message: str,
                 http_status: int | None = None, code: str | None = None) -> None:
        super().__init__(message, upstream=upstream, http_status=http_status, code=code)
        self.action = action
        self.upstream_message = upstream_message


class UpstreamAuthFailed(UpstreamError, code="upstream_auth_failed"):
    """The upstream refused our API credentials (a configuration problem, not the caller's)."""


class UpstreamTimeout(DomainError, status=504, code="upstream_timeout"):
    """ComputeStacks or WHMCS did not answer in time.

    ``maybe_applied`` is True when the request was fully sent before the wait ran out: the
    upstream may have carried it out (a "timeout after commit"). Callers that must not repeat an
    effect (AddBillableItem, AddCredit) treat that case as ambiguous, never as a failure.
    """

    def __init__(self, message: str, *, upstream: str, maybe_applied: bool, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.upstream = upstream
        self.maybe_applied = maybe_applied


class UpstreamUnreachable(UpstreamTimeout, code="upstream_unreachable"):
    """The connection could not be made at all: nothing was sent, so nothing was applied."""

    def __init__(self, message: str, *, upstream: str, code: str | None = None) -> None:
        super().__init__(message, upstream=upstream, maybe_applied=False, code=code)


class RateLimited(UpstreamTimeout, code="upstream_rate_limited"):
    """The upstream throttled us (a 429) for longer than we may wait: nothing was applied, and for our
    caller it did not answer in time (504). ``retry_after``: the seconds it asked us to wait."""

    def __init__(self, message: str, *, upstream: str, retry_after: float, http_status: int = 429) -> None:
        super().__init__(message, upstream=upstream, maybe_applied=False)
        self.retry_after = retry_after
        self.http_status = http_status


class ConfigurationError(DomainError, status=500, code="configuration_error"):
    """The backend itself is misconfigured (missing setting)."""
