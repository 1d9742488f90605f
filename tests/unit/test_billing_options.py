"""Budgets split between workers, options from the environment, the CLI's progress bar (pure)."""

from __future__ import annotations

import io

import pytest

from cswhmcs.billing.cli import Progress
from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.worker import AccountResult


@pytest.mark.parametrize("workers", [1, 2, 4, 8, 16, 50])
def test_workers_together_stay_under_the_computestacks_budget(workers: int) -> None:
    # Given billing's share of 2,500 requests per 300 s split between the workers
    opts = BillingOptions(concurrency=workers)
    rate, burst = opts.cs_rate_per_worker()

    # When every worker spends its burst and its rate for a whole window
    worst_window = workers * (burst + rate * opts.cs_window)

    # Then the window holds at most 80 % of the limit
    assert worst_window <= 2500 * 0.8 + 1e-9
    assert worst_window >= 2500 * 0.8 * 0.99  # and does not waste it


@pytest.mark.parametrize("workers", [1, 4, 8, 16])
def test_workers_reading_steadily_use_almost_all_of_the_budget(workers: int) -> None:
    # A month-end reads for hours: what counts then is the steady rate, not the burst (docs/billing.md 6)
    opts = BillingOptions(concurrency=workers)
    rate, _burst = opts.cs_rate_per_worker()
    assert workers * rate * opts.cs_window >= 2500 * 0.8 * 0.99


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
