"""Child-process lifecycle the process-backed sandboxes share (MariaDB, `php -S`, DynamoDB Local).

Standard library only:

* ``wait_ready``: polls until the process is ready; raises when it is gone, or (once stopped) out of time;
* ``end_process``: SIGTERM, then SIGKILL when it does not end in time (the process, or its whole group);
* ``Lifecycle``: ``with`` for a sandbox that has ``start()`` and ``stop()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, Self


class Lifecycle:
    """A sandbox usable with ``with``: ``start()`` on the way in, ``stop()`` on the way out."""

    def start(self, timeout: float = 20.0) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(proc: subprocess.Popen[Any], timeout: float, ready: Callable[[], bool], *, interval: float,
               exited: Callable[[int], BaseException], stop: Callable[[], None],
               timed_out: Callable[[], BaseException]) -> None:
    """Calls ``ready()`` every ``interval`` seconds until it says True. Raises ``exited(returncode)`` as soon
    as the process ends; when ``timeout`` seconds pass first, calls ``stop()`` and raises ``timed_out()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise exited(proc.returncode)
        if ready():
            return
        time.sleep(interval)
    stop()
    raise timed_out()


def end_process(proc: subprocess.Popen[Any] | None, *, group: bool = False, grace: float = 10.0) -> None:
    """Ends a running process (or, with ``group``, its process group: it must have been started with
    ``start_new_session``): SIGTERM, SIGKILL after ``grace`` seconds; one already gone is left alone."""
    if proc is None or proc.poll() is not None:
        return
    send = os.killpg if group else os.kill
    try:
        send(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        send(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass
