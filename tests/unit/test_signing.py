"""Request signing (API.md section 1)."""

from __future__ import annotations

import pytest

from cswhmcs.errors import Unauthorized
from cswhmcs.signing import compute_signature, sign_headers, verify

SECRET = b"s3cret"
ROUTE = "/v1/accounts/suspend"
BODY = b'{"serviceid":42}'
NOW = 1_800_000_000


def test_signature_is_hmac_of_timestamp_route_and_body() -> None:
    # Given a known vector computed independently: printf '1800000000./v1/accounts/suspend.{"serviceid":42}'
    #   | openssl dgst -sha256 -hmac s3cret
    import hashlib
    import hmac

    expected = hmac.new(SECRET, b'1800000000./v1/accounts/suspend.{"serviceid":42}', hashlib.sha256).hexdigest()
    # When / Then
    assert compute_signature(SECRET, NOW, ROUTE, BODY) == "v1=" + expected


def test_a_fresh_signature_is_accepted_and_returns_the_replay_key() -> None:
    headers = sign_headers(SECRET, ROUTE, BODY, now=NOW)
    key = verify(headers, ROUTE, BODY, [SECRET], now=NOW + 10)
    assert len(key) == 64 and headers["X-CSW-Signature"].endswith(key)


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda h, b, r: ({}, b, r), "signature_missing"),
        (lambda h, b, r: ({"X-CSW-Timestamp": h["X-CSW-Timestamp"]}, b, r), "signature_missing"),
        (lambda h, b, r: ({**h, "X-CSW-Timestamp": "soon"}, b, r), "signature_malformed"),
        (lambda h, b, r: ({**h, "X-CSW-Signature": "sha256=abc"}, b, r), "signature_malformed"),
        (lambda h, b, r: ({**h, "X-CSW-Signature": h["X-CSW-Signature"].upper().replace("V1=", "v1=")}, b, r),
         "signature_malformed"),
        (lambda h, b, r: (h, b + b" ", r), "signature_invalid"),
        (lambda h, b, r: (h, b, "/v1/accounts/terminate"), "signature_invalid"),
        (lambda h, b, r: ({**h, "X-CSW-Timestamp": str(NOW - 1)}, b, r), "signature_invalid"),
    ],
    ids=["no headers", "no signature", "timestamp not a number", "wrong scheme", "uppercase hex",
         "tampered body", "other route", "other timestamp"],
)
def test_bad_signatures_are_refused_with_a_reason(mutate, code) -> None:  # type: ignore[no-untyped-def]
    # Given a valid request, changed in one way
    headers, body, route = mutate(sign_headers(SECRET, ROUTE, BODY, now=NOW), BODY, ROUTE)
    # When / Then
    with pytest.raises(Unauthorized) as err:
        verify(headers, route, body, [SECRET], now=NOW)
    assert err.value.code == code
    assert err.value.status == 401


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_stale_or_future_timestamps_are_refused(skew: int) -> None:
    headers = sign_headers(SECRET, ROUTE, BODY, now=NOW)
    with pytest.raises(Unauthorized) as err:
        verify(headers, ROUTE, BODY, [SECRET], now=NOW + skew)
    assert err.value.code == "signature_stale"


def test_300_seconds_is_still_fresh() -> None:
    headers = sign_headers(SECRET, ROUTE, BODY, now=NOW)
    verify(headers, ROUTE, BODY, [SECRET], now=NOW + 300)
    verify(headers, ROUTE, BODY, [SECRET], now=NOW - 300)


def test_rotation_accepts_any_active_secret_and_headers_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in sign_headers(b"old", ROUTE, BODY, now=NOW).items()}
    verify(headers, ROUTE, BODY, [b"new", b"old"], now=NOW)
    with pytest.raises(Unauthorized):
        verify(headers, ROUTE, BODY, [b"new"], now=NOW)


def test_error_messages_never_contain_the_signature_or_secret() -> None:
    headers = sign_headers(SECRET, ROUTE, BODY, now=NOW)
    with pytest.raises(Unauthorized) as err:
        verify(headers, ROUTE, BODY + b"x", [SECRET], now=NOW)
    assert headers["X-CSW-Signature"][3:] not in err.value.message
    assert "s3cret" not in err.value.message
