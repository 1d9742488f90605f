"""The API Gateway wrapper every route's Lambda uses.

Order of checks (API.md sections 1-2): size -> signature -> replay -> JSON object -> the action.
A bad signature is refused before the body is even parsed, and nothing is written for a refused
request. Every ``DomainError`` becomes the error shape of API.md section 2 here, and only here.

``make_token_handler`` is the variant for the one unsigned route, ``/v1/hooks/cs-user`` (API.md section 3:
ComputeStacks cannot sign its webhooks): size -> the ``token`` query parameter against ``CS_WEBHOOK_TOKEN``
(constant time; 401 when missing, wrong or not configured) -> JSON object -> the action. Same error shape,
same one log line per request; the query string (the token) is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cswhmcs import deadline, signing
from cswhmcs.deps import Action, Deps, Request, get_deps, reset_deps
from cswhmcs.errors import BadRequest, DomainError, Unauthorized
from cswhmcs.jsonbody import loggable_id, parse_object
from cswhmcs.observability import logger, request_id

# ``Deps``, ``Request``, ``Action``, ``get_deps`` and ``reset_deps`` live in ``cswhmcs.deps``; they are
# re-exported here for the callers that import them from this module. ``handle`` looks ``get_deps`` up
# in this module, so a test may replace ``cswhmcs.api.get_deps``.
__all__ = ["MAX_BODY", "TOKEN_PARAMETER", "Action", "Deps", "Request", "check_token", "error_response", "get_deps",
           "handle", "handle_token", "make_handler", "make_token_handler", "query_token", "raw_body", "reset_deps",
           "response"]

MAX_BODY = 64 * 1024
TOKEN_PARAMETER = "token"  # noqa: S105 - the name of /v1/hooks/cs-user's query parameter (API.md section 3)


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body, default=_json_default, ensure_ascii=False),
    }


def error_response(exc: DomainError) -> dict[str, Any]:
    return response(exc.status, {"result": "error", "message": exc.message, "code": exc.code})


def raw_body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body)
        except ValueError:
            raise BadRequest("The request body is not valid base64.") from None
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _signed(deps: Deps, route: str, event: dict[str, Any], body: bytes) -> None:
    """API.md section 1: the signature (constant time, every active secret), then the replay guard."""
    settings = deps.settings
    sig = signing.verify(event.get("headers"), route, body, settings.signing_secrets(),
                         tolerance=settings.SIGNATURE_TOLERANCE)
    deps.replay_guard.accept(sig, route)


def query_token(event: dict[str, Any]) -> str | None:
    """The ``token`` query parameter as API Gateway passes it (the last one when repeated), or None."""
    params = event.get("queryStringParameters")
    value = params.get(TOKEN_PARAMETER) if isinstance(params, dict) else None
    return value if isinstance(value, str) else None


def _digest(value: str) -> bytes:
    # Both sides are hashed first, so the comparison takes the same time whatever the lengths are.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def check_token(given: str | None, configured: str) -> None:
    """``Unauthorized`` unless ``given`` equals ``configured`` (compared in constant time). An empty
    ``configured`` (``CS_WEBHOOK_TOKEN`` unset) refuses everything. The messages never echo a token."""
    if not configured:
        # Still compare, so an unconfigured backend answers in the same time as a configured one.
        hmac.compare_digest(_digest(given or ""), _digest("\0"))
        raise Unauthorized("The ComputeStacks users webhook is not enabled on this backend (CS_WEBHOOK_TOKEN is "
                           "not set).", code="webhook_token_not_configured")
    if not given:
        hmac.compare_digest(_digest(""), _digest(configured))
        raise Unauthorized("The request has no token (the webhook URL must end with ?token=<CS_WEBHOOK_TOKEN>).",
                           code="webhook_token_missing")
    if not hmac.compare_digest(_digest(given), _digest(configured)):
        raise Unauthorized("The webhook token does not match.", code="webhook_token_invalid")


def _token(deps: Deps, route: str, event: dict[str, Any], body: bytes) -> None:
    check_token(query_token(event), deps.settings.CS_WEBHOOK_TOKEN.get_secret_value())


Authenticate = Callable[[Deps, str, dict[str, Any], bytes], None]
LogIds = Callable[[dict[str, Any]], dict[str, Any]]


def _service_id(payload: dict[str, Any]) -> dict[str, Any]:
    return {"serviceid": loggable_id(payload.get("serviceid"))}


def handle(route: str, action: Action, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """A signed route (API.md section 1)."""
    return _serve(route, action, event, context, authenticate=_signed, parse=parse_object, log_ids=_service_id)


def _cs_user_id(payload: dict[str, Any]) -> dict[str, Any]:
    user = payload.get("user")
    return {"cs_user_id": loggable_id(user.get("id")) if isinstance(user, dict) else None}


def _object_or_nothing(body: bytes) -> dict[str, Any]:
    # ComputeStacks 9.3.1 posts webhook_users without a body: {} reaches the action, which says what is missing.
    return parse_object(body) if body.strip() else {}


def handle_token(route: str, action: Action, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The token-authenticated route ``/v1/hooks/cs-user`` (API.md section 3). An empty body is ``{}``."""
    return _serve(route, action, event, context, authenticate=_token, parse=_object_or_nothing, log_ids=_cs_user_id)


def _serve(route: str, action: Action, event: dict[str, Any], context: Any, *, authenticate: Authenticate,
           parse: Callable[[bytes], dict[str, Any]], log_ids: LogIds) -> dict[str, Any]:
    started = time.perf_counter()
    # The request's time budget starts at arrival (API.md section 2); every upstream attempt, retry and
    # wait of the action is drawn from it, so the answer is always ours, never API Gateway's.
    limit = deadline.for_api(context, budget=deadline.API_BUDGET_SECONDS - deadline.ANSWER_RESERVE_SECONDS)
    status = 500
    ids = log_ids({})  # the ids the request line names (None until the body is parsed)
    refusal: dict[str, str] = {}
    try:
        deps = get_deps()
        settings = deps.settings
        body = raw_body(event)
        if len(body) > MAX_BODY:
            raise BadRequest(f"The request body is larger than {MAX_BODY // 1024} KiB.")
        authenticate(deps, route, event, body)  # 401 before the body is parsed; nothing written when refused
        payload = parse(body)  # 400 unless one JSON object, bounded in depth (cswhmcs.jsonbody)
        ids = log_ids(payload)
        with deadline.use(limit):
            result = action(Request(route=route, payload=payload, settings=settings, deps=deps))
        status = 200
        return response(200, {"result": "success", **result})
    except DomainError as exc:
        status = exc.status
        refusal = {"code": exc.code, "error": exc.message}  # messages never carry secrets
        return error_response(exc)
    except Exception as exc:  # the last resort: a clear sentence out, the details only in our logs
        from cswhmcs.adapters.dynamo import storage_failure

        message = storage_failure(exc)
        if message is not None:
            # DynamoDB slow or unreachable: the backend's own failure, so 500 internal_error
            # (API.md's 504 means ComputeStacks or WHMCS did not answer), with what failed; no traceback.
            refusal = {"code": "internal_error", "error": message}
            logger.warning("DynamoDB failed to answer", extra={"route": route, "error_type": type(exc).__name__})
            return response(500, {"result": "error", "message": message, "code": "internal_error"})
        logger.exception("unhandled error", extra={"route": route, "error_type": type(exc).__name__})
        return response(500, {"result": "error", "message": "The backend failed unexpectedly; the error is logged.",
                              "code": "internal_error"})
    finally:
        # One line per request: the route without its query string (the webhook's token), never a body.
        logger.info("request", extra={"route": route, "status": status, **ids,
                                      "request_id": request_id(event),
                                      "ms": round((time.perf_counter() - started) * 1000, 1), **refusal})


def _lambda_handler(route: str, action: Action,
                    serve: Callable[[str, Action, dict[str, Any], Any], dict[str, Any]],
                    ) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A function's ``lambda_handler``: ``serve`` (``handle`` or ``handle_token``) for ``route``'s ``action``."""

    def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return serve(route, action, event, context)

    lambda_handler.__name__ = "lambda_handler"
    lambda_handler.route = route  # type: ignore[attr-defined]
    return lambda_handler


def make_handler(route: str, action: Action) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The exported ``lambda_handler`` of one route's function."""
    return _lambda_handler(route, action, handle)


def make_token_handler(route: str, action: Action) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The exported ``lambda_handler`` of the token-authenticated route (``/v1/hooks/cs-user``)."""
    return _lambda_handler(route, action, handle_token)
