"""The API Gateway wrapper every route's Lambda uses.

Order of checks (API.md sections 1-2): size -> signature -> replay -> JSON object -> the action.
A bad signature is refused before the body is even parsed, and nothing is written for a refused
request. Every ``DomainError`` becomes the error shape of API.md section 2 here, and only here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cswhmcs import deadline, signing
from cswhmcs.deps import Action, Deps, Request, get_deps, reset_deps
from cswhmcs.errors import BadRequest, DomainError
from cswhmcs.jsonbody import loggable_id, parse_object
from cswhmcs.observability import logger, request_id

# ``Deps``, ``Request``, ``Action``, ``get_deps`` and ``reset_deps`` live in ``cswhmcs.deps``; they are
# re-exported here for the callers that import them from this module. ``handle`` looks ``get_deps`` up
# in this module, so a test may replace ``cswhmcs.api.get_deps``.
__all__ = ["MAX_BODY", "Action", "Deps", "Request", "error_response", "get_deps", "handle", "make_handler",
           "raw_body", "reset_deps", "response"]

MAX_BODY = 64 * 1024


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


def handle(route: str, action: Action, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    started = time.perf_counter()
    # The request's time budget starts at arrival (API.md section 2); every upstream attempt, retry and
    # wait of the action is drawn from it, so the answer is always ours, never API Gateway's.
    limit = deadline.for_api(context, budget=deadline.API_BUDGET_SECONDS - deadline.ANSWER_RESERVE_SECONDS)
    status = 500
    service_id: Any = None
    refusal: dict[str, str] = {}
    try:
        deps = get_deps()
        settings = deps.settings
        body = raw_body(event)
        if len(body) > MAX_BODY:
            raise BadRequest(f"The request body is larger than {MAX_BODY // 1024} KiB.")
        sig = signing.verify(event.get("headers"), route, body, settings.signing_secrets(),
                             tolerance=settings.SIGNATURE_TOLERANCE)
        deps.replay_guard.accept(sig, route)
        payload = parse_object(body)  # 400 unless one JSON object, bounded in depth (cswhmcs.jsonbody)
        service_id = loggable_id(payload.get("serviceid"))
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
        # One line per request.
        logger.info("request", extra={"route": route, "status": status, "serviceid": service_id,
                                      "request_id": request_id(event),
                                      "ms": round((time.perf_counter() - started) * 1000, 1), **refusal})


def make_handler(route: str, action: Action) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The exported ``lambda_handler`` of one route's function."""

    def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return handle(route, action, event, context)

    lambda_handler.__name__ = "lambda_handler"
    lambda_handler.route = route  # type: ignore[attr-defined]
    return lambda_handler
