"""Catching what the service logger emits, for tests that read its lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


class LogCollector(logging.Handler):
    """Keeps every record it is given, formatted, in ``lines``."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def service_log_lines(formatter: logging.Formatter | None = None) -> Iterator[LogCollector]:
    """A collector on the service logger for the block; by default formatted exactly as Lambda would write
    the lines (the logger's registered JSON formatter)."""
    from cswhmcs.observability import logger

    handler = LogCollector()
    handler.setFormatter(formatter if formatter is not None else logger.registered_formatter)
    base = logging.getLogger(logger.name)
    base.addHandler(handler)
    try:
        yield handler
    finally:
        base.removeHandler(handler)


@pytest.fixture
def emitted() -> Iterator[LogCollector]:
    """Every line the service logger emits during the test, formatted exactly as Lambda would write it (JSON)."""
    with service_log_lines() as handler:
        yield handler
