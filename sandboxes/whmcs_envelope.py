"""What every module of the WHMCS sandbox shares: the ``result: error`` envelope and WHMCS's integer coercion.

``whmcs.py`` (the server and most actions), ``whmcs_invoices.py`` and ``whmcs_module.py`` all raise ``ApiError``;
``WhmcsSandbox.handle`` turns it into ``{"result": "error", "message": ...}``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A WHMCS ``result: error`` answer (HTTP 200 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def to_int(value: Any) -> int | None:
    """An id as PHP's ``(int)`` of a clean numeric string; None when it is not one."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
