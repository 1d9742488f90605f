"""Month-end billing through the REAL billing receiver (API.md section 8): `billing.php` under `php -S` on a
throwaway MariaDB, the WHMCS sandbox on the same database (what the receiver creates is what the sandbox
shows), a fault proxy between the backend and the receiver, DynamoDB Local and the ComputeStacks sandbox.

Whatever is lost between the backend and WHMCS (answers dropped after the PHP side committed, connections
dropped before, 502/504 proxy pages, HTML instead of JSON): every line is billed exactly once, no line ever
needs an operator, the last run exits 0 and a re-run creates nothing. Without WHMCS_RECEIVER_URL the same
data goes through AddBillableItem as before.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cswhmcs.billing.options import BillingOptions
from cswhmcs.billing.run import Summary
from cswhmcs.billing.usage import iso
from sandboxes.faultproxy import FaultProxy
from sandboxes.mariadb import available as mariadb_available
from sandboxes.receiver import ReceiverServer
from sandboxes.whmcsdb import WhmcsDatabase
from tests.conftest import SIGNING_SECRET
from tests.support.billing_stack import OCT_END, RATES, Acct, BillingStack, cents

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("php") is None or not mariadb_available(),
                       reason="the receiver needs php-cli and MariaDB (apt-get install php-cli php-mysql "
                              "php-illuminate-database mariadb-server)"),
]

OCT_START = datetime(2026, 10, 1, tzinfo=UTC)
LAST_DAYS = OCT_END - timedelta(days=4)
# Pacing off, 4 accounts at once, 3 accounts per receiver call: several receiver requests run concurrently.
FAST = BillingOptions(cs_limit=10**7, whmcs_rate=10_000, whmcs_burst=100, concurrency=4, batch_accounts=3)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def whmcs_db(fresh_whmcs_db: WhmcsDatabase) -> WhmcsDatabase:
    return fresh_whmcs_db


@pytest.fixture
def db_whmcs(whmcs_db: WhmcsDatabase) -> Iterator[Any]:
    """The WHMCS sandbox on the receiver's database; the server record's Access Hash is the signing secret."""
    from sandboxes.whmcs import WhmcsSandbox

    sb = WhmcsSandbox(db=whmcs_db).start()
    sb.set_receiver_servers([SIGNING_SECRET])
    yield sb
    sb.stop()


@pytest.fixture
def receiver(whmcs_db: WhmcsDatabase, db_whmcs: Any) -> Iterator[ReceiverServer]:
    server = ReceiverServer(whmcs_db, workers=4).start()
    yield server
    server.stop()


@pytest.fixture
def proxy(receiver: ReceiverServer) -> Iterator[FaultProxy]:
    with FaultProxy(receiver.url) as p:
        yield p


@pytest.fixture
def stack(tables: Any, cs_sandbox: Any, db_whmcs: Any, proxy: FaultProxy) -> BillingStack:
    return BillingStack(tables, cs_sandbox, db_whmcs, WHMCS_RECEIVER_URL=proxy.url)


# ---------------------------------------------------------------------- data and checks


def seed(stack: BillingStack, n: int = 20) -> list[Acct]:
    """``n`` accounts in USD and EUR, two products each; the last one a ComputeStacks user in EUR whose WHMCS
    client pays in USD (the backend guesses EUR from the mapping; the receiver says USD)."""
    accts = []
    for i in range(n):
        cs_cur = "USD" if i % 2 == 0 else "EUR"
        acct = stack.add_account(cs_cur, "USD" if i == n - 1 else None)
        stack.add_usage(acct, "containerm", start=LAST_DAYS, end=OCT_END, total=("0.02054795", "0.0185")[i % 2])
        stack.add_usage(acct, "storage", start=OCT_START, end=OCT_END, total="0.00712329",
                        every=timedelta(days=1), qty="2")
        accts.append(acct)
    assert accts[-1].cs_currency != accts[-1].client_currency
    return accts


def product_of(item: dict[str, Any]) -> str:
    return str(item["description"]).split(":")[0].split(" (")[0].lower()


def expected(stack: BillingStack, accts: list[Acct]) -> dict[tuple[int, str], Decimal]:
    """(cs user, product) -> amount in the client's currency, computed from the rows independently."""
    return {(a.cs_user_id, p): v for a in accts
            for p, v in stack.expected(a, "2026-10", OCT_START - timedelta(days=1), OCT_END).items()}


def billed_once(stack: BillingStack, db: WhmcsDatabase, accts: list[Acct], *, via_receiver: bool = True) -> None:
    """Every line billed exactly once, with the right amount; on the receiver path every item has its ref row."""
    by_ref = stack.items_by_ref()
    assert {ref: len(items) for ref, items in by_ref.items() if len(items) != 1} == {}
    got = {(int(ref.split(":")[0]), product_of(item)): Decimal(item["amount"]) for ref, (item,) in by_ref.items()}
    assert got == expected(stack, accts)
    refs = {row["ref"]: row for row in db.receiver_refs()}
    if not via_receiver:
        assert refs == {}
        return
    assert set(refs) == set(by_ref)
    for ref, (item,) in by_ref.items():
        assert int(refs[ref]["billableid"]) == int(item["id"]), ref
        assert refs[ref]["amount"] == item["amount"]


def nobody_needed(summary: Summary) -> None:
    assert summary.attention == [] and summary.open_attention == 0


def cli_env(stack: BillingStack, monkeypatch: pytest.MonkeyPatch, *, receiver: bool = True) -> None:
    from cswhmcs.config import get_settings

    for key, value in stack.settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(key, value.get_secret_value() if hasattr(value, "get_secret_value") else str(value))
    if not receiver:
        monkeypatch.delenv("WHMCS_RECEIVER_URL", raising=False)
    monkeypatch.setenv("BILLING_WHMCS_RATE", "1000")  # pacing off: the tests are about outcomes
    monkeypatch.setenv("CS_RATE_LIMIT", "1000000")
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    from cswhmcs.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def cli(*args: str) -> int:
    from cswhmcs.cli import main

    return int(main(["billing", *args]))


# ---------------------------------------------------------------------- a. clean


def test_month_end_through_the_receiver_bills_every_line_once_without_the_whmcs_api(
        stack: BillingStack, whmcs_db: WhmcsDatabase, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Given 20 accounts in two currencies, one of them billed in another currency than guessed
    accts = seed(stack)
    cli_env(stack, monkeypatch)
    stack.whmcs.reset_requests()

    # When the operator runs the month-end
    code = cli("run", "--as-of", iso(OCT_END))
    out = capsys.readouterr().out

    # Then every line is billed once, through the receiver, and nothing needs an operator
    assert code == 0, out
    billed_once(stack, whmcs_db, accts)
    assert cli("attention") == 0
    actions = Counter(stack.whmcs.actions_called())
    assert actions["AddBillableItem"] == 0 and actions["GetClientsDetails"] == 0, actions
    lines = len(expected(stack, accts))
    assert lines == 40 and proxy.request_count == 2  # 40 lines in 1 request, then the 2 reconverted ones
    assert "through the billing receiver" in out

    # When it is run again
    before, refs = stack.whmcs.billable_items, whmcs_db.receiver_refs()
    assert cli("run", "--as-of", iso(OCT_END)) == 0
    capsys.readouterr()

    # Then nothing is created
    assert stack.whmcs.billable_items == before and whmcs_db.receiver_refs() == refs
    assert "AddBillableItem" not in stack.whmcs.actions_called()


# ---------------------------------------------------------------------- b. faults on the wire


def arm_faults(proxy: FaultProxy) -> int:
    """18 faulted requests in a row: more than the receiver client's 3 attempts of several sends."""
    proxy.drop_answer_next(2)                        # PHP committed, the answer is lost
    proxy.drop_before_next(2)                        # the connection broke before the request reached PHP
    proxy.status_next(2, 502)                        # a proxy's 502, not forwarded
    proxy.status_next(2, 504, forward=True)          # a gateway timeout after PHP committed
    proxy.non_json_next(1)                           # a captive HTML page instead of the JSON (committed)
    proxy.drop_answer_next(1)
    proxy.status_next(2, 502, forward=True)
    proxy.status_next(1, 504)
    proxy.drop_before_next(1)
    proxy.drop_answer_next(2)
    proxy.non_json_next(1, forward=False)           # the HTML page without reaching PHP
    proxy.status_next(1, 504, forward=True)
    return proxy.pending_faults


def test_faults_between_backend_and_receiver_never_need_an_operator_and_never_bill_twice(
        stack: BillingStack, whmcs_db: WhmcsDatabase, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Given 20 accounts and 18 faults armed between the backend and the receiver
    accts = seed(stack)
    assert arm_faults(proxy) == 18

    # When the month-end runs (7 receiver calls of 3 accounts, 4 at once; each send tried 3 times)
    rt = stack.runtime(options=FAST)
    first = stack.run(OCT_END, runtime=rt)
    rt.close()

    # Then some sends ran out of tries: their accounts wait for the next run, and nobody is needed. (While
    # faults are queued every request is faulted, so no send succeeds; if the run used all 18 on at most
    # 8 sends (7 calls + 1 reconversion) of 3 tries, at least 2 sends used all 3 and gave up.)
    nobody_needed(first)
    assert first.failed, "the faults should have left some lines for the next run"
    assert all("sent again with the same ref" in why for _, _, why in first.failed), first.failed
    assert proxy.forwarded_count < proxy.request_count  # some never reached PHP, others did

    # When the runs an operator (or the next collection) would start follow, until one exits 0
    summaries = [first]
    while proxy.pending_faults and len(summaries) < 6:
        rt = stack.runtime(options=FAST)
        summaries.append(stack.run(OCT_END, runtime=rt))
        rt.close()
        nobody_needed(summaries[-1])
    assert proxy.pending_faults == 0
    cli_env(stack, monkeypatch)
    code = cli("run", "--as-of", iso(OCT_END))
    out = capsys.readouterr().out

    # Then every line is billed exactly once, nothing needs an operator, and the last run exits 0
    assert code == 0, out
    billed_once(stack, whmcs_db, accts)
    assert cli("attention") == 0
    assert sum(s.created_count for s in summaries) <= 40
    assert "AddBillableItem" not in stack.whmcs.actions_called()

    # And a re-run creates nothing
    before = stack.whmcs.billable_items
    assert cli("run", "--as-of", iso(OCT_END)) == 0
    assert stack.whmcs.billable_items == before and len(whmcs_db.receiver_refs()) == 40


# ---------------------------------------------------------------------- c. currency


def test_a_client_in_another_currency_is_refused_then_billed_once_in_its_currency_with_fresh_rates(
        stack: BillingStack, whmcs_db: WhmcsDatabase, proxy: FaultProxy) -> None:
    # Given a ComputeStacks user in EUR whose WHMCS client pays in GBP (the mapping says EUR), and a USD one
    eur_gbp = stack.add_account("EUR", "GBP")
    usd = stack.add_account("USD")
    for acct, total in ((eur_gbp, "0.04109589"), (usd, "0.02054795")):
        stack.add_usage(acct, "containerm", start=LAST_DAYS, end=OCT_END, total=total)
    # And WHMCS's GBP rate changes after the run read the rates (so only a fresh read sees it)
    fresh_gbp = Decimal("0.80123")

    def rate_changes(_n: int) -> None:
        stack.whmcs.set_currency_rate("GBP", fresh_gbp)

    # When the month-end runs
    rt = stack.runtime(options=FAST)
    summary = stack.run(OCT_END, runtime=rt, on_planned=rate_changes)
    rt.close()

    # Then the guessed EUR line was refused, converted with the fresh rate, and billed once in GBP
    assert summary.exit_code == 0 and summary.failed == [], summary.failed
    by_ref = stack.items_by_ref()
    [(gbp_ref, [gbp_item])] = [(r, i) for r, i in by_ref.items() if r.startswith(f"{eur_gbp.cs_user_id}:")]
    source = sum((r["total"] for r in eur_gbp.rows), Decimal(0))
    want = cents(source * fresh_gbp / RATES["EUR"])
    assert Decimal(gbp_item["amount"]) == want != cents(source * RATES["GBP"] / RATES["EUR"])
    assert int(gbp_item["clientid"]) == eur_gbp.client_id
    assert f"converted from {cents(source)} EUR at 1 EUR = " in gbp_item["description"]
    [ref_row] = [row for row in whmcs_db.receiver_refs() if row["ref"] == gbp_ref]
    assert ref_row["currency"] == "GBP" and ref_row["amount"] == str(want)
    assert int(ref_row["billableid"]) == int(gbp_item["id"])
    [(_, [usd_item])] = [(r, i) for r, i in by_ref.items() if r.startswith(f"{usd.cs_user_id}:")]
    assert Decimal(usd_item["amount"]) == cents(sum((r["total"] for r in usd.rows), Decimal(0)))
    # The client's currency came from the receiver's answer: no client lookup on the WHMCS API
    actions = Counter(stack.whmcs.actions_called())
    assert actions["GetClientsDetails"] == 0 and actions["AddBillableItem"] == 0
    assert proxy.request_count == 2  # the batch, then the converted line
    assert len(whmcs_db.billable_items()) == 2


# ---------------------------------------------------------------------- d. without the receiver


def test_without_the_receiver_url_the_same_data_goes_through_add_billable_item(
        stack: BillingStack, whmcs_db: WhmcsDatabase, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Given the same data, and WHMCS_RECEIVER_URL not set
    accts = seed(stack)
    stack.settings = stack.settings.model_copy(update={"WHMCS_RECEIVER_URL": None})
    cli_env(stack, monkeypatch, receiver=False)
    stack.whmcs.reset_requests()

    # When the month-end runs
    code = cli("run", "--as-of", iso(OCT_END))
    out = capsys.readouterr().out

    # Then one AddBillableItem per line (and one GetClientsDetails per client), nothing through the receiver
    assert code == 0, out
    billed_once(stack, whmcs_db, accts, via_receiver=False)
    actions = Counter(stack.whmcs.actions_called())
    assert actions["AddBillableItem"] == len(expected(stack, accts)) == 40
    assert actions["GetClientsDetails"] == len(accts)
    assert proxy.request_count == 0 and "through the billing receiver" not in out

