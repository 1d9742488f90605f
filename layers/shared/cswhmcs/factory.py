"""The one place that builds the upstream clients from settings, and where ComputeStacks credentials
come from.

Every caller (the API routes' ``Deps``, the billing planner and worker, ``build_runtime``, the CLI,
the open-credit retry) builds its clients here, so a client always has the configured timeouts,
registers the secret values with the log redaction, the billing receiver's client (``receiver_client``)
signs with the SIGNING_SECRET values of the settings it follows (``signing_secrets_for``) and, for
ComputeStacks, a client takes its credential pair from a ``CredentialSource``:

* ``SecretCredentials`` follows the cached settings (``config.get_settings``: Secrets Manager
  re-read every 5 minutes). After a 401 it re-reads the secret at once, bypassing the cache, and
  offers the new pair only if it differs. A rejected pair is remembered for the life of the process
  and never sent again (each try counts towards ComputeStacks' lockout of the credential's owner
  after 5 failures): requests then fail at once with "ComputeStacks rejected the API credentials."
  while the secret is re-read at most every ``RECHECK_SECONDS`` to see whether it changed.
* ``SettingsCredentials`` is the same for settings built by hand (tests, tools): nothing to re-read.

Only a fingerprint of a pair is kept in that memory (``fingerprint``): PBKDF2 of the secret, salted
with the URL and key, so that neither memory dumps nor the ledger (billing's run-level checks,
``cswhmcs.billing.credentials``) hold anything that gives the secret back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cswhmcs.observability import logger, register_secret_values

if TYPE_CHECKING:
    from cswhmcs.adapters.computestacks import ComputeStacksClient, CredentialSource
    from cswhmcs.adapters.receiver import ReceiverClient
    from cswhmcs.adapters.whmcs import WhmcsClient
    from cswhmcs.config import Settings, _CachedSettings

Pair = tuple[str, str]
RECHECK_SECONDS = 45.0  # a known-rejected secret is re-read at most this often (to see a rotation)
# A refused pair is not sent again for this long: ComputeStacks locks the credential's owner for 4 hours after 5
# failed logins (reference computestacks-api.md section 1.2), and during the lock even the right secret is refused;
# after it the same pair is tried once more, so the integration recovers without anyone restarting it.
FORGET_REJECTED_AFTER = 4 * 3600.0 + 300.0
_FINGERPRINT_ROUNDS = 20_000


@lru_cache(maxsize=64)
def _fingerprint(url: str, key: str, secret: str) -> str:
    salt = b"cswhmcs/computestacks-credential\0" + url.encode() + b"\0" + key.encode()
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, _FINGERPRINT_ROUNDS).hex()[:32]


def fingerprint(url: str, pair: Pair) -> str:
    """A stable, non-reversible name for a credential pair of one ComputeStacks (safe to store)."""
    return _fingerprint(url.rstrip("/"), pair[0], pair[1])


class RejectedPairs:
    """Fingerprints of pairs ComputeStacks refused in this process (process-wide by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, forget_after: float | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rejected: dict[str, float] = {}  # fingerprint -> when it was refused
        self._last_recheck = -float("inf")
        self.forget_after = FORGET_REJECTED_AFTER if forget_after is None else forget_after

    def add(self, url: str, pair: Pair) -> None:
        with self._lock:
            self._rejected[fingerprint(url, pair)] = self._clock()

    def __contains__(self, item: tuple[str, Pair]) -> bool:
        url, pair = item
        if not self._rejected:  # the usual case: no fingerprint (PBKDF2) to compute on a function's first call
            return False
        key = fingerprint(url, pair)
        with self._lock:
            when = self._rejected.get(key)
            if when is None:
                return False
            if self._clock() - when >= self.forget_after:
                # ComputeStacks' lockout has lifted by now: the pair may be right after all (a 401 while the
                # owner was locked refuses even the correct secret), so it gets one more try.
                del self._rejected[key]
                return False
            return True

    def recheck_due(self, every: float) -> bool:
        """True at most once per ``every`` seconds (a forced re-read of a known-rejected secret)."""
        with self._lock:
            now = self._clock()
            if now - self._last_recheck < every:
                return False
            self._last_recheck = now
            return True

    def clear(self) -> None:
        with self._lock:
            self._rejected.clear()
            self._last_recheck = -float("inf")


REJECTED = RejectedPairs()


def _pair(settings: Settings) -> Pair:
    return settings.CS_API_KEY.get_secret_value(), settings.CS_API_SECRET.get_secret_value()


class _Credentials:
    """What both credential sources share: the pairs ComputeStacks rejected (``_memory``, per ``url``)
    are not sent again by this process."""

    url: str
    _memory: RejectedPairs

    def usable(self, pair: Pair) -> bool:
        return (self.url, pair) not in self._memory

    def mark_rejected(self, pair: Pair) -> None:
        """Rejected elsewhere (another billing worker of the run): not sent by this process either."""
        self._memory.add(self.url, pair)

    def __repr__(self) -> str:  # never the pair
        return f"{type(self).__name__}()"


class SettingsCredentials(_Credentials):
    """The pair of fixed settings: after a 401 nothing else to try, and the pair is not sent again."""

    def __init__(self, settings: Settings, *, memory: RejectedPairs | None = None) -> None:
        self.url = settings.CS_API_URL
        self._pair = _pair(settings)
        self._memory = REJECTED if memory is None else memory

    def current(self) -> Pair:
        return self._pair

    def rejected(self, used: Pair) -> Pair | None:
        self._memory.add(self.url, used)
        logger.warning("ComputeStacks rejected the API credentials; they are not sent again by this process")
        return None


class SecretCredentials(_Credentials):
    """The pair of the cached settings, which follow Secrets Manager (see the module docstring)."""

    def __init__(self, cache: _CachedSettings | None = None, *, url: str | None = None,
                 memory: RejectedPairs | None = None, recheck_every: float | None = None) -> None:
        if cache is None:
            from cswhmcs.config import get_settings

            cache = get_settings
        self._cache = cache
        self.url = url if url is not None else cache().CS_API_URL
        self._memory = REJECTED if memory is None else memory
        self.recheck_every = recheck_every

    def current(self) -> Pair:
        pair = _pair(self._cache())
        every = RECHECK_SECONDS if self.recheck_every is None else self.recheck_every
        if (self.url, pair) in self._memory and self._memory.recheck_due(every):
            pair = _pair(self._cache.refresh())
        return pair

    def rejected(self, used: Pair) -> Pair | None:
        self._memory.add(self.url, used)
        fresh = _pair(self._cache.refresh())
        if fresh == used or not all(fresh) or (self.url, fresh) in self._memory:
            logger.warning("ComputeStacks rejected the API credentials and the secret holds no other pair; "
                           "they are not sent again by this process")
            return None
        logger.info("ComputeStacks rejected the API credentials; the secret was re-read and holds a new pair")
        return fresh


def credentials_for(settings: Settings) -> CredentialSource:
    """``SecretCredentials`` for the cached settings (they follow the secret), otherwise the pair of
    these settings."""
    from cswhmcs.config import get_settings

    if get_settings.produced(settings):
        return SecretCredentials(get_settings, url=settings.CS_API_URL)
    return SettingsCredentials(settings)


def computestacks_client(settings: Settings, *, pacer: Any = None, credentials: CredentialSource | None = None,
                         **kw: Any) -> ComputeStacksClient:
    from cswhmcs.adapters.computestacks import ComputeStacksClient

    settings.require("CS_API_URL", "CS_API_KEY", "CS_API_SECRET")
    register_secret_values(*settings.secret_values())
    kw.setdefault("timeout", settings.CS_TIMEOUT)
    kw.setdefault("connect_timeout", settings.CONNECT_TIMEOUT)
    return ComputeStacksClient(settings.CS_API_URL, credentials=credentials or credentials_for(settings),
                               pacer=pacer, **kw)


def whmcs_client(settings: Settings, *, pacer: Any = None, **kw: Any) -> WhmcsClient:
    from cswhmcs.adapters.whmcs import WhmcsClient

    settings.require("WHMCS_API_URL", "WHMCS_API_IDENTIFIER", "WHMCS_API_SECRET")
    register_secret_values(*settings.secret_values())
    kw.setdefault("timeout", settings.WHMCS_TIMEOUT)
    kw.setdefault("connect_timeout", settings.CONNECT_TIMEOUT)
    return WhmcsClient(settings.WHMCS_API_URL, settings.WHMCS_API_IDENTIFIER.get_secret_value(),
                       settings.WHMCS_API_SECRET.get_secret_value(),
                       settings.WHMCS_API_ACCESS_KEY.get_secret_value() or None, pacer=pacer, **kw)


# A receiver request carries up to 100 items (each a database transaction in WHMCS): it may take longer than
# one WHMCS API call, so it gets twice WHMCS_TIMEOUT (20 s by default), within the 25 s every setting keeps to.
RECEIVER_TIMEOUT_FACTOR = 2.0
RECEIVER_MAX_TIMEOUT = 25.0


def signing_secrets_for(settings: Settings) -> Callable[[], list[bytes]]:
    """The active SIGNING_SECRET values, read at every call: those of the cached settings when these came
    from them (a rotated secret is followed, like ``credentials_for``), otherwise these settings' own."""
    from cswhmcs.config import get_settings

    if get_settings.produced(settings):
        return lambda: get_settings().signing_secrets()
    return settings.signing_secrets


def receiver_client(settings: Settings, *, pacer: Any = None, **kw: Any) -> ReceiverClient | None:
    """The billing receiver's client (API.md section 8), or None when WHMCS_RECEIVER_URL is not set."""
    if not settings.WHMCS_RECEIVER_URL:
        return None
    from cswhmcs.adapters.receiver import ReceiverClient

    settings.require("SIGNING_SECRET")
    register_secret_values(*settings.secret_values())
    kw.setdefault("timeout", min(RECEIVER_MAX_TIMEOUT, RECEIVER_TIMEOUT_FACTOR * settings.WHMCS_TIMEOUT))
    kw.setdefault("connect_timeout", settings.CONNECT_TIMEOUT)
    return ReceiverClient(settings.WHMCS_RECEIVER_URL, signing_secrets_for(settings), pacer=pacer, **kw)


def reset() -> None:
    """Forget rejected pairs (tests, `cswhmcs serve` after an environment change)."""
    REJECTED.clear()
