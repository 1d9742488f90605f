"""Hostile bodies, correctly signed, on every route (Hypothesis), through the real handlers in-process.

Starting from a valid body of the route, any of its fields (every field of the route's request model, nested
ones included, as `cswhmcs.contract` declares them) gets a wrong type, a huge or odd string (unicode, control
characters, lone surrogates, invalid UTF-8), deep nesting, a huge or non-finite number (1e400, NaN, a 50-digit
integer), null, an array or an object; keys are duplicated, unknown keys added; or the whole body is not an
object. The sandboxes are healthy, so the only acceptable answers are 200 and 400/404/409/422 (never 401:
the signature is right; never 502/504: no upstream fails here; never 500), in the API.md shape, without a
traceback, and an input refused as invalid makes no change upstream.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.conftest import LiveStack
from tests.security.conftest import ALL_ROUTES, Signer, error_shape_problems, invoke, link_account, seed_order

pytestmark = pytest.mark.integration

ALLOWED = {200, 400, 404, 409, 422}
EXAMPLES = int(os.environ.get("CSW_HOSTILE_EXAMPLES", "50"))
LINKED = 42  # a service with a linked ComputeStacks account (so actions get past the lookup)


# ---------------------------------------------------------------------- JSON with what json.dumps cannot say


class Raw(str):
    """A literal written into the body as is: 1e400, NaN, a 50-digit number, 20,000 levels of brackets."""


@dataclass
class Dup:
    """An object written with its keys in this order, duplicates included."""

    pairs: list[tuple[str, Any]]


@dataclass
class Utf8:
    """A string written without escapes (so lone surrogates become invalid UTF-8 bytes)."""

    text: str


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Utf8):
        return '"' + value.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Dup):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)  # floats: NaN / Infinity as Python writes them


def to_bytes(value: Any) -> bytes:
    return encode(value).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------- strategies

ODD_STRINGS = ["", " ", "0", "-1", "00042", "42.0", "4e1", "true", "null", "[]", "{}", "NaN", "\x00", "\ud800",
               "\u202eevil", "\ufeff42", "😀" * 20, "a\r\nb", "<script>alert(1)</script>", "' OR 1=1 --",
               "../../etc/passwd", "%00", "ann@example.org\n", "ANN@EXAMPLE.ORG", " ann@example.org ",
               "a@b", "@", "x" * 300 + "@example.org", "svc42@example.org"]
NUMBER_LITERALS = ["1e400", "-1e400", "1E-400", "NaN", "Infinity", "-Infinity", "-0", "0.0", "1e2", "42.0",
                   "42.5", "2147483647", "2147483648", "9223372036854775808", "1" + "0" * 50, "-" + "9" * 40,
                   "12345678901234567890123456789012345678901234567890.5"]


def deep(depth: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=("Cc", "Cf", "Zs", "So", "Lo")), max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=20).map(Utf8),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(NUMBER_LITERALS).map(Raw),
    st.integers(min_value=1_000, max_value=30_000).map(lambda n: "A" * n),  # huge (the body stays < 64 KiB)
    st.builds(deep, st.sampled_from([64, 1_000, 10_000, 20_000]), st.sampled_from(["array", "object"])),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
        st.lists(st.tuples(st.sampled_from(["serviceid", "a", "a"]), children), max_size=4).map(Dup),
    ),
    max_leaves=8,
)


def fields_of(model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every field of a request model as (path, annotation), nested models and list items included."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    for name, info in model.model_fields.items():
        out.append(((*prefix, name), info.annotation))
        for sub in _models_in(info.annotation):
            item = (0,) if "list" in str(info.annotation).lower() else ()
            out += fields_of(sub, (*prefix, name, *item))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


odd_strings = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=("Cc", "Cf", "Zs", "So", "Lo", "Mn")), max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=20).map(Utf8),
    st.integers(min_value=1_000, max_value=30_000).map(lambda n: "é" * n),
    st.emails(),
)
odd_numbers = st.one_of(
    st.integers(min_value=-5, max_value=5), st.integers(min_value=1, max_value=2**31 - 1),
    st.integers(min_value=2**31 - 3, max_value=2**31 + 3), st.sampled_from(["42", " 42", "0x2a", "4_2", "", "42 "]),
    st.sampled_from(NUMBER_LITERALS).map(Raw), st.floats(allow_nan=True, allow_infinity=True),
)
odd_bools = st.one_of(st.booleans(), st.sampled_from(["on", "off", "", "yes", "true", 0, 1, 2, None]))


def typed(annotation: Any) -> st.SearchStrategy[Any]:
    """A value of about the field's own type, with hostile content (it gets past the type check, so it
    reaches the logic and the upstreams), or, sometimes, any hostile value at all."""
    models = _models_in(annotation)
    text = str(annotation)
    if models:
        obj = st.fixed_dictionaries({}, optional={n: typed(i.annotation) for n, i in models[0].model_fields.items()})
        own: st.SearchStrategy[Any] = st.lists(obj, max_size=4) if "list" in text.lower() else obj
    elif "bool" in text:
        own = odd_bools
    elif "int" in text or "float" in text or "Decimal" in text:
        own = odd_numbers
    else:
        own = odd_strings
    return st.one_of(own, own, own, values)


def baseline(route: str, order: dict[str, Any], group: str) -> dict[str, Any]:
    """A valid body of the route (what the module sends); hostile changes are made to a copy."""
    if route == "/v1/hooks/order-paid":
        return json.loads(json.dumps(order))
    if route == "/v1/accounts/list":
        return {"page": 1, "page_size": 50}
    if route in ("/v1/user-groups", "/v1/connection/test"):
        return {"serverhostname": "127.0.0.1", "serversecure": False}
    body: dict[str, Any] = {
        "serviceid": LINKED, "userid": 7, "pid": 3, "username": f"svc{LINKED}@example.org", "domain": "",
        "status": "Active", "configoption1": "", "configoption2": "on", "serverhostname": "127.0.0.1",
        "clientsdetails": {"client_id": 7, "userid": 7, "id": 7, "firstname": "Ann", "lastname": "Lee",
                           "email": "ann@example.org", "currency": 1, "currency_code": "USD"},
    }
    if route in ("/v1/accounts/create", "/v1/accounts/change-password"):
        body["password"] = "Hostile-Pw-5521xq"
    if route == "/v1/accounts/change-package":
        body["configoption1"] = group
    return body


def put(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = body
    for key in path[:-1]:
        nxt = target[key] if isinstance(target, dict) and key in target else None
        if isinstance(key, int):
            nxt = target[key] if isinstance(target, list) and len(target) > key else None
        if nxt is None or not isinstance(nxt, dict | list):
            nxt = [{}] if isinstance(path[path.index(key) + 1], int) else {}
            if isinstance(target, list):
                if not target:
                    target.append(nxt)
                else:
                    target[key] = nxt
            else:
                target[key] = nxt
        target = nxt
    last = path[-1]
    if isinstance(target, list):
        if target:
            target[0] = value
        else:
            target.append(value)
    else:
        target[last] = value


@st.composite
def hostile_body(draw: st.DrawFn, route: str, seed: dict[str, Any]) -> bytes:
    from cswhmcs.contract import ROUTES

    kind = draw(st.sampled_from(["fields"] * 6 + ["duplicate keys", "not an object"]))
    if kind == "not an object":
        return to_bytes(draw(st.one_of(scalars, st.lists(values, max_size=3))))
    body = baseline(route, seed["order"], seed["group"])
    fields = fields_of(ROUTES[route].request) or [(("serverhostname",), str), (("anything",), Any)]
    for path, annotation in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4,
                                          unique_by=lambda f: f[0])):
        put(body, path, draw(typed(annotation)))
    if draw(st.booleans()):
        body[draw(st.text(max_size=20))] = draw(values)  # an unknown key: ignored
    if route == "/v1/accounts/create" and draw(st.booleans()):
        body["serviceid"] = draw(st.integers(min_value=1000, max_value=1100))  # a new service: really creates
    if kind == "duplicate keys":
        pairs = list(body.items())
        name = draw(st.sampled_from([k for k, _ in pairs] or ["serviceid"]))
        pairs.insert(draw(st.integers(0, len(pairs))), (name, draw(values)))
        return to_bytes(Dup(pairs))
    return to_bytes(body)


# ---------------------------------------------------------------------- the property


_MUTATING_CS = {"POST", "PATCH", "PUT", "DELETE"}
_MUTATING_WHMCS = {"AddCredit", "AddBillableItem", "UpdateClientProduct"}


def upstream_writes(stack: LiveStack) -> int:
    return sum(1 for r in stack.cs.requests if r["method"] in _MUTATING_CS) + \
        sum(1 for a in stack.whmcs.actions_called() if a in _MUTATING_WHMCS)


def check_answer(stack: LiveStack, route: str, body: bytes, signer: Signer) -> None:
    from cswhmcs.contract import ROUTES

    writes = upstream_writes(stack)
    status, text = invoke(stack, route, body, signer)
    note = f"{route} answered {status} to {body[:300]!r}: {text[:300]}"
    assert status in ALLOWED, note
    if status == 200:
        ROUTES[route].response.model_validate_json(text)
        return
    assert error_shape_problems(status, text) == [], note
    if json.loads(text)["code"] in ("bad_request", "invalid_field"):
        assert upstream_writes(stack) == writes, f"refused as invalid, yet an upstream was changed: {note}"


def seeded(stack: LiveStack) -> dict[str, Any]:
    """A linked account, a user group and a paid order: valid bodies get far (and really act)."""
    link_account(stack, LINKED)
    group = stack.cs.add_user_group("pro")
    return {"order": seed_order(stack), "group": str(group["id"])}


HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("route", ALL_ROUTES, ids=[r.removeprefix("/v1/") for r in ALL_ROUTES])
def test_hostile_bodies_get_a_clear_4xx_never_a_5xx(live_stack: LiveStack, route: str) -> None:
    seed = seeded(live_stack)
    signer = Signer()

    @HYPOTHESIS
    @given(body=hostile_body(route, seed))
    def prop(body: bytes) -> None:
        check_answer(live_stack, route, body, signer)

    for known in known_hostile(route, seed):  # always tried, whatever Hypothesis draws
        prop = example(body=known)(prop)
    prop()


def known_hostile(route: str, seed: dict[str, Any]) -> list[bytes]:
    """Bodies that once gave 500 (issue 8) or easily could: 10,000-20,000 levels of nesting (40-60 KB),
    huge and non-finite numbers in the route's first numeric field, a duplicated key."""
    from cswhmcs.contract import ROUTES

    bodies = [b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}", b'{"a":' * 10_000 + b"1" + b"}" * 10_000]
    numeric = [path for path, annotation in fields_of(ROUTES[route].request) if "int" in str(annotation)]
    for literal in ("1e400", "-1e400", "1" + "0" * 40, "NaN", "Infinity"):
        body = baseline(route, seed["order"], seed["group"])
        put(body, numeric[0] if numeric else ("serviceid",), Raw(literal))
        bodies.append(to_bytes(body))
    body = baseline(route, seed["order"], seed["group"])
    bodies.append(to_bytes(Dup([*body.items(), *((k, "x" * 5000) for k in list(body)[:2])])))
    return bodies
