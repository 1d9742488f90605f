"""`make test`: the whole suite as two pytest sessions at once, each a complete session of its own.

The suite keeps two cores only ~55 % busy when it runs as one session (measured 2026-12-03: 12 min 45 s of CPU
in 11 min 1 s): most tests wait on loopback servers, DynamoDB Local, php and MariaDB one after another. Two
sessions over disjoint test files overlap those waits (7 min 48 s on the same machine, every test passing; 6 min
52 s once the billing fault schedules moved to the shorter session).
Each session has everything a session has (its own DynamoDB Local and MariaDB on free ports, the secrets
capture over its own output, a fault-schedule pool in each session that collects schedules), so a test
behaves as under a plain `pytest`, which still runs the whole suite in one session.

    python tests/run_suite.py [pytest options...]   # the options go to both sessions

Each session's output is printed whole when it ends (never interleaved); the exit status is the first non-zero
one of the sessions. Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Balanced by measured time (junit times of 2026-12-03): the integration tests and the fault schedules (whose
# pool of worker processes runs beside them) against everything else. A path may be a file inside another group's
# directory: that session then skips it (``--ignore``). The billing fault schedules run in the second session,
# with a schedule pool of its own: 7 min 48 s / 4 min 48 s became 6 min 52 s / 4 min 50 s on the same machine.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("integration and fault schedules", ("tests/integration", "tests/faults")),
    ("unit, infrastructure, php, security and billing fault schedules",
     ("tests/unit", "tests/infrastructure", "tests/php", "tests/security", "tests/integration/test_billing_faults.py")),
)


def ignored(paths: tuple[str, ...]) -> list[str]:
    """The paths of other groups inside this group's directories: the session skips them."""
    return [other for _, group in GROUPS if group != paths for other in group
            if any(other.startswith(path + "/") for path in paths)]


def collected(paths: tuple[str, ...]) -> set[str]:
    """The test files a session of ``paths`` collects (pytest's default ``test_*.py``), its ignores left out."""
    files: set[str] = set()
    for path in paths:
        where = ROOT / path
        found = [where] if where.is_file() else where.rglob("test_*.py")
        files |= {f.relative_to(ROOT).as_posix() for f in found}
    skipped = ignored(paths)
    return {f for f in files if not any(f == s or f.startswith(s + "/") for s in skipped)}


def missing_directories() -> list[str]:
    """Test directories (and test files directly in tests/) that no group runs: a new one must be added to
    GROUPS, or it would never run."""
    grouped = {path for _, paths in GROUPS for path in paths if "/" not in path.removeprefix("tests/")}
    tests = ROOT / "tests"
    found = {f"tests/{p.name}" for p in tests.iterdir() if p.is_dir() and any(p.rglob("test_*.py"))}
    found |= {f"tests/{p.name}" for p in tests.glob("test_*.py")}
    return sorted(found - grouped)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    missing = missing_directories()
    if missing:
        print(f"tests/run_suite.py: no group runs {', '.join(missing)}: add it to GROUPS", file=sys.stderr)
        return 2
    # A stopped `make test` (Ctrl-C, or SIGTERM from a CI timeout) stops both sessions, which run in process
    # groups of their own.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    runs = []
    for name, paths in GROUPS:
        out = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths,
               *(f"--ignore={path}" for path in ignored(paths)), *argv]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        runs.append((name, proc, out))
        print(f"started: {name} ({' '.join(paths)})", flush=True)
    results: dict[str, tuple[int, float]] = {}
    try:
        while len(results) < len(runs):
            for name, proc, out in runs:
                if name in results or proc.poll() is None:
                    continue
                results[name] = (proc.returncode, time.monotonic() - started)
                out.seek(0)
                print(f"\n===== {name}: exit {proc.returncode} after {results[name][1]:.0f} s =====", flush=True)
                sys.stdout.buffer.write(out.read())
                sys.stdout.flush()
            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, proc, _ in runs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for _, proc, _ in runs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for name, _, out in runs:
            if name not in results:
                out.seek(0)
                print(f"\n===== {name}: stopped =====", flush=True)
                sys.stdout.buffer.write(out.read())
        sys.stdout.flush()
        return 130
    print()
    for name, (code, seconds) in results.items():
        print(f"make test: {name}: {'passed' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
    print(f"make test: {time.monotonic() - started:.0f} s in all")
    return next((code for code, _ in results.values() if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
