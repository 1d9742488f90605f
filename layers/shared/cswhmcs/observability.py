"""The one Logger, imported everywhere, and a redaction filter.

Rule: no log line carries a password, token or secret. Code never passes request bodies or headers to
the logger; the filter below is the second line of defence: it masks values of known-secret keys in
structured extras and any configured secret value that appears in a message.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from aws_lambda_powertools import Logger

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "cswhmcs")
logger = Logger(service=SERVICE)

_SECRET_KEY = re.compile(r"(password|secret|token|signature|accesshash|access_key|authorization|api_key)", re.I)
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
        for s in _known_secret_values:
            if s in value:
                value = value.replace(s, "***")
        return value
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"), _depth + 1)
    return value


# The attributes every LogRecord has; everything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str | dict):
            record.msg = redact(record.msg)
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
