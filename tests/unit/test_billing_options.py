"""Budgets split between workers, options from the environment, the CLI's progress bar (pure)."""

from __future__ import annotations

import io

import pytest

from cswhmcs.billing.cli import Progress
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.worker import AccountResult


@pytest.mark.parametrize(("limit", "share", "budget"), [(2500, 0.8, 2000), (10_000, 0.8, 8000), (2500, 0.5, 1250),
                                                     (1, 0.1, 1)])
def test_the_workers_share_one_window_of_billings_part_of_the_limit(limit: int, share: float, budget: int) -> None:
    # The Lambda workers draw from one sliding window (SharedWindow): its size does not depend on how many run
    for workers in (1, 8, 50):
        assert BillingOptions(cs_limit=limit, cs_share=share, concurrency=workers).cs_window_budget() == budget


def test_whmcs_rate_is_split_too() -> None:
    rate, burst = BillingOptions(concurrency=4, whmcs_rate=30).whmcs_rate_per_worker()
    assert rate == 7.5 and 1 <= burst <= 5


def test_options_come_from_the_settings() -> None:
    # Given the billing variables of a worker's environment
    from cswhmcs.config import load_settings

    settings = load_settings({"WORKER_MAX_CONCURRENCY": "8", "BILLING_CS_SHARE": "0.5", "BILLING_PER_PAGE": "250",
                              "BILLING_WHMCS_RATE": "12.5", "CS_RATE_LIMIT": "10000"})
    # When they become options
    opts = BillingOptions.from_settings(settings)
    # Then every one is used, CS_RATE_LIMIT as the ComputeStacks budget
    assert (opts.concurrency, opts.cs_share, opts.per_page, opts.whmcs_rate, opts.cs_limit) == \
        (8, 0.5, 250, 12.5, 10000)
    assert BillingOptions.from_settings(load_settings({})) == BillingOptions()
    assert BillingOptions.from_env({}) == BillingOptions()


@pytest.mark.parametrize("name, value", [("BILLING_WHMCS_RATE", "junk"), ("BILLING_CS_SHARE", "1.5"),
                                         ("WORKER_MAX_CONCURRENCY", "0"), ("BILLING_PER_PAGE", "many"),
                                         ("CS_RATE_LIMIT", "-5"), ("BILLING_CS_SHARE", "nan")])
def test_a_bad_billing_value_fails_naming_the_variable(name: str, value: str) -> None:
    # (it used to be dropped silently: the worker ran with the default)
    from cswhmcs.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        BillingOptions.from_env({name: value})
    assert name in err.value.message and value not in err.value.message


def test_progress_bar_only_on_a_terminal() -> None:
    # Given a stream that is not a terminal
    quiet = io.StringIO()
    p = Progress(quiet)
    p.add_planned(10)
    for _ in range(10):
        p.add_result(AccountResult(1, 1))
    p.close()
    # Then nothing is drawn
    assert quiet.getvalue() == ""

    # Given a terminal
    tty = io.StringIO()
    p = Progress(tty, enabled=True)
    p.add_planned(20)
    for i in range(20):
        p.add_result(AccountResult(1, 1, error="x" if i == 3 else None))
    p.close()
    # Then it ends on the full bar with the failures counted
    assert tty.getvalue().rstrip().endswith("20/20 accounts, 1 failed")
