"""What an API action gets: the ``Request`` (route, payload, settings) and its ``Deps``.

``Deps`` builds the clients and tables lazily, once per execution environment and thread (warm
invocations reuse them); its properties are typed by the ports (``cswhmcs.ports``), so the logic that
uses them never depends on a concrete adapter. ``get_deps`` gives the current one, rebuilt when the
settings change (a rotated secret); ``cswhmcs.api`` is the only caller in production.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from cswhmcs.config import Settings, get_settings
from cswhmcs.observability import register_secret_values

if TYPE_CHECKING:
    from cswhmcs import ports
    from cswhmcs.adapters.receiver import ReceiverClient
    from cswhmcs.billing.ledger import Ledger

T = TypeVar("T")


@dataclass
class Deps:
    """What actions use, created lazily once per execution environment (warm invocations reuse them)."""

    settings: Settings
    # Per thread: boto3 resources are not thread-safe. Lambda runs one thread; `cswhmcs serve` several.
    _local: threading.local = field(default_factory=threading.local)

    def _get(self, name: str, factory: Callable[[], T]) -> T:
        cache = self._local.__dict__.setdefault("cache", {})
        if name not in cache:
            cache[name] = factory()
        value: T = cache[name]
        return value

    @property
    def ddb(self) -> Any:
        """The boto3 DynamoDB resource of the API routes (short timeouts)."""
        from cswhmcs.adapters.dynamo import dynamodb_resource

        return self._get("ddb", lambda: dynamodb_resource(self.settings, for_api=True))

    @property
    def accounts(self) -> ports.AccountsRepo:
        from cswhmcs.adapters.dynamo import AccountsRepo

        return self._get("accounts", lambda: AccountsRepo.from_settings(self.settings, self.ddb))

    @property
    def replay_guard(self) -> ports.ReplayGuard:
        from cswhmcs.adapters.dynamo import ReplayGuard

        return self._get("replay", lambda: ReplayGuard.from_settings(self.settings, self.ddb))

    @property
    def ledger(self) -> Ledger:
        """The billing ledger (overview figures, overdue usage) on this thread's resource: one Table per thread,
        since boto3 builds the Table's class anew on every ``resource.Table`` (built per overview, it was 6 % of
        `cswhmcs serve`'s CPU in the loopback load run, where a quarter of the requests are overviews)."""
        from cswhmcs.billing.ledger import Ledger

        return self._get("ledger", lambda: Ledger.from_settings(self.settings, self.ddb))

    @property
    def order_credits(self) -> Any:
        """The deposit credits' records (``adapters.dynamo.OrderCreditRecords``). Typed ``Any`` until
        ``cli._cmd_credits`` stops reusing one loop variable for an ``OpenOrder`` and an outcome dict."""
        from cswhmcs.adapters.dynamo import OrderCreditRecords

        return self._get("order_credits", lambda: OrderCreditRecords.from_settings(self.settings, self.ddb))

    @property
    def cs(self) -> ports.ComputeStacks:
        from cswhmcs import factory

        self.settings.require("CS_API_URL", "CS_API_KEY", "CS_API_SECRET")
        return self._get("cs", lambda: factory.computestacks_client(self.settings))

    @property
    def whmcs(self) -> ports.Whmcs:
        from cswhmcs import factory

        self.settings.require("WHMCS_API_URL", "WHMCS_API_IDENTIFIER", "WHMCS_API_SECRET")
        return self._get("whmcs", lambda: factory.whmcs_client(self.settings))

    @property
    def receiver(self) -> ReceiverClient | None:
        """The billing receiver's client (API.md section 8), or None when WHMCS_RECEIVER_URL is not set."""
        from cswhmcs import factory

        return self._get("receiver", lambda: factory.receiver_client(self.settings))


@dataclass
class Request:
    """One signed, parsed API request, as the route's action gets it."""

    route: str
    payload: dict[str, Any]
    settings: Settings
    deps: Deps


Action = Callable[[Request], dict[str, Any]]

_deps: Deps | None = None


def get_deps() -> Deps:
    global _deps
    settings = get_settings()
    if _deps is None or _deps.settings is not settings:
        # New settings (a rotated secret, re-read every 5 minutes or at once after ComputeStacks refused
        # the pair): new clients.
        _deps = Deps(settings)
        register_secret_values(*settings.secret_values())
    return _deps


def reset_deps() -> None:
    """Forget cached settings, clients and rejected credentials (tests, `cswhmcs serve` after an
    environment change)."""
    global _deps
    from cswhmcs import factory

    _deps = None
    get_settings.cache_clear()
    factory.reset()
