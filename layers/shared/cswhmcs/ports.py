"""The small typed ports the logic depends on, instead of the concrete clients and tables.

Each Protocol names only what its callers use; the adapters (``adapters/computestacks.py``,
``adapters/whmcs.py``, ``adapters/dynamo.py``, ``billing/ledger.py``) implement them, and so do the tests'
fakes (``tests/support``), which mypy checks against these same Protocols.

Parameters before ``/`` are positional-only so an implementation may name them as it likes. Every
method raises ``cswhmcs.errors`` types only (``DomainError`` subclasses): a logic module never needs to
import an adapter to decide what an answer meant. The decisions it does make:

* ``errors.EmailTaken`` (a ``UpstreamRejected``): ComputeStacks refused a user because its email
  belongs to another user (``ComputeStacks.create_user``, ``update_user``).
* ``errors.UpstreamApiError`` (a ``UpstreamError``): WHMCS answered with its own ``result: error``, a
  definite refusal, so nothing was applied (any WHMCS call; ``adapters.whmcs.WhmcsApiError`` is one).
* ``errors.UpstreamTimeout`` with ``maybe_applied``: an effect that may have happened.

Nothing here is imported at run time by the adapters: the Protocols are structural.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cswhmcs.adapters.computestacks import UserSelector
    from cswhmcs.adapters.dynamo import AccountMapping
    from cswhmcs.adapters.receiver import ReceiverAnswer, ReceiverItem
    from cswhmcs.adapters.whmcs import Currency
    from cswhmcs.billing.grouping import AccountState, Line

User = dict[str, Any]  # a ComputeStacks user's show body (reference computestacks-api.md section 2)


# ---------------------------------------------------------------------- ComputeStacks


class ComputeStacksUsage(Protocol):
    """What billing reads from ComputeStacks."""

    def get_user(self, sel: UserSelector, /) -> User | None:
        """The user, or None when ComputeStacks has no such user."""
        ...

    def iter_billing_usages(self, user_id: int, /, *, per_page: int = ...) -> Iterator[dict[str, Any]]:
        """The user's usage rows, newest first; raises ``NotFound`` (while iterating) for an unknown user."""
        ...


class ComputeStacks(ComputeStacksUsage, Protocol):
    """The ComputeStacks admin API as the account actions, the connection test and billing use it."""

    def get_user(self, sel: UserSelector, /, *, include_balance: bool = ...) -> User | None:
        """The user (``include_balance``: with ``unprocessed_usage``), or None when there is none."""
        ...

    def create_user(self, fields: Mapping[str, Any], /) -> User:
        """Creates the user (sent at most once). ``EmailTaken`` when the email belongs to another user;
        ``UpstreamTimeout(maybe_applied=True)`` when it may have been created without our hearing so."""
        ...

    def update_user(self, sel: UserSelector, fields: Mapping[str, Any], /) -> User | None:
        """PATCHes absolute values; the updated user, or None when there is no such user."""
        ...

    def create_sso_token(self, sel: UserSelector, /) -> dict[str, Any] | None:
        """``{username, token, expires}``, or None when there is no such user."""
        ...

    def iter_users(self, *, per_page: int = ..., include_balance: bool = ...) -> Iterator[User]:
        """Every user, admins included, all pages."""
        ...

    def list_users_page(self, page: int, /, *, per_page: int) -> tuple[list[User], bool]:
        """One page of users and whether another page follows."""
        ...

    def iter_user_groups(self, *, per_page: int = ...) -> Iterator[dict[str, Any]]:
        ...

    def list_locations(self) -> list[dict[str, Any]]:
        """Also the cheapest credential check (the connection test, billing's run-level gate)."""
        ...


# ---------------------------------------------------------------------- WHMCS


class WhmcsBilling(Protocol):
    """What billing asks of the WHMCS API (the planner and the worker)."""

    def version(self) -> str | None:
        """The WHMCS version, or None when it cannot be told (then "before 8.2" is assumed)."""
        ...

    def get_currencies(self) -> list[Currency]:
        ...

    def get_client(self, client_id: int, /) -> dict[str, Any]:
        """GetClientsDetails' client: ``currency`` is the currency id (int), ``credit`` a Decimal."""
        ...

    def add_billable_item(self, *, client_id: int, description: str, amount: Decimal, quantity: Decimal,
                          unit_mode: str, invoice_action: str, due_date: date | None) -> int:
        """Creates one billable item (sent at most once); its id. ``UpstreamApiError``: refused, nothing
        created; ``UpstreamTimeout(maybe_applied=True)``: may have been created."""
        ...


class Whmcs(WhmcsBilling, Protocol):
    """The WHMCS API as the account actions, the deposit credits (``credit.py``) and billing use it."""

    def get_health_status(self) -> dict[str, Any]:
        """The connection test's credential check."""
        ...

    def get_clients_products(self, *, serviceid: int | None = ..., clientid: int | None = ...,
                             pid: int | None = ..., username: str | None = ...) -> list[dict[str, Any]]:
        ...

    def get_products(self, *, pid: int | Iterable[int] | None = ..., module: str | None = ...,
                     gid: int | None = ...) -> list[dict[str, Any]]:
        ...

    def get_invoice(self, invoice_id: int, /) -> dict[str, Any]:
        ...

    def get_credits(self, client_id: int, /) -> list[dict[str, Any]]:
        ...

    def add_credit(self, client_id: int, amount: Decimal, description: str, /) -> Decimal:
        """Adds credit (sent at most once); the new balance."""
        ...

    # The overdue-usage suspensions (billing/overdue.py, API.md section 9).

    def get_invoices(self, *, status: str | None = ..., userid: int | None = ..., orderby: str | None = ...,
                     order: str | None = ..., limitstart: int = ..., limitnum: int | None = ...
                     ) -> tuple[list[dict[str, Any]], int]:
        """One page of invoice rows (no items) and the total number that match."""
        ...

    def iter_invoices(self, *, status: str | None = ..., userid: int | None = ..., orderby: str | None = ...,
                      order: str | None = ...) -> Iterator[dict[str, Any]]:
        """Every matching invoice row, page after page (the caller may stop early)."""
        ...

    def module_suspend(self, service_id: int, reason: str, /) -> None:
        """ModuleSuspend with ``suspendreason`` (sent at most once); ``UpstreamApiError`` when WHMCS or the
        module refused it (nothing changed)."""
        ...

    def module_unsuspend(self, service_id: int, /) -> None:
        """ModuleUnsuspend (sent at most once)."""
        ...

    # The service username kept on the ComputeStacks email (accounts/webhook.py).

    def update_client_product(self, service_id: int, /, **fields: Any) -> None:
        """UpdateClientProduct of the service's fields (e.g. ``serviceusername``)."""
        ...


class OverdueLedger(Protocol):
    """The ledger as the overdue-usage suspensions use it (``billing/overdue.py``): which invoice lines the
    backend billed, and the record of each suspension and lift (``billing/ledger.py``)."""

    def billed_lines(self, keys: Iterable[tuple[str, int]], /) -> dict[str, dict[str, Any]]:
        """``(ref, billable id)`` pairs -> the done lines among them that carry that billable id, by ref."""
        ...

    def suspension(self, client_id: int, service_id: int, invoice_id: int, /) -> dict[str, Any] | None:
        ...

    def client_suspensions(self, client_id: int, /) -> list[dict[str, Any]]:
        ...

    def held_suspensions(self) -> Iterator[dict[str, Any]]:
        """Every suspension this backend made and has not lifted (sparse index)."""
        ...

    def claim_suspension(self, client_id: int, service_id: int, invoice_id: int, reason: str, /) -> bool:
        ...

    def finish_suspension(self, client_id: int, service_id: int, invoice_id: int, /) -> None:
        ...

    def fail_suspension(self, client_id: int, service_id: int, invoice_id: int, error: str, /) -> None:
        ...

    def claim_lift(self, record: dict[str, Any], /) -> bool:
        ...

    def finish_lift(self, record: dict[str, Any], outcome: str, by: str, /) -> None:
        ...

    def release_lift(self, record: dict[str, Any], error: str, /) -> None:
        ...


class BillingReceiver(Protocol):
    """The module's billing receiver (API.md section 8): a ref creates at most one item, ever, so a send
    whose outcome is unknown (``ReceiverUnknownOutcome``) is simply sent again."""

    def send(self, items: list[ReceiverItem], /) -> list[ReceiverAnswer]:
        """One answer per item, in order."""
        ...


# ---------------------------------------------------------------------- storage


class AccountsRepo(Protocol):
    """The WHMCS service -> ComputeStacks user mappings (the accounts table)."""

    def get(self, service_id: int, /) -> AccountMapping | None:
        ...

    def put(self, mapping: AccountMapping, /) -> AccountMapping:
        """Stores a mapping; an existing one of the same service to the same user is kept (and returned)."""
        ...

    def update_fields(self, service_id: int, /, **fields: Any) -> None:
        """Sets fields of an existing mapping (e.g. ``email``)."""
        ...


class AccountsScan(Protocol):
    """Every mapping, a page at a time (the billing planner)."""

    def scan_pages(self, *, page_size: int = ..., segment: int = ..., total_segments: int = ...
                   ) -> Iterator[list[AccountMapping]]:
        ...


class ReplayGuard(Protocol):
    def accept(self, signature_hex: str, route: str, /) -> None:
        """Remembers the signature; ``Unauthorized`` (signature_replayed) when it was seen before."""
        ...


class Ledger(Protocol):
    """The billing ledger as the worker uses it: one account's state and its finished lines."""

    @property
    def MAX_RECORDS_PER_WRITE(self) -> int:
        """The most lines ``save_with_records`` takes at once."""
        ...

    def load(self, cs_user_id: int, /) -> AccountState:
        ...

    def save(self, state: AccountState, /) -> None:
        """Conditional on the version read; ``StateConflict`` when another writer won."""
        ...

    def save_with_record(self, state: AccountState, record: Line, /) -> None:
        ...

    def save_with_records(self, state: AccountState, records: list[Line], /) -> None:
        ...

    def get_line(self, cs_user_id: int, period: str, product_id: int, /) -> Line | None:
        ...

    def mark_done_late(self, line: Line, billable_id: int, /) -> bool:
        ...
