"""Fixtures of the fault schedules.

* ``schedule_pool`` (tests/conftest.py): the worker processes that run the parametrized schedules, started
  with the session so they work while the rest of the suite runs.
* ``fault_world``: one in-process World (sandboxes, handlers) for replays and the named regressions; its
  patches (the route handlers use the schedule's deps) are applied per test only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.world import SIGNING_SECRET, World


@pytest.fixture(scope="session")
def fault_world_session(ddb_endpoint: str) -> Iterator[World]:
    world = World(ddb_endpoint)
    yield world
    world.close()


@pytest.fixture
def fault_world(fault_world_session: World) -> Iterator[World]:
    with fault_world_session.patched():
        yield fault_world_session


@pytest.fixture
def feed_secrets_capture(request: pytest.FixtureRequest) -> Any:
    """Hands a worker's log output and secrets to the session's secrets capture (tests/security), when loaded."""
    try:
        registry = request.getfixturevalue("secrets_registry")
    except pytest.FixtureLookupError:
        registry = None

    def feed(data: dict[str, Any]) -> None:
        if registry is None:
            return
        registry.register(SIGNING_SECRET, "signing secret")
        for value in data.get("secrets", []):
            registry.register(value, "password or signature of a fault schedule")
        registry.capture(data.get("log", ""), "product log of a fault-schedule worker", where=request.node.nodeid)

    return feed
