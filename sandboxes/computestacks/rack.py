"""A request as Rack hands it to ComputeStacks, and the answers Rails renders.

``Request`` (path, Rack-parsed query, whether the body is JSON, ``host_with_port``); the responses:
``json_response``, ``errors`` (``{"errors": [...]}``), ``head`` (no body), ``plain``, ``rails_error_page``
(the public exceptions app); ``Halt``, a before_action that rendered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sandboxes.computestacks.rails import parse_query
from sandboxes.plumbing import CaseInsensitiveHeaders, Response

UNKNOWN_FORMAT = "Unknown format. Only JSON and XML are permitted."  # the 406 for a non-JSON request
JSON_TYPES = frozenset({"application/json", "text/x-json", "application/jsonrequest"})


@dataclass
class Request:
    """One request. ``server_authority`` (``host:port`` of the sandbox) stands in for a missing Host header."""

    method: str
    target: str
    headers: CaseInsensitiveHeaders
    body: bytes
    client_ip: str
    server_authority: str = ""
    path: str = ""
    query: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.query = parse_query(parts.query)

    @property
    def is_json_body(self) -> bool:
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        return ctype in JSON_TYPES

    @property
    def host_with_port(self) -> str:
        """Rack's ``host_with_port``: the Host header, else the server's own address."""
        return self.headers.get("host") or self.server_authority


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, "application/json; charset=utf-8", list(headers))


def errors(status: int, *messages: str) -> Response:
    return json_response(status, {"errors": list(messages)})


def head(status: int) -> Response:
    """Rails ``head :not_found``: no body."""
    return Response(status, b"", "application/json" if status != 204 else None)


def plain(status: int, text: str, content_type: str = "text/html; charset=utf-8") -> Response:
    return Response(status, text.encode("utf-8"), content_type)


def rails_error_page(status: int) -> Response:
    """What Rails' public exceptions app renders for JSON requests (unrescued errors)."""
    names = {400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
    return json_response(status, {"status": status, "error": names.get(status, "Error")})


class Halt(Exception):
    """Stop the action with this response (a before_action that rendered)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response
