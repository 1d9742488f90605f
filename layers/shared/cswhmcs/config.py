"""Configuration: one pydantic model, validated once per execution environment.

Logic never reads ``os.environ``; it receives a ``Settings``. In AWS the secrets come from one
Secrets Manager secret (JSON object) named by ``CONFIG_SECRET_ARN``; locally and in tests they come
from the environment (API.md section 4). Secret values are ``SecretStr`` so that no repr, log line
or error message can print them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from cswhmcs.errors import ConfigurationError

# Keys that may live in the Secrets Manager secret instead of the environment.
SECRET_KEYS = (
    "CS_API_KEY",
    "CS_API_SECRET",
    "WHMCS_API_IDENTIFIER",
    "WHMCS_API_SECRET",
    "WHMCS_API_ACCESS_KEY",
    "SIGNING_SECRET",
)


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

    AWS_ENDPOINT_URL_DYNAMODB: str | None = None
    ACCOUNTS_TABLE: str = "cswhmcs-accounts"
    LEDGER_TABLE: str = "cswhmcs-ledger"
    IDEMPOTENCY_TABLE: str = "cswhmcs-idempotency"
    WORK_QUEUE_URL: str = ""

    BILLING_START: date | None = None
    BILLING_DUE_DAY: int = Field(default=1, ge=1, le=28)
    BILLING_INVOICE_ACTION: Literal["duedate", "nextcron"] = "duedate"

    # Upstream timeouts in seconds: far below API Gateway's 29 s integration limit.
    CS_TIMEOUT: float = Field(default=10.0, gt=0, le=25)
    WHMCS_TIMEOUT: float = Field(default=10.0, gt=0, le=25)
    CONNECT_TIMEOUT: float = Field(default=3.0, gt=0, le=10)
    # Signature freshness window (API.md section 1).
    SIGNATURE_TOLERANCE: int = 300

    @field_validator("BILLING_START", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @field_validator("CS_API_URL", "WHMCS_API_URL")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.strip().rstrip("/")

    def signing_secrets(self) -> list[bytes]:
        """Every active signing secret (comma-separated, so a secret can be rotated)."""
        raw = self.SIGNING_SECRET.get_secret_value()
        return [s.strip().encode() for s in raw.split(",") if s.strip()]

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
            raise ConfigurationError(f"The backend is not configured: {', '.join(missing)} is not set.")


def _load_secret(arn: str, endpoint: str | None = None) -> dict[str, str]:
    import boto3  # local import: only AWS deployments need it here

    client = boto3.client("secretsmanager", endpoint_url=endpoint) if endpoint else boto3.client("secretsmanager")
    raw = client.get_secret_value(SecretId=arn)["SecretString"]
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ConfigurationError("The configuration secret is not a JSON object.")
    return {k: str(v) for k, v in data.items() if k in SECRET_KEYS}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env: dict[str, Any] = dict(os.environ if environ is None else environ)
    arn = env.get("CONFIG_SECRET_ARN")
    if arn:
        env.update(_load_secret(arn, env.get("AWS_ENDPOINT_URL_SECRETSMANAGER")))
    try:
        return Settings.model_validate(env)
    except ValidationError as exc:
        # Name the fields, never echo their values.
        names = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise ConfigurationError(f"Invalid configuration: {names}.") from None


class _CachedSettings:
    """The settings of this execution environment, validated once and reused by warm invocations.

    With a Secrets Manager secret they are re-read every ``max_age`` seconds, so a rotated signing
    secret or credential reaches warm functions within minutes (rotate by listing old and new secrets,
    comma-separated, for longer than that). Tests call ``get_settings.cache_clear()``.
    """

    def __init__(self, max_age: float = 300.0) -> None:
        self.max_age = max_age
        self._value: Settings | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> Settings:
        with self._lock:
            stale = self._value is not None and os.environ.get("CONFIG_SECRET_ARN") and \
                time.monotonic() - self._loaded_at > self.max_age
            if self._value is None or stale:
                self._value = load_settings()
                self._loaded_at = time.monotonic()
            return self._value

    def cache_clear(self) -> None:
        with self._lock:
            self._value = None


get_settings = _CachedSettings()
