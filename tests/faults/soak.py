"""`make soak`: thousands of fault schedules (tests/faults/schedule.py, the "full" size) on every core.

    python -m tests.faults.soak [--schedules 2000] [--first-seed 0] [--jobs N] [--size full|small]

Progress goes to stderr; each failing schedule's report (with its replay command) to stdout; the last two
lines of stdout are exactly ``N schedules, D duplicates, L lost, A needing attention`` (API.md section 5) and
``receiver path: R schedules, A needing attention`` (the R of the N that billed through the billing receiver,
and their lines left for an operator: must be 0). Exit status: 0 when nothing broke, 1 when D or L > 0 or a
receiver-path line needed attention, 2 when only other invariants broke (named above it). Receiver-path
seeds are skipped (said above the summary, not counted in N) where php or MariaDB is missing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from concurrent.futures import as_completed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=2000)
    parser.add_argument("--first-seed", type=int, default=100_000, help="seeds first..first+N-1 (make test "
                        "runs 0..199, so the soak starts elsewhere by default)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--size", choices=("small", "full"), default="full")
    args = parser.parse_args(argv)
    # A terminated soak still stops its DynamoDB Local and worker processes (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.schedules < 1:
        parser.error("--schedules must be at least 1")

    # Never reach real AWS; no metrics or traces on stdout (the last line is the summary).
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ.pop("AWS_PROFILE", None)
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "1"
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "1"

    from sandboxes.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable
    from tests.faults.pool import SchedulePool

    try:
        db = DynamoDBLocal().start()
    except DynamoDBLocalUnavailable as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    done = duplicates = lost = attention = broken = unrecorded = 0
    via_receiver = receiver_attention = 0
    skipped: dict[str, int] = {}
    pool = SchedulePool(db.endpoint, args.jobs)
    try:
        seeds = list(range(args.first_seed, args.first_seed + args.schedules))
        pool.submit(seeds, args.size)
        for future in as_completed(pool.futures.values()):
            data = future.result()
            if data.get("skipped"):
                skipped[data["skipped"]] = skipped.get(data["skipped"], 0) + 1
                continue
            done += 1
            if data.get("path") == "receiver":
                via_receiver += 1
                receiver_attention += data.get("receiver_attention", 0)
            duplicates += data["duplicates"]
            lost += data["lost"]
            attention += data["attention"]
            unrecorded += data.get("unrecorded", 0)
            if data["report"]:
                broken += 1
                print(data["report"], flush=True)
            if done % 100 == 0 or done + sum(skipped.values()) == len(seeds):
                print(f"soak: {done}/{len(seeds)} schedules, {time.monotonic() - started:.0f} s, "
                      f"{broken} failing", file=sys.stderr, flush=True)
    finally:
        pool.close()
        db.stop()
    if unrecorded:
        print(f"{unrecorded} deposits not credited because their only delivery died right after its first read, "
              "before writing anything (as if WHMCS had never called; not counted as lost)", flush=True)
    for reason, n in skipped.items():
        print(f"{n} schedules skipped: {reason}", flush=True)
    print(f"{done} schedules, {duplicates} duplicates, {lost} lost, {attention} needing attention", flush=True)
    print(f"receiver path: {via_receiver} schedules, {receiver_attention} needing attention", flush=True)
    if duplicates or lost or receiver_attention:
        return 1
    return 2 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
