"""AWS calls follow the request's time budget too (issue 8 section 1, API.md section 2): the API routes'
DynamoDB client and every function's Secrets Manager client have short timeouts and 2 attempts (boto3's
defaults are 60 s reads with retries), and an API route's DynamoDB attempts are cut to its deadline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from cswhmcs import deadline
from cswhmcs.adapters.dynamo import StorageTimeout, dynamodb_resource, storage_failure
from cswhmcs.config import SecretReader
from tests.support.endpoints import Silent, settings


@pytest.fixture
def silent() -> Iterator[Silent]:
    with Silent() as endpoint:
        yield endpoint


def test_the_api_dynamodb_client_has_short_timeouts_and_two_attempts_billing_keeps_patient_ones() -> None:
    api = dynamodb_resource(settings("http://127.0.0.1:9"), for_api=True).meta.client.meta.config
    billing = dynamodb_resource(settings("http://127.0.0.1:9")).meta.client.meta.config
    assert (api.connect_timeout, api.read_timeout) == (0.5, 3)
    assert api.retries == {"total_max_attempts": 2, "mode": "standard"}
    # worst case of one call without a deadline: 2 x (connect + read) + one backoff (< 1 s)
    assert 2 * (api.connect_timeout + api.read_timeout) + 1 < deadline.API_BUDGET_SECONDS / 2
    assert (billing.connect_timeout, billing.read_timeout) == (3, 10)


def test_the_api_routes_deps_use_the_api_client() -> None:
    from cswhmcs.api import Deps

    config = Deps(settings("http://127.0.0.1:9")).ddb.meta.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 3)


def test_the_api_routes_ledger_is_kept_per_thread_on_that_threads_api_client() -> None:
    import threading

    from cswhmcs.api import Deps

    deps = Deps(settings("http://127.0.0.1:9"))
    ledger = deps.ledger
    # kept: the next request on this thread does not build the Table (and its class) again
    assert deps.ledger is ledger
    assert ledger.table.meta.client is deps.ddb.meta.client
    assert ledger.table.meta.client.meta.config.read_timeout == 3
    # another thread (boto3 resources are not thread-safe) gets its own
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(deps.ledger))
    thread.start()
    thread.join()
    assert other and other[0] is not ledger


def test_the_secrets_manager_client_has_short_timeouts_and_two_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(
            Name="timeouts", SecretString=json.dumps({"SIGNING_SECRET": "s"}))["ARN"]
        reader = SecretReader(arn)
        assert json.loads(reader.read()) == {"SIGNING_SECRET": "s"}
        config = reader._provider.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 3.0)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}


def test_no_dynamodb_attempt_starts_once_the_requests_time_is_over(silent: Silent) -> None:
    table = dynamodb_resource(settings(silent.url), for_api=True).Table("accounts")
    # Given a request whose upstream deadline passed more than the storage grace ago
    with deadline.use(deadline.Deadline.after(-1.0)):
        started = time.monotonic()
        with pytest.raises(StorageTimeout) as err:
            table.get_item(Key={"service_id": 1})
    # Then nothing was sent, at once, and the caller gets a sentence naming DynamoDB
    assert time.monotonic() - started < 0.5
    assert silent.accepted == 0
    assert storage_failure(err.value) == "The backend's database (DynamoDB) did not answer in time; try again shortly."
