"""A request body as one JSON object: bounded in depth, every number exact (API.md section 1).

`json.loads` alone is not enough for a body an attacker shapes (issue 8): 10,000+ levels of nesting
raise RecursionError inside the parser, a few thousand levels parse but break whatever recurses over
the value afterwards (validation, logging, redaction), and `1e400` or `NaN` become numbers that no
field can hold. Here every such body is refused with 400 before any action sees it, or turned into a
value the field models refuse with 422 naming the field:

* nesting deeper than ``MAX_DEPTH`` (the module's ``$params`` are 3-4 levels deep): 400;
* fractions and exponents are ``Decimal`` (never float), so ``1e400`` stays exact and the models'
  bounds refuse it; ``NaN``/``Infinity`` (not JSON, but Python's parser accepts them) are Decimal
  NaN/Infinity, which every numeric field refuses as "not a finite number";
* integer literals longer than ``LONG_INT_DIGITS`` become ``Decimal`` too, so a 5,000-digit id is a
  field's 422 (out of bounds), not the parser's 400 from Python's int-digits limit.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from cswhmcs.errors import BadRequest

MAX_DEPTH = 32
LONG_INT_DIGITS = 40
TOO_DEEP = "The request body is nested too deeply."


def _int(text: str) -> int | Decimal:
    return int(text) if len(text) <= LONG_INT_DIGITS else Decimal(text)


def depth(value: Any) -> int:
    """How many objects/arrays deep ``value`` is (a scalar: 0). Iterative: any depth is safe here."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest  # no need to walk the rest
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a dict, or ``BadRequest`` (400) saying why not."""
    try:
        payload = json.loads(body, parse_float=Decimal, parse_int=_int, parse_constant=Decimal)
    except RecursionError:
        raise BadRequest(TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    if depth(payload) > MAX_DEPTH:
        raise BadRequest(TOO_DEEP)
    return payload


def loggable_id(value: Any) -> int | str | None:
    """A body's ``serviceid`` as it may appear in the request log line: a plain id, never a hostile value
    (a 60 KB string, a nested structure, a number with 400 digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) < 10**12:
        return value
    if isinstance(value, str) and len(value) <= 20:
        return value
    return None
