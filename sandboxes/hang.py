"""The ``hang`` knob both sandboxes share: requests that wait as if the upstream never answered."""

from __future__ import annotations

import threading
import time


class Hang:
    """The ``hang`` knob: requests wait in ``wait()`` until the hang's end, a new ``set()`` or ``close()``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._until = 0.0
        self._closed = False

    def set(self, seconds: float) -> None:
        with self._cond:
            self._until = time.monotonic() + max(0.0, float(seconds))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    def wait(self) -> bool:
        """False when closed (the sandbox stops): the request is dropped."""
        with self._cond:
            while not self._closed:
                left = self._until - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)
            return False
