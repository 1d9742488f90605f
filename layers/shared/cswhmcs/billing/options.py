"""Billing tunables that are not part of the public configuration (API.md section 4).

The defaults are what docs/billing.md's arithmetic assumes. The Lambda entry points may override
some from the environment (``BILLING_*``, ``WORKER_MAX_CONCURRENCY``); logic only sees this object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta


@dataclass(frozen=True)
class BillingOptions:
    # ComputeStacks: 2,500 requests per 5 minutes per client IP. Billing takes at most `cs_share` of it
    # (the API routes and the month-end of other tools share the IP), split evenly between workers.
    cs_limit: int = 2500
    cs_window: float = 300.0
    cs_share: float = 0.8
    cs_burst: int = 10
    # WHMCS has no documented limit; we stay gentle with a PHP application, yet fast enough that the
    # month-end's ~2 AddBillableItem + 1 GetClientsDetails per account finish within the ComputeStacks bound.
    whmcs_rate: float = 30.0
    whmcs_burst: int = 5
    # How many accounts are worked on at once (Lambda: the SQS event source's MaximumConcurrency).
    concurrency: int = 4
    per_page: int = 500
    # A line left "sending" longer than this was interrupted (the worker's timeout is 900 s).
    sending_lease: timedelta = timedelta(seconds=960)
    # Definite failures (WHMCS 5xx, refusals) are re-sent by later deliveries up to this many attempts.
    max_send_attempts: int = 5
    # Re-read a ComputeStacks user's currency (one request) during a collection this often.
    currency_refresh: timedelta = timedelta(days=7)
    # Optimistic-concurrency retries on one account's state item.
    max_conflicts: int = 8
    # A daily collection is skipped when a month-end run started this recently (it did the reading).
    collect_skip_after_bill: timedelta = timedelta(hours=12)

    def cs_rate_per_worker(self) -> tuple[float, int]:
        """``(rate/s, burst)`` of one worker's ComputeStacks bucket: the workers together keep every
        ``cs_window`` under ``cs_share * cs_limit`` (``burst + window * rate <= budget`` each)."""
        budget = self.cs_limit * self.cs_share / max(1, self.concurrency)
        burst = max(1, min(self.cs_burst, int(budget // 10)))
        return max(1e-3, (budget - burst) / self.cs_window), burst

    def whmcs_rate_per_worker(self) -> tuple[float, int]:
        rate = self.whmcs_rate / max(1, self.concurrency)
        return rate, max(1, min(self.whmcs_burst, math.ceil(rate)))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BillingOptions:
        opts = cls()
        numbers = {
            "BILLING_CS_SHARE": ("cs_share", float),
            "BILLING_WHMCS_RATE": ("whmcs_rate", float),
            "WORKER_MAX_CONCURRENCY": ("concurrency", int),
            "BILLING_PER_PAGE": ("per_page", int),
        }
        changes: dict[str, object] = {}
        for key, (attr, kind) in numbers.items():
            raw = env.get(key, "").strip()
            if raw:
                try:
                    changes[attr] = kind(raw)
                except ValueError:
                    continue
        return replace(opts, **changes) if changes else opts  # type: ignore[arg-type]
