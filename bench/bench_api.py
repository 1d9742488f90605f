"""API load benchmark (not a test): signed requests against a real `cswhmcs serve` process over loopback.

The same run as tests/security/test_load.py (tests/security/load.py): DynamoDB Local, both sandboxes in a
child process (ComputeStacks' rate limit lifted), `cswhmcs serve` as a subprocess, and N keep-alive client
connections sending signed requests over overview, sso, suspend, unsuspend, user-groups and list of linked
accounts. Prints a Markdown table and merges the figures into bench/results.json:

* ``api_rps``: requests/s over the measured requests; reference: the API stage's throttle (20 rps steady,
  template.yaml), which the backend must at least sustain;
* ``api_p99_ms``: the 99th percentile latency; reference: the 25 s per-request budget (API.md section 2);
* ``api_p99_over_median``: how far the tail is from the middle; target <= 3;
* ``api_rss_growth_pct``: growth of the serve process's RSS from after the warm-up to the end; target <= 10 %;
* ``api_errors``: failed requests; target 0.

    python -m bench api [--requests 5000] [--concurrency 32] [--warmup 500] [--accounts 40] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THROTTLE_RPS = 20.0  # template.yaml MethodSettings ThrottlingRateLimit
BUDGET_MS = 25_000.0  # API.md section 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench api", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="total requests, warm-up included")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--accounts", type=int, default=40)
    ap.add_argument("--no-write", action="store_true", help="do not update bench/results.json")
    ap.add_argument("--quick", action="store_true", help="a short run: 1,000 requests, 100 of them warm-up")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.warmup = min(args.requests, 1000), min(args.warmup, 100)
    for p in (str(ROOT), str(ROOT / "layers/shared")):
        if p not in sys.path:
            sys.path.insert(0, p)

    from bench.results import figure, markdown, merge
    from sandboxes.dynamodb_local import DynamoDBLocal
    from tests.security.load import LoadStack

    print(f"... {args.requests} signed requests at concurrency {args.concurrency} against cswhmcs serve",
          file=sys.stderr, flush=True)
    with DynamoDBLocal() as db:
        stack = LoadStack(db.endpoint, accounts=args.accounts).start()
        try:
            result = stack.run(args.requests, concurrency=args.concurrency, warmup=args.warmup)
        finally:
            stack.stop()

    growth = result.rss_growth * 100
    figures = [
        figure("api_rps", round(result.rps, 1), "requests/s", reference=THROTTLE_RPS, target=">= 1 x reference",
               passed=result.rps >= THROTTLE_RPS),
        figure("api_p99_ms", round(result.p99_ms, 1), "ms", reference=BUDGET_MS, target="< 1 x reference",
               passed=result.p99_ms < BUDGET_MS),
        figure("api_p99_over_median", round(result.p99_over_median, 2), "x", reference=3.0, target="<= 3",
               passed=result.p99_over_median <= 3),
        figure("api_rss_growth_pct", round(growth, 2), "%", reference=10.0, target="<= 10 %", passed=growth <= 10),
        figure("api_errors", float(result.errors), "requests", reference=float(result.requests), target="0",
               passed=result.errors == 0),
    ]
    print(f"\nAPI load, real `cswhmcs serve` (DynamoDB Local + sandboxes over loopback): {result.summary()}\n")
    print(markdown(figures))
    if not args.no_write:
        merge(figures)
        print("\n(figures merged into bench/results.json)")
    print(f"\nper route: {dict(sorted(result.by_route.items()))}; median {result.median_ms:.1f} ms")
    if result.error_samples:
        print("errors, first few:", *result.error_samples, sep="\n  ")
    return 0 if all(f["pass"] for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
