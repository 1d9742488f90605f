"""Configuration: validated once, secrets from Secrets Manager, never printable."""

from __future__ import annotations

import json
from typing import Any

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
        # (a refresh age of 1 s: the calls below take far less even on a loaded machine; 50 ms did not)
        cached = _CachedSettings(max_age=1.0)
        assert cached().signing_secrets() == [b"old"]
        # When the secret is rotated
        sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"SIGNING_SECRET": "new,old"}))
        # Then a warm reader sees it after the refresh age, and not before
        first = cached()
        import time

        time.sleep(1.05)
        assert first.signing_secrets() == [b"old"]
        assert cached().signing_secrets() == [b"new", b"old"]


# --- one model for every tunable --------------------------------------------------------------------------


def test_every_tunable_lives_in_the_settings() -> None:
    s = load_settings({"WORK_QUEUE_URL": "https://sqs.example/q", "WORKER_MAX_CONCURRENCY": "8",
                       "CS_RATE_LIMIT": "5000", "WHMCS_RECEIVER_URL": "https://billing.example.com/modules/x.php",
                       "OVERDUE_SUSPEND_DAYS": "14", "CS_WEBHOOK_TOKEN": "hook-token-value",
                       "BILLING_CS_SHARE": "0.6", "BILLING_WHMCS_RATE": "20", "BILLING_PER_PAGE": "300"})
    assert (s.WORK_QUEUE_URL, s.WORKER_MAX_CONCURRENCY, s.CS_RATE_LIMIT, s.OVERDUE_SUSPEND_DAYS) == \
        ("https://sqs.example/q", 8, 5000, 14)
    assert s.WHMCS_RECEIVER_URL == "https://billing.example.com/modules/x.php"
    assert s.CS_WEBHOOK_TOKEN.get_secret_value() == "hook-token-value" and "hook-token-value" not in repr(s)
    assert "hook-token-value" in s.secret_values()


def test_unset_or_blank_values_are_the_defaults() -> None:
    # CloudFormation passes an empty parameter as ""
    s = load_settings({"CS_RATE_LIMIT": "", "WHMCS_RECEIVER_URL": " ", "OVERDUE_SUSPEND_DAYS": "",
                       "WORKER_MAX_CONCURRENCY": " 6 "})
    assert (s.CS_RATE_LIMIT, s.WHMCS_RECEIVER_URL, s.OVERDUE_SUSPEND_DAYS, s.WORKER_MAX_CONCURRENCY) == \
        (2500, None, None, 6)
    assert s.CS_WEBHOOK_TOKEN.get_secret_value() == ""


@pytest.mark.parametrize("name, value", [
    ("WHMCS_RECEIVER_URL", "ftp://billing.example.com/x.php"), ("WHMCS_RECEIVER_URL", "billing.example.com/x"),
    ("OVERDUE_SUSPEND_DAYS", "-3"), ("OVERDUE_SUSPEND_DAYS", "soon"), ("CS_RATE_LIMIT", "0"),
    ("WORKER_MAX_CONCURRENCY", "4.5"), ("BILLING_PER_PAGE", "0"), ("BILLING_CS_SHARE", "inf"),
])
def test_an_invalid_value_fails_at_start_naming_the_variable_never_the_value(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings({name: value})
    assert name in err.value.message and value not in err.value.message


def test_the_webhook_token_may_come_from_the_secret() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name="hook", SecretString=json.dumps({"CS_WEBHOOK_TOKEN": "tok-from-secret"}))["ARN"]
        settings = load_settings({"CONFIG_SECRET_ARN": arn, "CS_WEBHOOK_TOKEN": "from-env"})
    assert settings.CS_WEBHOOK_TOKEN.get_secret_value() == "tok-from-secret"


# --- re-reading the secret ---------------------------------------------------------------------------------


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A configuration secret in moto's Secrets Manager, named by CONFIG_SECRET_ARN."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name="cfg", SecretString=json.dumps({"CS_API_SECRET": "first-secret"}))["ARN"]
        monkeypatch.setenv("CONFIG_SECRET_ARN", arn)
        monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETSMANAGER", raising=False)
        yield sm, arn


def test_refresh_reads_the_secret_at_once_bypassing_the_cache(secret: Any) -> None:
    from cswhmcs.config import _CachedSettings

    sm, arn = secret
    cached = _CachedSettings(max_age=300)
    first = cached()
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"CS_API_SECRET": "second-secret"}))
    assert cached() is first  # within the 5 minutes: Powertools' cache
    assert cached.refresh().CS_API_SECRET.get_secret_value() == "second-secret"
    assert cached().CS_API_SECRET.get_secret_value() == "second-secret"
    # Unchanged settings stay the same object (callers rebuild their clients on a new one)
    again = cached()
    assert cached.refresh() is again and cached.is_current(again)


def test_a_failed_or_bad_refresh_keeps_the_last_good_settings_with_a_warning_without_values(
        secret: Any, caplog: pytest.LogCaptureFixture) -> None:
    from cswhmcs.config import _CachedSettings

    sm, arn = secret
    clock = [0.0]
    cached = _CachedSettings(max_age=0.01, retry_after=30, clock=lambda: clock[0])
    good = cached()
    # When the new version is not a JSON object
    sm.put_secret_value(SecretId=arn, SecretString="not json at all, first-secret-2")
    caplog.clear()
    assert cached.refresh() is good
    # And when the secret cannot be read at all (deleted)
    sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    clock[0] += 31
    assert cached.refresh() is good
    assert cached() is good  # and not tried again before retry_after
    # Then warnings were logged, naming the problem, never a value
    warned = [r for r in caplog.records if "last good settings" in r.getMessage()]
    assert len(warned) == 2
    text = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "first-secret" not in text and "not json" not in text


def test_an_unreadable_secret_at_start_is_a_configuration_error(secret: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from cswhmcs.config import _CachedSettings

    # Given an endpoint override that points nowhere (so AWS_ENDPOINT_URL_SECRETSMANAGER is honoured)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETSMANAGER", "http://127.0.0.1:9")
    with pytest.raises(ConfigurationError) as err:
        _CachedSettings()()
    assert "configuration secret could not be read" in err.value.message
