"""Deliberate product bugs, to prove that the schedules' checks catch each kind of failure (a check that
cannot fail proves nothing). Each mutant is a context manager that patches one product function."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_DOWN, Decimal
from typing import Any


@contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


@contextmanager
def resend_after_timeout() -> Iterator[None]:
    """The worker treats "WHMCS may have created it" as "not created": it sends the item again."""
    from cswhmcs.billing.grouping import ATTENTION
    from cswhmcs.billing.worker import AccountWorker

    original = AccountWorker._call_whmcs

    def call(self: Any, line: Any) -> tuple[str, int | None, str]:
        outcome, billable_id, reason = original(self, line)
        return ("failed", None, reason) if outcome == ATTENTION else (outcome, billable_id, reason)

    with _patched(AccountWorker, "_call_whmcs", call):
        yield


@contextmanager
def forget_oldest_row() -> Iterator[None]:
    """Reading usage drops the oldest row of every listing."""
    import cswhmcs.billing.worker as worker

    original = worker.read_new_rows

    def read(*args: Any, **kwargs: Any) -> Any:
        rows = original(*args, **kwargs)
        return rows[:-1]

    with _patched(worker, "read_new_rows", read):
        yield


@contextmanager
def drop_attention_lines() -> Iterator[None]:
    """A line whose fate is unknown is taken out of the state but never written down: nobody is told."""
    from cswhmcs.billing.grouping import ATTENTION
    from cswhmcs.billing.ledger import Ledger

    original = Ledger.save_with_record

    def save_with_record(self: Any, state: Any, record: Any) -> None:
        if record.status == ATTENTION:
            return self.save(state)
        return original(self, state, record)

    with _patched(Ledger, "save_with_record", save_with_record):
        yield


@contextmanager
def round_down() -> Iterator[None]:
    """Lines are rounded down instead of half-up."""
    import cswhmcs.billing.worker as worker

    with _patched(worker, "cents", lambda d: d.quantize(Decimal("0.01"), rounding=ROUND_DOWN)):
        yield


@contextmanager
def new_email_per_attempt() -> Iterator[None]:
    """Every create attempt makes up a new login email: a retried create makes a second user."""
    import cswhmcs.accounts.provisioning as provisioning

    original = provisioning.login_email
    counter = itertools.count()

    def login_email(params: Any, cs_api_url: str) -> str:
        local, _, host = original(params, cs_api_url).partition("@")
        return f"{local}.{next(counter)}@{host}"

    with _patched(provisioning, "login_email", login_email):
        yield


@contextmanager
def credit_without_checking() -> Iterator[None]:
    """A delivery after an interrupted one credits without asking WHMCS whether the credit arrived."""
    import cswhmcs.credit as credit

    with _patched(credit, "_already_credited", lambda *a, **k: False):
        yield


MUTANTS: dict[str, Callable[[], Any]] = {
    "resend_after_timeout": resend_after_timeout,
    "forget_oldest_row": forget_oldest_row,
    "drop_attention_lines": drop_attention_lines,
    "round_down": round_down,
    "new_email_per_attempt": new_email_per_attempt,
    "credit_without_checking": credit_without_checking,
}
