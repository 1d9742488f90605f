"""The close run end to end (docs/billing.md 3b): DynamoDB Local, the ComputeStacks and WHMCS sandboxes over
HTTP, the in-process runner and the CLI. The cut-off lies 90 minutes ahead of now, so the close run really
reads before it, as the 21:20 schedule does before a 23:00 month-end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs.billing.messages import CLOSE
from cswhmcs.billing.usage import iso, period_of
from tests.support.billing_stack import Acct, BillingStack, cents

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tables: Any, cs_sandbox: Any, whmcs_sandbox: Any) -> BillingStack:
    return BillingStack(tables, cs_sandbox, whmcs_sandbox)


def _times() -> tuple[datetime, datetime, datetime]:
    """(the last collection, a day before it, the cut-off 90 minutes from now), all in this month."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    last = now - timedelta(minutes=10)
    cut = now + timedelta(minutes=90)
    if period_of(last - timedelta(days=1)) != period_of(cut):
        pytest.skip("too close to a month boundary for a same-month fixture")
    return last, last - timedelta(days=1), cut


def _rows(stack: BillingStack, acct: Acct, product: str, *, first: datetime, last: datetime, total: str) -> None:
    stack.add_usage(acct, product, start=first - timedelta(hours=3), end=last, total=total)


def test_accounts_read_by_the_close_run_are_billed_at_the_cut_off_without_a_request(stack: BillingStack) -> None:
    last, first, cut = _times()
    accts = [stack.add_account("USD"), stack.add_account("EUR"), stack.add_account("EUR", "USD")]
    for i, a in enumerate(accts):
        _rows(stack, a, "containerm", first=first, last=last, total="0.0205479" + str(i))
        _rows(stack, a, "storage", first=first, last=last, total="0.0068493")

    # When the close run reads before the cut-off
    closed = stack.run(cut, kind=CLOSE)
    assert closed.exit_code == 0 and closed.failed == [] and stack.whmcs.billable_items == []
    assert (closed.accounts_read, closed.accounts_complete, closed.accounts_incomplete) == (3, 3, 0)
    assert "3 complete" in closed.render()

    # And the month-end run comes at the cut-off
    billed = stack.run(cut)

    # Then every line is billed to the cent, and ComputeStacks was not asked anything
    assert billed.exit_code == 0 and billed.cs_requests == 0 and billed.accounts_read == 0
    assert len(stack.whmcs.billable_items) == 6
    period = period_of(cut)
    lo = datetime(2000, 1, 1, tzinfo=UTC)
    for a in accts:
        want = sorted(stack.expected(a, period, lo, cut).values())
        mine = [i for i in stack.whmcs.billable_items if f"[ref {a.cs_user_id}:{period}:" in i["description"]]
        assert sorted(Decimal(i["amount"]) for i in mine) == want


def test_an_account_whose_last_rows_were_not_committed_is_read_again(stack: BillingStack) -> None:
    last, first, cut = _times()
    done, lagging = stack.add_account("USD"), stack.add_account("USD")
    _rows(stack, done, "containerm", first=first, last=last, total="1.00")
    _rows(stack, lagging, "containerm", first=first, last=last - timedelta(hours=3), total="2.00")  # one row short
    _rows(stack, lagging, "storage", first=first, last=last, total="0.50")

    closed = stack.run(cut, kind=CLOSE)
    assert (closed.accounts_complete, closed.accounts_incomplete) == (1, 1)

    # When ComputeStacks commits the missing row after the close run read the account
    stack.add_usage(lagging, "containerm", start=last - timedelta(hours=3), end=last, total="2.00",
                    sp=stack._sp - 1)
    billed = stack.run(cut)

    # Then the month-end run reads only that account (the run's one credential check, then one read), and
    # bills its missing row with the rest
    assert billed.accounts_read == 1 and billed.cs_requests == 2
    got = {i["description"].split(":")[0]: Decimal(i["amount"]) for i in stack.whmcs.billable_items
           if f"[ref {lagging.cs_user_id}:" in i["description"]}
    assert got["Containerm"] == cents(Decimal("2.00") * 9) and got["Storage"] == cents(Decimal("0.50") * 9)


def test_cli_close_run(stack: BillingStack, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    from cswhmcs.cli import main
    from cswhmcs.config import get_settings

    last, first, cut = _times()
    acct = stack.add_account("USD")
    _rows(stack, acct, "containerm", first=first, last=last, total="1.25")
    for key, value in stack.settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(key, value.get_secret_value() if hasattr(value, "get_secret_value") else str(value))
    get_settings.cache_clear()

    assert main(["billing", "run", "--close", "--as-of", iso(cut)]) == 0
    out = capsys.readouterr().out
    assert "close as of" in out and "1 complete" in out and stack.whmcs.billable_items == []
    with pytest.raises(SystemExit) as refused:  # one mode at a time
        main(["billing", "run", "--close", "--collect", "--as-of", iso(cut)])
    assert refused.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(["billing", "run", "--as-of", iso(cut)]) == 0
    assert "0 read from ComputeStacks" in capsys.readouterr().out
    assert [Decimal(i["amount"]) for i in stack.whmcs.billable_items] == [Decimal("11.25")]
