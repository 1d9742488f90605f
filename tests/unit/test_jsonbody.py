"""The request body parser: one JSON object, bounded depth, exact numbers (cswhmcs.jsonbody, issue 8)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cswhmcs.errors import BadRequest
from cswhmcs.jsonbody import MAX_DEPTH, depth, loggable_id, parse_object


def nested(levels: int) -> bytes:
    return b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def test_a_body_as_deep_as_allowed_parses_one_level_more_is_400() -> None:
    assert depth(parse_object(nested(MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_object(nested(MAX_DEPTH + 1))


@pytest.mark.parametrize("raw", [b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                                 b'{"a":' + b"[" * 5_000 + b"]" * 5_000 + b"}"],
                         ids=["arrays beyond the parser", "objects beyond the parser", "arrays inside it"])
def test_any_deeper_body_is_the_same_400(raw: bytes) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_object(raw)
    assert exc.value.message == "The request body is nested too deeply." and exc.value.status == 400


def test_numbers_stay_exact_so_the_field_models_can_refuse_them() -> None:
    body = parse_object(b'{"a": 1e400, "b": NaN, "c": -Infinity, "d": 12, "e": 1' + b"0" * 60 + b', "f": 2.50}')
    assert body["a"] == Decimal("1e400") and body["b"].is_nan() and body["c"] == Decimal("-Infinity")
    assert body["d"] == 12 and isinstance(body["d"], int)
    assert body["e"] == Decimal(10) ** 60 and body["f"] == Decimal("2.50")


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"{", b"\xff\xfe{", b""])
def test_anything_but_one_object_is_400(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_object(raw)


def test_only_plain_ids_reach_the_request_log_line() -> None:
    assert [loggable_id(v) for v in (42, "42", True, 10**40, "x" * 5000, [1], Decimal("1e400"), None)] == [
        42, "42", None, None, None, None, None, None]
