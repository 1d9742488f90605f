"""Billing tunables (docs/billing.md sections 6-7).

The defaults are what docs/billing.md's arithmetic assumes. Those an operator may change are
``Settings`` fields (``BILLING_*``, ``WORKER_MAX_CONCURRENCY``, ``CS_RATE_LIMIT``), validated with the
rest of the configuration; ``from_settings`` is the one place they become options. Logic only sees
this object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from cswhmcs.billing.grouping import COLLECT_INTERVAL

if TYPE_CHECKING:
    from cswhmcs.config import Settings


@dataclass(frozen=True)
class BillingOptions:
    # ComputeStacks: 2,500 requests per 5 minutes per client IP. Billing takes at most `cs_share` of it
    # (the API routes and the month-end of other tools share the IP): the Lambda workers together through one
    # sliding window in the ledger table (cs_window_budget), an in-process run through its one token bucket.
    cs_limit: int = 2500
    cs_window: float = 300.0
    cs_share: float = 0.8
    cs_burst: int = 10  # one bucket for a whole in-process run
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
    # In-process runs with the billing receiver: accounts handed to one worker call together, so that
    # their lines share receiver requests (up to 100 items each), like the accounts of one SQS batch.
    batch_accounts: int = 50
    # ComputeStacks writes usage rows this often (CollectUsageWorker, every 3 h at :20): a close run's read
    # is complete when every running subscription product has a row ending within the last interval before
    # the cut-off (grouping.complete_for).
    cs_collect_interval: timedelta = COLLECT_INTERVAL

    def cs_window_budget(self) -> int:
        """Billing's requests in any ``cs_window``, for all workers together (``SharedWindow``, Lambda)."""
        return max(1, int(self.cs_limit * self.cs_share))

    def whmcs_rate_per_worker(self) -> tuple[float, int]:
        rate = self.whmcs_rate / max(1, self.concurrency)
        return rate, max(1, min(self.whmcs_burst, math.ceil(rate)))

    @classmethod
    def from_settings(cls, settings: Settings) -> BillingOptions:
        return cls(cs_limit=settings.CS_RATE_LIMIT, cs_share=settings.BILLING_CS_SHARE,
                   whmcs_rate=settings.BILLING_WHMCS_RATE, concurrency=settings.WORKER_MAX_CONCURRENCY,
                   per_page=settings.BILLING_PER_PAGE)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BillingOptions:
        """Options from these variables alone (no secret is read). A bad value raises
        ``ConfigurationError`` naming the variable."""
        from cswhmcs.config import validate_settings

        keys = ("CS_RATE_LIMIT", "BILLING_CS_SHARE", "BILLING_WHMCS_RATE", "WORKER_MAX_CONCURRENCY",
                "BILLING_PER_PAGE")
        settings = validate_settings({k: env[k] for k in keys if k in env})
        return cls.from_settings(settings)
