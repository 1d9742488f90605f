"""Demo data and the foreground command for the ComputeStacks sandbox.

``seed_demo`` gives ``make dev`` a small, believable installation; ``main`` is
``python -m sandboxes.computestacks --port 8081 --seed-demo`` (it serves until Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sandboxes.computestacks.server import ComputeStacksSandbox


def seed_demo(sandbox: ComputeStacksSandbox) -> dict[str, Any]:
    """A small, believable installation for ``make dev``: groups, a location, linked users in USD and EUR
    (``whmcs`` labels with integer ids), one unlinked user, and usage in the previous and current month."""
    location = sandbox.add_location("Frankfurt")
    plan = sandbox.add_billing_plan("Standard")
    starter = sandbox.add_user_group("starter", billing_plan_id=plan["id"], location_ids=[location["id"]])
    pro = sandbox.add_user_group("pro", billing_plan_id=plan["id"], location_ids=[location["id"]])
    now = datetime.fromtimestamp(sandbox._clock(), UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    jane = sandbox.add_user("jane.doe1-1@demo.computestacks.test", "Jane", "Doe", currency="USD",
                            external_id="1", labels={"whmcs": {"client_id": 1, "service_id": 1}},
                            user_group_id=starter["id"], run_rate="14.6", deployments=2, container_services=3)
    max_ = sandbox.add_user("max.muster2-2@demo.computestacks.test", "Max", "Mustermann", currency="EUR",
                            external_id="2", labels={"whmcs": {"client_id": 2, "service_id": 2}},
                            user_group_id=pro["id"], run_rate="36.5", deployments=1, container_services=1)
    sandbox.add_user("walk.in@demo.computestacks.test", "Walk", "In", currency="GBP")
    usage: list[dict[str, Any]] = []
    for user, sub_id, product, rate in ((jane, 101, "small", "0.02"), (jane, 102, "storage", "0.0001"),
                                        (max_, 201, "medium", "0.05")):
        for month_start in (last_month, this_month):
            start = month_start
            while start < min(now, (month_start + timedelta(days=32)).replace(day=1)) and start < now:
                end = start + timedelta(hours=3)
                usage.append(sandbox.add_usage(user["id"], product_name=product, subscription_product_id=sub_id,
                                               rate=rate, qty="3", total=str(Decimal(rate) * 3),
                                               period_start=start, period_end=end,
                                               processed=month_start == last_month and product == "storage"))
                start = end + timedelta(days=2)  # a sparse sample, not every 3 hours
    return {"users": [jane, max_], "groups": [starter, pro], "location": location, "usage_rows": len(usage)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.computestacks",
                                     description="Run the ComputeStacks admin API sandbox in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--api-key", default=ComputeStacksSandbox.DEFAULT_API_KEY)
    parser.add_argument("--api-secret", default=ComputeStacksSandbox.DEFAULT_API_SECRET)
    parser.add_argument("--currencies", default="USD,EUR,GBP", help="comma-separated price currencies")
    parser.add_argument("--seed-demo", action="store_true", help="add demo groups, users and usage")
    parser.add_argument("--verbose", action="store_true", help="log one line per request")
    parser.add_argument("--webhook-users-url", default="",
                        help="the webhook_users setting: POST {\"user\": ...} there after a user changes")
    args = parser.parse_args(argv)
    sandbox = ComputeStacksSandbox(args.host, args.port, api_key=args.api_key, api_secret=args.api_secret,
                                   currencies=[c.strip().upper() for c in args.currencies.split(",") if c.strip()],
                                   verbose=args.verbose)
    if args.seed_demo:
        seed_demo(sandbox)
    sandbox.webhook_users_url = args.webhook_users_url or None
    sandbox.start()
    print(f"ComputeStacks sandbox on {sandbox.url} (API under /api/), key {sandbox.api_key!r}, "
          f"secret {sandbox.api_secret!r}", flush=True)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0
