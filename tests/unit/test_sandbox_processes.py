"""sandboxes/processes.py: the start-up wait and the TERM-then-KILL end the process-backed sandboxes share."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandboxes.processes import Lifecycle, end_process, wait_ready

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# Ignores SIGTERM (says so once it does), so only the SIGKILL after the grace period ends it.
STUBBORN = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"]


class Gone(RuntimeError):
    pass


def test_a_ready_process_is_left_running() -> None:
    proc = subprocess.Popen(SLEEPER)
    try:
        calls: list[int] = []

        def second_time() -> bool:  # not ready, then ready
            calls.append(1)
            return len(calls) == 2

        wait_ready(proc, 5.0, second_time, interval=0.01, exited=Gone, stop=proc.kill, timed_out=lambda: Gone("late"))
        assert len(calls) == 2 and proc.poll() is None
    finally:
        end_process(proc)
    assert proc.returncode is not None


def test_a_process_that_exits_is_reported_with_its_code() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(Gone, match="^3$"):
        wait_ready(proc, 10.0, lambda: False, interval=0.01, exited=lambda code: Gone(str(code)),
                   stop=proc.kill, timed_out=lambda: Gone("late"))


def test_out_of_time_stops_then_raises() -> None:
    proc = subprocess.Popen(SLEEPER)
    stopped: list[bool] = []

    def stop() -> None:
        stopped.append(True)
        end_process(proc)

    with pytest.raises(Gone, match="late"):
        wait_ready(proc, 0.2, lambda: False, interval=0.02, exited=Gone, stop=stop, timed_out=lambda: Gone("late"))
    assert stopped == [True] and proc.returncode is not None


@pytest.mark.parametrize("group", [False, True])
def test_a_process_ignoring_sigterm_is_killed_after_the_grace(group: bool) -> None:
    proc = subprocess.Popen(STUBBORN, stdout=subprocess.PIPE, start_new_session=group)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    end_process(proc, group=group, grace=0.3)
    assert proc.returncode == -9
    end_process(proc)  # already gone: nothing to do
    proc.stdout.close()


def test_with_starts_and_stops_a_sandbox() -> None:
    class Box(Lifecycle):
        def __init__(self) -> None:
            self.events: list[str] = []

        def start(self, timeout: float = 1.0) -> Box:
            self.events.append(f"start {timeout}")
            return self

        def stop(self) -> None:
            self.events.append("stop")

    box = Box()
    with pytest.raises(Gone), box as entered:
        assert entered is box and box.events == ["start 1.0"]
        raise Gone
    assert box.events == ["start 1.0", "stop"]
