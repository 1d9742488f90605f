"""`cswhmcs serve`: every API route of template.yaml, served locally by the real handlers in-process.

What `sam local start-api` does, without Docker: each request becomes a genuine API Gateway REST
(payload v1) proxy event, the function's own `lambda_handler` answers it, and one line per request
is logged. Missing DynamoDB tables are created from the template's own definitions.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cswhmcs.local.template import ApiRoute, Template, ensure_tables

DEFAULT_TABLE_NAMES = {
    "ACCOUNTS_TABLE": "cswhmcs-accounts",
    "LEDGER_TABLE": "cswhmcs-ledger",
    "REPLAY_TABLE": "cswhmcs-replay",
}
MAX_REQUEST = 10 * 1024 * 1024  # API Gateway's own payload limit


class LambdaContext:
    """The parts of a LambdaContext handlers may read (`cswhmcs serve`; the benchmarks' in-process calls,
    ``stream="bench"``)."""

    def __init__(self, function_name: str, timeout_s: float = 28, *, stream: str = "local") -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 256
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = stream
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def build_event(route: ApiRoute, method: str, path: str, query: str, headers: dict[str, str],
                body: bytes, source_ip: str, stage: str = "local") -> dict[str, Any]:
    """An API Gateway REST proxy event, the shape `sam local start-api` sends."""
    qs = parse_qs(query, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for k, v in headers.items():
        multi_headers.setdefault(k, []).append(v)
    try:
        text: str | None = body.decode("utf-8")
        b64 = False
    except UnicodeDecodeError:
        import base64

        text, b64 = base64.b64encode(body).decode(), True
    now = datetime.now(UTC)
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in qs.items()} or None,
        "multiValueQueryStringParameters": qs or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", "")},
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "domainName": headers.get("Host", "localhost"),
        },
        "body": text if body else None,
        "isBase64Encoded": b64,
    }


class LocalApi:
    def __init__(self, template: Template) -> None:
        self.template = template
        self.routes = {(r.method, r.path): r for r in template.api_routes()}
        self._handlers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def handler_for(self, route: ApiRoute) -> Any:
        with self._lock:
            if route.function not in self._handlers:
                self._handlers[route.function] = route.load_handler()
            return self._handlers[route.function]

    def match(self, method: str, path: str) -> tuple[ApiRoute | None, str]:
        path = path.rstrip("/") or "/"
        route = self.routes.get((method, path))
        if route is None and path.count("/") > 1:
            # Accept a stage prefix (/Prod/v1/...), as a Hostname with a base path produces.
            stripped = "/" + path.split("/", 2)[2]
            route = self.routes.get((method, stripped))
            if route is not None:
                return route, stripped
        return route, path

    def invoke(self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str
               ) -> tuple[int, dict[str, str], bytes, str]:
        parts = urlsplit(raw_path)
        route, path = self.match(method, parts.path)
        if route is None:
            # API Gateway's own answer for an unknown resource/method.
            return 403, {"Content-Type": "application/json"}, b'{"message":"Missing Authentication Token"}', "-"
        event = build_event(route, method, path, parts.query, headers, body, source_ip)
        result = self.handler_for(route)(event, LambdaContext(route.function))
        status = int(result.get("statusCode", 200))
        out_headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        out_body = result.get("body") or ""
        if result.get("isBase64Encoded"):
            import base64

            data = base64.b64decode(out_body)
        else:
            data = out_body.encode("utf-8") if isinstance(out_body, str) else json.dumps(out_body).encode()
        return status, out_headers, data, route.function


def _make_handler(api: LocalApi, log: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cswhmcs-serve"
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm holds the body until
        # the client's delayed ACK (~40 ms on Linux), so every keep-alive request took 40 ms or more.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST:
                self._reply(413, {"Content-Type": "application/json"}, b'{"message":"Request Too Long"}', "-", started)
                return
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            try:
                status, out_headers, data, fn = api.invoke(self.command, self.path, headers, body,
                                                           self.client_address[0])
            except Exception as exc:  # a handler that raised: API Gateway answers 502
                log(f"handler crashed: {type(exc).__name__}")
                status, out_headers, data, fn = 502, {"Content-Type": "application/json"}, \
                    b'{"message":"Internal server error"}', "-"
            self._reply(status, out_headers, data, fn, started)

        def _reply(self, status: int, headers: dict[str, str], data: bytes, fn: str, started: float) -> None:
            ms = (time.perf_counter() - started) * 1000
            # One line per request (written before the answer, so it is never lost to a quick shutdown);
            # never the body or the signature headers.
            log(f"{self.client_address[0]} {self.command} {urlsplit(self.path).path} -> {status} "
                f"({ms:.1f} ms) {fn}")
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = _serve  # noqa: N815
        do_GET = _serve  # noqa: N815
        do_PUT = _serve  # noqa: N815
        do_DELETE = _serve  # noqa: N815
        do_PATCH = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet default access log
            return

    return Handler


def prepare_environment(template: Template, *, create_tables: bool = True) -> list[str]:
    """Default local table names and fake AWS credentials; create missing tables. Returns created names."""
    for var, name in DEFAULT_TABLE_NAMES.items():
        os.environ.setdefault(var, name)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    if not create_tables:
        return []
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if not endpoint:
        raise SystemExit("cswhmcs serve: set AWS_ENDPOINT_URL_DYNAMODB to a local DynamoDB endpoint "
                         "(make dev starts DynamoDB Local), or pass --no-create-tables.")
    import boto3

    client = boto3.client("dynamodb", endpoint_url=endpoint)
    names = {t.env_var: os.environ[t.env_var] for t in template.tables() if t.env_var and t.env_var in os.environ}
    return ensure_tables(template, client, names)


class _HttpServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections (the WHMCS module's
    # concurrent calls, a load test with 32 clients) overflowed it and some were reset.
    request_queue_size = 128


class LocalServer:
    """The server as an object (tests start it on port 0 in a thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 3000, template: Template | None = None,
                 log: Any = None) -> None:
        self.template = template or Template()
        self.api = LocalApi(self.template)
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.httpd = _HttpServer((host, port), _make_handler(self.api, self._log))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}"

    def start(self) -> LocalServer:
        # A short poll interval so stop() returns at once (tests start and stop many servers).
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="cswhmcs-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()
