"""The API Gateway wrapper every route's Lambda uses.

Order of checks (API.md sections 1-2): size -> signature -> replay -> JSON object -> the action.
A bad signature is refused before the body is even parsed, and nothing is written for a refused
request. Every ``DomainError`` becomes the error shape of API.md section 2 here, and only here.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cswhmcs import deadline, signing
from cswhmcs.config import Settings, get_settings
from cswhmcs.errors import BadRequest, DomainError
from cswhmcs.jsonbody import loggable_id, parse_object
from cswhmcs.observability import logger, register_secret_values

MAX_BODY = 64 * 1024


@dataclass
class Deps:
    """What actions use, created lazily once per execution environment (warm invocations reuse them)."""

    settings: Settings
    # Per thread: boto3 resources are not thread-safe. Lambda runs one thread; `cswhmcs serve` several.
    _local: threading.local = field(default_factory=threading.local)

    def _get(self, name: str, factory: Callable[[], Any]) -> Any:
        cache = self._local.__dict__.setdefault("cache", {})
        if name not in cache:
            cache[name] = factory()
        return cache[name]

    @property
    def ddb(self) -> Any:
        from cswhmcs.adapters.dynamo import dynamodb_resource

        return self._get("ddb", lambda: dynamodb_resource(self.settings, for_api=True))

    @property
    def accounts(self) -> Any:
        from cswhmcs.adapters.dynamo import AccountsRepo

        return self._get("accounts", lambda: AccountsRepo.from_settings(self.settings, self.ddb))

    @property
    def replay_guard(self) -> Any:
        from cswhmcs.adapters.dynamo import ReplayGuard

        return self._get("replay", lambda: ReplayGuard.from_settings(self.settings, self.ddb))

    @property
    def order_credits(self) -> Any:
        from cswhmcs.adapters.dynamo import OrderCreditRecords

        return self._get("order_credits", lambda: OrderCreditRecords.from_settings(self.settings, self.ddb))

    @property
    def cs(self) -> Any:
        from cswhmcs import factory

        self.settings.require("CS_API_URL", "CS_API_KEY", "CS_API_SECRET")
        return self._get("cs", lambda: factory.computestacks_client(self.settings))

    @property
    def whmcs(self) -> Any:
        from cswhmcs import factory

        self.settings.require("WHMCS_API_URL", "WHMCS_API_IDENTIFIER", "WHMCS_API_SECRET")
        return self._get("whmcs", lambda: factory.whmcs_client(self.settings))

    @property
    def receiver(self) -> Any:
        """The billing receiver's client (API.md section 8), or None when WHMCS_RECEIVER_URL is not set."""
        from cswhmcs import factory

        return self._get("receiver", lambda: factory.receiver_client(self.settings))


@dataclass
class Request:
    route: str
    payload: dict[str, Any]
    settings: Settings
    deps: Deps


Action = Callable[[Request], dict[str, Any]]

_deps: Deps | None = None


def get_deps() -> Deps:
    global _deps
    settings = get_settings()
    if _deps is None or _deps.settings is not settings:
        # New settings (a rotated secret, re-read every 5 minutes or at once after ComputeStacks refused
        # the pair): new clients.
        _deps = Deps(settings)
        register_secret_values(*settings.secret_values())
    return _deps


def reset_deps() -> None:
    """Forget cached settings, clients and rejected credentials (tests, `cswhmcs serve` after an
    environment change)."""
    global _deps
    from cswhmcs import factory

    _deps = None
    get_settings.cache_clear()
    factory.reset()


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
                                      "ms": round((time.perf_counter() - started) * 1000, 1), **refusal})


def make_handler(route: str, action: Action) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The exported ``lambda_handler`` of one route's function."""

    def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return handle(route, action, event, context)

    lambda_handler.__name__ = "lambda_handler"
    lambda_handler.route = route  # type: ignore[attr-defined]
    return lambda_handler
