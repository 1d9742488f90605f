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
    """Remember secret values (credentials, signing secrets) so they are masked if they ever reach a log."""
    for v in values:
        if v and len(v) >= 4:
            _known_secret_values.add(v)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        for s in _known_secret_values:
            if s in value:
                value = value.replace(s, "***")
        return value
    return value


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif isinstance(record.msg, dict):
            record.msg = redact(record.msg)
        if record.args:
            record.args = tuple(redact(a) for a in record.args) if isinstance(record.args, tuple) else record.args
        for key in list(vars(record)):
            if _SECRET_KEY.search(key) and key not in ("msg",):
                setattr(record, key, "***")
        return True


logger.addFilter(_RedactingFilter())
