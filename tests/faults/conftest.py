"""Fixtures of the fault schedules.

* ``schedule_pool`` (tests/conftest.py): the worker processes that run the parametrized schedules, started
  with the session so they work while the rest of the suite runs.
* ``fault_world``: one in-process World (sandboxes, handlers) for replays and the named regressions; its
  patches (the route handlers use the schedule's deps) are applied per test only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.world import World


@pytest.fixture(scope="session")
def fault_world_session(ddb_endpoint: str) -> Iterator[World]:
    world = World(ddb_endpoint)
    yield world
    world.close()


@pytest.fixture
def fault_world(fault_world_session: World) -> Iterator[World]:
    with fault_world_session.patched():
        yield fault_world_session
