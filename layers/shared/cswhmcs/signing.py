"""Request signing (API.md section 1), shared by the API, the CLI and the tests.

signature = "v1=" + hex(HMAC-SHA256(secret, "<timestamp>.<route>.<raw body>"))
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from cswhmcs.errors import Unauthorized

TIMESTAMP_HEADER = "X-CSW-Timestamp"
SIGNATURE_HEADER = "X-CSW-Signature"
VERSION_PREFIX = "v1="


def compute_signature(secret: bytes, timestamp: int | str, route: str, body: bytes) -> str:
    base = f"{timestamp}.{route}.".encode() + body
    return VERSION_PREFIX + hmac.new(secret, base, hashlib.sha256).hexdigest()


def sign_headers(secret: str | bytes, route: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Headers for a signed request: what the PHP module sends."""
    key = secret.encode() if isinstance(secret, str) else secret
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: compute_signature(key, ts, route, body)}


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup (API Gateway keeps the client's spelling)."""
    if not headers:
        return None
    lower = name.lower()
    for k, v in headers.items():
        if k.lower() == lower:
            return v
    return None


def verify(headers: Mapping[str, str] | None, route: str, body: bytes, secrets: Sequence[bytes],
           *, now: float | None = None, tolerance: int = 300) -> str:
    """Check a request's signature; return the accepted signature (the replay key) or raise Unauthorized.

    The messages say what is wrong without echoing any signature or secret.
    """
    if not secrets:
        raise Unauthorized("The backend has no signing secret configured.", code="signing_not_configured")
    ts_raw = header(headers, TIMESTAMP_HEADER)
    sig = header(headers, SIGNATURE_HEADER)
    if not ts_raw or not sig:
        raise Unauthorized("The request is not signed (X-CSW-Timestamp and X-CSW-Signature are required).",
                           code="signature_missing")
    ts_raw = ts_raw.strip()
    sig = sig.strip()
    if not ts_raw.isdigit() or len(ts_raw) > 12:
        raise Unauthorized("The X-CSW-Timestamp header is not a Unix time in whole seconds.",
                           code="signature_malformed")
    hexpart = sig[len(VERSION_PREFIX):] if sig.startswith(VERSION_PREFIX) else ""
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise Unauthorized("The X-CSW-Signature header is malformed (expected v1=<64 lowercase hex>).",
                           code="signature_malformed")
    current = time.time() if now is None else now
    if abs(current - int(ts_raw)) > tolerance:
        raise Unauthorized("The request timestamp is too far from the server's clock (more than 300 s).",
                           code="signature_stale")
    matched = False
    for secret in secrets:
        # Check every secret so the time taken does not tell which one (or whether any) matched.
        matched |= hmac.compare_digest(compute_signature(secret, ts_raw, route, body), sig)
    if not matched:
        raise Unauthorized("The request signature does not match.", code="signature_invalid")
    return hexpart
