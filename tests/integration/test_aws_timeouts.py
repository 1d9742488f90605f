"""A hanging DynamoDB cannot keep an API route past its budget (issue 8 section 1, API.md section 2): the
routes' DynamoDB client gives up after 2 short attempts, each cut to the request's deadline, and the route
answers 500 ``internal_error`` in the API.md shape, naming DynamoDB and no secret.

Why 500 and not 504: API.md section 2 keeps 504 for "ComputeStacks or WHMCS did not answer in time" (the
WHMCS module tells the admin an upstream was slow); DynamoDB is the backend's own storage, so its failure
is the backend's, and 503 is not among the statuses API.md allows.
"""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ReadTimeoutError

from cswhmcs import deadline
from cswhmcs.adapters.dynamo import StorageTimeout, dynamodb_resource, storage_failure
from cswhmcs.api import reset_deps
from tests.conftest import LiveStack
from tests.support.endpoints import Silent, settings
from tests.support.live import timed_call

pytestmark = pytest.mark.integration


def test_a_hanging_dynamodb_is_cut_to_the_requests_deadline() -> None:
    with Silent() as silent:
        table = dynamodb_resource(settings(silent.url), for_api=True).Table("accounts")
        # Given a request with 0.3 s of upstream time left (0.8 s for DynamoDB), and DynamoDB hanging
        with deadline.use(deadline.Deadline.after(0.3)):
            started = time.monotonic()
            with pytest.raises((ReadTimeoutError, StorageTimeout)) as err:
                table.get_item(Key={"service_id": 1})
            elapsed = time.monotonic() - started
    # Then the call ended after the cut read (0.8 s) and at most one backoff, not after 2 x 3 s
    assert elapsed < 2.5
    assert silent.accepted >= 1
    assert storage_failure(err.value) is not None


def test_a_route_with_a_hanging_dynamodb_answers_500_in_the_error_shape_within_the_budget(
        live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    with Silent() as silent:
        # Given `cswhmcs serve` whose DynamoDB endpoint accepts connections and never answers
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", silent.url)
        reset_deps()
        # When a signed request arrives (its replay check is the first DynamoDB call)
        resp, elapsed = timed_call(live_stack, "/v1/user-groups", {}, timeout=40)
    # Then the answer is ours, in the API.md shape, well within 25 s (2 attempts of 3 s, not boto3's 60 s)
    body = resp.json()
    assert resp.status_code == 500, body
    assert body == {"result": "error", "code": "internal_error",
                    "message": "The backend's database (DynamoDB) did not answer in time; try again shortly."}
    assert elapsed < 12.0
    assert silent.accepted >= 1
    # And it names no secret (nor the endpoint)
    for secret in (live_stack.signing_secret, live_stack.cs.api_secret, live_stack.whmcs.secret, silent.url):
        assert secret not in resp.text
