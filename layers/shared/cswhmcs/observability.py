"""The one Logger, imported everywhere, and a redaction filter.

Rule: no log line carries a password, token or secret. Code never passes request bodies or headers to
the logger; the filter below is the second line of defence: it masks values of known-secret keys in
structured extras, any configured secret value, the credentials of a URL (``https://user:pw@host``) and
the value of a secret-named ``key=value`` / ``"key": "value"`` inside any text, the message included.

Exceptions too (``logger.exception``, ``exc_info=``): the filter formats the traceback itself, redacts
it and hands Powertools the result (its ``exception``, ``exception_name`` and ``stack_trace`` keys, in
the shape Powertools gives them) instead of the exception, whose message may carry a secret (an httpx
error naming a URL with credentials, a ValueError quoting a body).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from typing import Any

from aws_lambda_powertools import Logger

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "cswhmcs")
# The stack trace is built by the redaction filter below (Powertools' own would print the exception raw).
logger = Logger(service=SERVICE, serialize_stacktrace=False)

_SECRET_WORDS = r"(?:password|passwd|secret|token|signature|accesshash|access_key|authorization|api_key)"  # noqa: S105
_SECRET_KEY = re.compile(_SECRET_WORDS, re.I)
# In free text: ``password=...``, ``"api_secret": "..."``, ``Authorization: Basic ...``, ``?token=...``.
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w-]*" + _SECRET_WORDS + r"[\w-]*)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>(?:(?:basic|bearer|token)\s+)?[^\s\"'&,;)}\]]+)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#@]*@", re.I)
_known_secret_values: set[str] = set()


def register_secret_values(*values: str) -> None:
    """Remember secret values (credentials, signing secrets) so they are masked if they ever reach a log.
    Every function registers them when it loads its settings (``cswhmcs.config``)."""
    for v in values:
        if v and len(v) >= 4:
            _known_secret_values.add(v)


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with secret-named keys masked and known secret values replaced, in strings, dicts,
    lists and tuples at any depth (bounded)."""
    if _depth > 20:
        return "***"  # deeper than anything we log: do not look, do not print
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v, _depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"), _depth + 1)
    return value


def _redact_text(value: str) -> str:
    for s in _known_secret_values:
        if s in value:
            value = value.replace(s, "***")
    if "://" in value:
        value = _URL_USERINFO.sub(r"\g<scheme>***@", value)
    return _SECRET_ASSIGNMENT.sub(r"\g<key>\g<sep>***", value)


def _redact_exception(record: logging.LogRecord) -> None:
    """Replace the record's exception by its redacted text, in the keys Powertools prints (``exception``,
    ``exception_name``, ``stack_trace``) and in ``exc_text`` (any other formatter)."""
    exc_info = record.exc_info
    if not isinstance(exc_info, tuple) or not hasattr(exc_info[0], "__name__"):
        return
    exc_type, exc, tb = exc_info
    text = redact(logging.Formatter().formatException(exc_info))
    record.exc_info = None
    record.exc_text = text
    name = getattr(exc_type, "__name__", "Exception")
    given = vars(record)  # an ``exception`` etc. passed in ``extra`` wins, as in Powertools
    given.setdefault("exception", text)
    given.setdefault("exception_name", name)
    given.setdefault("stack_trace", {
        "type": name,
        "value": redact(str(exc)),
        "module": type(exc).__module__,
        "frames": [{"file": fs.filename, "line": fs.lineno, "function": fs.name, "statement": redact(fs.line)}
                   for fs in traceback.extract_tb(tb)],
    })


# The attributes every LogRecord has; everything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            _redact_exception(record)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if record.args and isinstance(record.msg, str):
            with contextlib.suppress(Exception):  # malformed: its parts are redacted one by one below
                # formatted once, so that a "token=%s" and its argument are seen together
                record.msg, record.args = record.getMessage(), None
        if isinstance(record.msg, str | dict | list | tuple):
            record.msg = redact(record.msg)
        elif not isinstance(record.msg, int | float | None):  # e.g. logger.error(exc): printed as its str()
            record.msg = redact(str(record.msg))
        if record.args:
            if isinstance(record.args, tuple):
                record.args = tuple(redact(a) for a in record.args)
            elif isinstance(record.args, dict):
                record.args = redact(record.args)
        for key in list(vars(record)):
            if key in _RECORD_ATTRS:
                continue
            if _SECRET_KEY.search(key):
                setattr(record, key, "***")
            else:
                setattr(record, key, redact(getattr(record, key)))
        return True


logger.addFilter(_RedactingFilter())
