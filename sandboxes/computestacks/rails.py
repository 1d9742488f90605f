"""Ruby, ActiveSupport and ActiveModel value semantics the ComputeStacks sandbox reproduces.

``to_i``, ``blank?``, truthiness, the attribute casts (string, boolean, integer), lenient Base64, the JSON of
a BigDecimal and of a time, ``split(sep).last``, Rack's query parsing and ``Hash#to_query``; plus the coercions
the seeding helpers apply to what a test passes (``to_datetime``, ``to_decimal``).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote_plus, unquote_plus

_RUBY_INT_RE = re.compile(r"\s*([+-]?\d+)")
_FALSE_VALUES = frozenset({"0", "f", "F", "false", "FALSE", "off", "OFF"})


def rb_to_i(value: Any) -> int:
    """Ruby ``to_i``: leading integer of a string (``"12abc"`` -> 12, ``"abc"`` -> 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        return int(value) if math.isfinite(value) else 0
    match = _RUBY_INT_RE.match(str(value))
    return int(match.group(1)) if match else 0


def rb_blank(value: Any) -> bool:
    """ActiveSupport ``blank?``: nil, false, whitespace-only strings, empty collections."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, dict | list):
        return not value
    return False


def rb_truthy(value: Any) -> bool:
    """Ruby truthiness: everything but nil and false (``0`` and ``""`` are true)."""
    return value is not None and value is not False


def ruby_class(value: Any) -> str:
    """The Ruby class name of a JSON value (as it shows in a NoMethodError)."""
    return {str: "String", int: "Integer", float: "Float", bool: "TrueClass", list: "Array"}.get(type(value),
                                                                                                "Object")


def cast_string(value: Any) -> str | None:
    """ActiveModel::Type::String: true -> "t", false -> "f", numbers -> their text."""
    if value is None:
        return None
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def cast_bool(value: Any) -> bool | None:
    """ActiveModel::Type::Boolean: "" -> nil; false, 0, "0", "f", "false", "off" ... -> false; else true."""
    if value is None or value == "":
        return None
    if value is False or (isinstance(value, int | float) and not isinstance(value, bool) and value == 0):
        return False
    if isinstance(value, str) and value in _FALSE_VALUES:
        return False
    return True


def cast_int(value: Any) -> int | None:
    """ActiveModel::Type::Integer: blank -> nil; "12abc" -> 12; "abc" -> 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return rb_to_i(value)


def b64decode_lenient(text: str) -> bytes:
    """Ruby ``Base64.decode64``: skips characters outside the alphabet, tolerates missing padding."""
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text.split("=", 1)[0])
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))


def rb_decimal(value: Decimal) -> str:
    """Rails' JSON for a BigDecimal: ``to_s`` in plain notation, at least one decimal ("5.0", "0.02054795")."""
    if value == 0:
        return "0.0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text
    return text + ".0"


def iso(value: datetime | None) -> str | None:
    """ActiveSupport's JSON time: UTC, milliseconds, ``Z`` ("2020-10-15T05:49:07.263Z")."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def rb_split_last(text: str | None, sep: str) -> str | None:
    """``text.split(sep).last`` in Ruby (trailing empty fields dropped; nil when nothing is left)."""
    if text is None:
        return None
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts[-1] if parts else None


def parse_query(raw: str) -> dict[str, str | None]:
    """Rack's query parsing for flat keys: ``a`` -> nil, ``a=`` -> "", the last value of a key wins."""
    out: dict[str, str | None] = {}
    for part in raw.split("&"):
        if not part:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
            out[unquote_plus(key)] = unquote_plus(value)
        else:
            out[unquote_plus(part)] = None
    return out


def to_query(params: Mapping[str, Any]) -> str:
    """ActiveSupport ``Hash#to_query``: ``k=v`` pairs CGI-escaped, then sorted."""
    pairs = [f"{quote_plus(str(k), safe='')}={quote_plus('' if v is None else str(v), safe='')}"
             for k, v in params.items()]
    return "&".join(sorted(pairs))


# --------------------------------------------------------------------------- what seeding helpers accept


def to_datetime(value: datetime | str) -> datetime:
    """A seeded time: an aware datetime as is, a naive one or an ISO text (``Z``, `` UTC``) taken as UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" UTC", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_decimal(value: Any, name: str) -> Decimal:
    """A seeded amount: str, int or Decimal (never float), finite."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{name}: pass a str, int or Decimal, not {type(value).__name__}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name}: not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name}: not a finite number")
    return number
