"""Configuration: validated once, secrets from Secrets Manager, never printable."""

from __future__ import annotations

import json

import pytest

from cswhmcs.config import load_settings
from cswhmcs.errors import ConfigurationError


def test_secrets_come_from_secrets_manager_when_an_arn_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a secret in (moto's) Secrets Manager
    import boto3
    from moto import mock_aws

    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name="cswhmcs", SecretString=json.dumps({
            "CS_API_KEY": "k", "CS_API_SECRET": "cs-secret-value", "SIGNING_SECRET": "a,b",
            "UNRELATED": "ignored"}))["ARN"]
        # When
        settings = load_settings({"CONFIG_SECRET_ARN": arn, "CS_API_URL": "https://cs.example.net/",
                                  "AWS_DEFAULT_REGION": "us-east-1"})
    # Then
    assert settings.CS_API_SECRET.get_secret_value() == "cs-secret-value"
    assert settings.signing_secrets() == [b"a", b"b"]
    assert settings.CS_API_URL == "https://cs.example.net"
    assert "cs-secret-value" not in repr(settings) and "cs-secret-value" not in str(settings.model_dump())


def test_invalid_settings_name_the_field_without_echoing_values() -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings({"BILLING_DUE_DAY": "45", "BILLING_INVOICE_ACTION": "sometimes"})
    assert "BILLING_DUE_DAY" in err.value.message and "BILLING_INVOICE_ACTION" in err.value.message
    assert "45" not in err.value.message


def test_require_names_missing_settings() -> None:
    settings = load_settings({})
    with pytest.raises(ConfigurationError) as err:
        settings.require("CS_API_URL", "CS_API_SECRET")
    assert "CS_API_URL, CS_API_SECRET" in err.value.message


def test_defaults_follow_api_md() -> None:
    s = load_settings({"BILLING_START": ""})
    assert (s.BILLING_DUE_DAY, s.BILLING_INVOICE_ACTION, s.BILLING_START) == (1, "duedate", None)


def test_settings_from_secrets_manager_are_reread_so_a_rotation_reaches_warm_functions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given settings loaded from a secret, with a short refresh age
    import boto3
    from moto import mock_aws

    from cswhmcs.config import _CachedSettings

    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name="rot", SecretString=json.dumps({"SIGNING_SECRET": "old"}))["ARN"]
        monkeypatch.setenv("CONFIG_SECRET_ARN", arn)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        cached = _CachedSettings(max_age=0.05)
        assert cached().signing_secrets() == [b"old"]
        # When the secret is rotated
        sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"SIGNING_SECRET": "new,old"}))
        # Then a warm reader sees it after the refresh age, and not before
        first = cached()
        import time

        time.sleep(0.06)
        assert first.signing_secrets() == [b"old"]
        assert cached().signing_secrets() == [b"new", b"old"]
