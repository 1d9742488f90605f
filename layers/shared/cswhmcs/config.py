"""Configuration: one pydantic model, validated at start, secrets re-read on a schedule.

Logic never reads ``os.environ``; it receives a ``Settings``. In AWS the secrets come from one
Secrets Manager secret (JSON object) named by ``CONFIG_SECRET_ARN``; locally and in tests they come
from the environment (API.md section 4). Secret values are ``SecretStr`` so that no repr, log line
or error message can print them. Every tunable of the functions (billing, queue URLs, rate limits)
is a field here, so that a wrong value stops the function at start with a message naming the
variable (never its value) instead of being ignored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator

from cswhmcs.errors import ConfigurationError

# Keys that may live in the Secrets Manager secret instead of the environment.
SECRET_KEYS = (
    "CS_API_KEY",
    "CS_API_SECRET",
    "WHMCS_API_IDENTIFIER",
    "WHMCS_API_SECRET",
    "WHMCS_API_ACCESS_KEY",
    "SIGNING_SECRET",
    "CS_WEBHOOK_TOKEN",
)

# How often every function re-reads the secret (Powertools Parameters' cache age), and how long a
# failed re-read waits before the next attempt (the last good value is used meanwhile).
SECRET_MAX_AGE = 300.0
SECRET_RETRY_AFTER_FAILURE = 30.0


class Settings(BaseModel):
    model_config = {"frozen": True, "extra": "ignore"}

    CS_API_URL: str = ""
    CS_API_KEY: SecretStr = SecretStr("")
    CS_API_SECRET: SecretStr = SecretStr("")
    WHMCS_API_URL: str = ""
    WHMCS_API_IDENTIFIER: SecretStr = SecretStr("")
    WHMCS_API_SECRET: SecretStr = SecretStr("")
    WHMCS_API_ACCESS_KEY: SecretStr = SecretStr("")
    SIGNING_SECRET: SecretStr = SecretStr("")
    # The secret `token` of /v1/hooks/cs-user (API.md section 4); empty: that route refuses everything.
    CS_WEBHOOK_TOKEN: SecretStr = SecretStr("")
    # Optional: the module's billing receiver (API.md section 8); unset: the WHMCS API's AddBillableItem.
    WHMCS_RECEIVER_URL: str | None = None
    # Optional: suspend a service whose usage invoice is this many days overdue (API.md section 9).
    OVERDUE_SUSPEND_DAYS: int | None = Field(default=None, ge=0, le=3650)

    AWS_ENDPOINT_URL_DYNAMODB: str | None = None
    ACCOUNTS_TABLE: str = "cswhmcs-accounts"
    LEDGER_TABLE: str = "cswhmcs-ledger"
    # The accepted request signatures (replay protection). IDEMPOTENCY_TABLE, its name before 0.3.0, is still
    # read when REPLAY_TABLE is not set (deprecated: old local environments).
    REPLAY_TABLE: str = "cswhmcs-replay"
    WORK_QUEUE_URL: str = ""

    BILLING_START: date | None = None
    BILLING_DUE_DAY: int = Field(default=1, ge=1, le=28)
    BILLING_INVOICE_ACTION: Literal["duedate", "nextcron"] = "duedate"
    # Billing tunables (docs/billing.md sections 6-7): BillingOptions.from_settings reads them.
    BILLING_CS_SHARE: float = Field(default=0.8, gt=0, le=1, allow_inf_nan=False)
    BILLING_WHMCS_RATE: float = Field(default=30.0, gt=0, le=10_000, allow_inf_nan=False)
    BILLING_PER_PAGE: int = Field(default=500, ge=1, le=10_000)
    WORKER_MAX_CONCURRENCY: int = Field(default=4, ge=1, le=1000)
    # Requests per 5 minutes ComputeStacks allows this backend (its Rack::Attack default: 2,500).
    CS_RATE_LIMIT: int = Field(default=2500, ge=1, le=10_000_000)

    # Upstream timeouts in seconds: far below API Gateway's 29 s integration limit.
    CS_TIMEOUT: float = Field(default=10.0, gt=0, le=25)
    WHMCS_TIMEOUT: float = Field(default=10.0, gt=0, le=25)
    CONNECT_TIMEOUT: float = Field(default=3.0, gt=0, le=10)
    # Signature freshness window (API.md section 1).
    SIGNATURE_TOLERANCE: int = 300

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        """A variable set to "" (a CloudFormation parameter left empty) means its default; values of
        plain settings are trimmed (secrets are taken as they are)."""
        if not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str) and key in cls.model_fields:
                if not value.strip():
                    continue
                if cls.model_fields[key].annotation is not SecretStr:
                    value = value.strip()
            out[key] = value
        legacy = data.get("IDEMPOTENCY_TABLE")
        if "REPLAY_TABLE" not in out and isinstance(legacy, str) and legacy.strip():
            out["REPLAY_TABLE"] = legacy.strip()
        return out

    @property
    def IDEMPOTENCY_TABLE(self) -> str:  # noqa: N802 - the old name of REPLAY_TABLE
        """Deprecated: ``REPLAY_TABLE``."""
        return self.REPLAY_TABLE

    @field_validator("CS_API_URL", "WHMCS_API_URL")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.strip().rstrip("/")

    @field_validator("WHMCS_RECEIVER_URL")
    @classmethod
    def _absolute_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in v):
            raise ValueError("must be an absolute http:// or https:// URL")
        return v

    def signing_secrets(self) -> list[bytes]:
        """Every active signing secret (comma-separated, so a secret can be rotated)."""
        raw = self.SIGNING_SECRET.get_secret_value()
        return [s.strip().encode() for s in raw.split(",") if s.strip()]

    def secret_values(self) -> list[str]:
        """Every secret value (for the log redaction). Not the key and identifier that go with them:
        they name a credential, and masking a short one would mangle ordinary log lines."""
        values = [s.decode() for s in self.signing_secrets()]
        for value in (self.CS_API_SECRET, self.WHMCS_API_SECRET, self.WHMCS_API_ACCESS_KEY, self.CS_WEBHOOK_TOKEN):
            values.append(value.get_secret_value())
        return [v for v in values if v]

    def require(self, *names: str) -> None:
        """Fail clearly (without printing any value) when a needed setting is empty."""
        missing = []
        for name in names:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not value:
                missing.append(name)
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigurationError(f"The backend is not configured: {', '.join(missing)} {verb} not set.")


def _describe(exc: ValidationError) -> str:
    """``NAME (why), ...``: the variables and what is wrong, never their values."""
    parts: list[str] = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "configuration"
        why = str(error.get("msg", "")).removeprefix("Value error, ")
        raw = error.get("input")
        if isinstance(raw, str | int | float) and str(raw) and str(raw) in why:
            why = ""  # a message quoting the value: name the variable only
        parts.append(f"{name} ({why[:120]})" if why else name)
    return ", ".join(dict.fromkeys(parts))


def validate_settings(env: Mapping[str, Any]) -> Settings:
    """Settings from these values; a bad value raises ``ConfigurationError`` naming the variable."""
    try:
        settings = Settings.model_validate(dict(env))
    except ValidationError as exc:
        raise ConfigurationError(f"Invalid configuration: {_describe(exc)}.") from None
    from cswhmcs.observability import register_secret_values

    register_secret_values(*settings.secret_values())
    return settings


def _secret_fields(raw: str | bytes) -> dict[str, str]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigurationError("The configuration secret is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ConfigurationError("The configuration secret is not a JSON object.")
    return {k: str(v) for k, v in data.items() if k in SECRET_KEYS and v is not None}


# Secrets Manager client timeouts (every function): see SecretReader.read.
SECRETS_CONNECT_TIMEOUT = 0.5
SECRETS_READ_TIMEOUT = 3.0


class SecretReader:
    """The configuration secret through Powertools Parameters (``SecretsProvider.get``, what
    ``parameters.get_secret`` uses): cached for ``max_age`` seconds; ``force`` bypasses the cache.

    The Secrets Manager client honours ``AWS_ENDPOINT_URL_SECRETSMANAGER`` (LocalStack, tests)."""

    def __init__(self, arn: str, *, endpoint: str | None = None, max_age: float = SECRET_MAX_AGE) -> None:
        self.arn = arn
        self.endpoint = endpoint or None
        self.max_age = max_age
        self._provider: Any = None

    def read(self, *, force: bool = False) -> str:
        if self._provider is None:
            import boto3
            from aws_lambda_powertools.utilities.parameters import SecretsProvider
            from botocore.config import Config

            # Read at the start of API requests (inside their 25 s) and of billing runs: a hanging
            # Secrets Manager costs ~8 s at most (2 attempts of 0.5 s to connect + 3 s to answer), never
            # boto3's default 60 s reads with retries; a failed re-read keeps the last good settings.
            config = Config(connect_timeout=SECRETS_CONNECT_TIMEOUT, read_timeout=SECRETS_READ_TIMEOUT,
                            retries={"total_max_attempts": 2, "mode": "standard"})
            client = boto3.client("secretsmanager", endpoint_url=self.endpoint, config=config) if self.endpoint \
                else boto3.client("secretsmanager", config=config)
            self._provider = SecretsProvider(boto3_client=client)
        value = self._provider.get(self.arn, max_age=self.max_age, force_fetch=force)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return str(value)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from this environment (and the secret it names), read now, without any cache."""
    env: dict[str, Any] = dict(os.environ if environ is None else environ)
    arn = env.get("CONFIG_SECRET_ARN")
    if arn:
        reader = SecretReader(arn, endpoint=env.get("AWS_ENDPOINT_URL_SECRETSMANAGER"), max_age=0)
        env.update(_secret_fields(_read_or_fail(reader, force=True)))
    return validate_settings(env)


def _read_or_fail(reader: SecretReader, *, force: bool) -> str:
    try:
        return reader.read(force=force)
    except Exception as exc:  # GetParameterError wraps botocore's; its text never holds the secret value
        raise ConfigurationError(f"The configuration secret could not be read ({type(exc).__name__}).") from None


class _CachedSettings:
    """The settings of this execution environment: validated at the first call, then reused.

    With a Secrets Manager secret every call asks Powertools Parameters for it (a dictionary lookup
    while its cache is younger than ``max_age``); when its text changed, new ``Settings`` are built,
    so a rotated credential reaches every warm function (API routes, planner, worker) within
    ``max_age``. ``refresh()`` re-reads at once, bypassing the cache (after ComputeStacks refused a
    credential). A failed re-read keeps the last good settings (a warning without values) and is
    tried again after ``retry_after`` seconds. Tests call ``get_settings.cache_clear()``.
    """

    def __init__(self, max_age: float = SECRET_MAX_AGE, *, retry_after: float = SECRET_RETRY_AFTER_FAILURE,
                 clock: Any = time.monotonic) -> None:
        self.max_age = max_age
        self.retry_after = retry_after
        self._clock = clock
        self._value: Settings | None = None
        self._raw: str | None = None
        self._reader: SecretReader | None = None
        self._retry_at = 0.0
        self._history: list[Settings] = []  # the last few values (kept alive, so identity means something)
        self._lock = threading.RLock()

    def __call__(self) -> Settings:
        with self._lock:
            if self._value is None:
                return self._load(force=False, initial=True)
            if self._reader is not None and self._clock() >= self._retry_at:
                return self._load(force=False, initial=False)
            return self._value

    def refresh(self) -> Settings:
        """Re-read the environment and the secret now (bypassing the cache); the last good settings
        if that fails."""
        with self._lock:
            return self._load(force=True, initial=self._value is None)

    def is_current(self, settings: Settings) -> bool:
        """Are these the latest settings of this cache?"""
        with self._lock:
            return self._value is not None and settings is self._value

    def produced(self, settings: Settings) -> bool:
        """Were these settings produced by this cache (the latest or a recent one)? Their holder may
        follow the cache (``cswhmcs.factory.credentials_for``)."""
        with self._lock:
            return any(settings is s for s in self._history)

    def cache_clear(self) -> None:
        with self._lock:
            self._value, self._raw, self._reader, self._retry_at = None, None, None, 0.0
            self._history = []

    def _load(self, *, force: bool, initial: bool) -> Settings:
        arn = os.environ.get("CONFIG_SECRET_ARN")
        if not arn:
            self._reader = None
            if initial or force:
                self._keep(validate_settings(dict(os.environ)), None)
            assert self._value is not None
            return self._value
        if self._reader is None or self._reader.arn != arn:
            self._reader = SecretReader(arn, endpoint=os.environ.get("AWS_ENDPOINT_URL_SECRETSMANAGER"),
                                        max_age=self.max_age)
        try:
            raw = self._reader.read(force=force)
            if raw == self._raw and self._value is not None and not force:
                return self._value  # the usual case: Powertools' cache, nothing changed
            env: dict[str, Any] = dict(os.environ)
            env.update(_secret_fields(raw))
            settings = validate_settings(env)
        except Exception as exc:
            if initial or self._value is None:
                if isinstance(exc, ConfigurationError):
                    raise
                raise ConfigurationError(
                    f"The configuration secret could not be read ({type(exc).__name__}).") from None
            self._retry_at = self._clock() + self.retry_after
            from cswhmcs.observability import logger

            # Names only: a ConfigurationError names the variables, never their values.
            logger.warning("the configuration secret could not be re-read; the last good settings stay in use",
                           extra={"error_type": type(exc).__name__,
                                  "problem": exc.message if isinstance(exc, ConfigurationError) else ""})
            return self._value
        self._retry_at = 0.0
        self._keep(settings, raw)
        assert self._value is not None
        return self._value

    def _keep(self, settings: Settings, raw: str | None) -> None:
        """Keep the same object while nothing changed (callers compare by identity to rebuild clients)."""
        self._raw = raw
        if self._value is None or settings != self._value:
            self._value = settings
            self._history = [*self._history[-7:], settings]


get_settings = _CachedSettings()
