"""The ComputeStacks sandbox's ``webhook_users``: after a user changes, ``{"user": {...}}`` is POSTed to the URL.

A receiver stub on loopback records what arrives; the sandbox is driven through its admin API over HTTP (and the
UI helper for a user who edits their own profile).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandboxes.computestacks import ComputeStacksSandbox
from sandboxes.plumbing import BackgroundServer, Handler, Response

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json; api_version=60", "Content-Type": "application/json"}
TOKEN = "webhook-test-token-0123"  # noqa: S105 - a test-only token


class _ReceiverHandler(Handler["Receiver"]):
    def answer(self, body: bytes) -> None:
        receiver = self.owner
        with receiver.lock:
            receiver.hits.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
            status = receiver.statuses.pop(0) if receiver.statuses else 200
        self.send(Response(status, b'{"result":"success"}', "application/json"))

    do_POST = Handler.respond


class Receiver(BackgroundServer):
    handler = _ReceiverHandler
    thread_name = "webhook-receiver"
    url_path = f"/v1/hooks/cs-user?token={TOKEN}"  # url: the hook's address, as the sandbox is told it

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 0)
        self.lock = threading.Lock()
        self.hits: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answers to give, in order (then 200)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(h["body"])["user"] for h in self.hits]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def sandbox(receiver: Receiver, cs_sandbox: ComputeStacksSandbox) -> ComputeStacksSandbox:
    """The ComputeStacks sandbox of tests/conftest.py (started after the receiver, stopped before it), its
    ``webhook_users`` pointed at the receiver."""
    cs_sandbox.webhook_users_url = receiver.url
    return cs_sandbox


def patch_user(sb: ComputeStacksSandbox, user_id: int, **fields: Any) -> httpx.Response:
    return httpx.patch(f"{sb.url}/api/admin/users/{user_id}", json={"user": fields}, headers=JSON,
                       auth=(sb.api_key, sb.api_secret), timeout=5)


def linked_user(sb: ComputeStacksSandbox) -> dict[str, Any]:
    return sb.add_user("ann@example.org", "Ann", "Lee", currency="EUR", external_id=42,
                       labels={"whmcs": {"client_id": 7, "service_id": 42}})


def test_an_email_change_posts_the_user_as_show_renders_it(sandbox: ComputeStacksSandbox,
                                                           receiver: Receiver) -> None:
    # Given
    user = linked_user(sandbox)
    # When
    response = patch_user(sandbox, user["id"], email="Ann.Lee@Example.org")
    # Then
    assert response.status_code == 200
    assert sandbox.wait_for_webhooks(5)
    [hit] = receiver.hits
    assert hit["path"] == f"/v1/hooks/cs-user?token={TOKEN}"
    assert hit["headers"]["Content-Type"] == "application/json; charset=UTF-8"
    assert hit["headers"]["Accept"] == "application/json" and "Authorization" not in hit["headers"]
    [sent] = receiver.users()
    shown = httpx.get(f"{sandbox.url}/api/admin/users/{user['id']}", headers=JSON,
                      auth=(sandbox.api_key, sandbox.api_secret), timeout=5).json()["user"]
    assert sent == shown  # the show view, as GET /api/admin/users/:id answers
    assert (sent["id"], sent["email"], sent["labels"]) == (user["id"], "ann.lee@example.org",
                                                           {"whmcs": {"client_id": 7, "service_id": 42}})
    assert [(d["attempt"], d["status"]) for d in sandbox.webhook_deliveries] == [(0, 200)]


def test_only_watched_changes_fire(sandbox: ComputeStacksSandbox, receiver: Receiver) -> None:
    # Given
    user = linked_user(sandbox)
    # When: suspension, labels and external id are not watched; a name and a password are
    patch_user(sandbox, user["id"], active=False, external_id="42", merge_labels={"whmcs": {"service_id": 42}})
    patch_user(sandbox, user["id"], fname="Ann")  # unchanged value
    assert sandbox.wait_for_webhooks(5) and receiver.hits == []
    patch_user(sandbox, user["id"], lname="Lee-Berg")
    patch_user(sandbox, user["id"], password="n3w-secret-pass")
    # Then
    assert sandbox.wait_for_webhooks(5)
    assert [u["lname"] for u in receiver.users()] == ["Lee-Berg", "Lee-Berg"]


def test_api_create_fires_but_seeding_and_support_users_do_not(sandbox: ComputeStacksSandbox,
                                                               receiver: Receiver) -> None:
    # Given: seeding acts behind the app's back
    support = sandbox.add_user("hello@computestacks.com", "CS", "Support", is_admin=True)
    # When
    created = httpx.post(f"{sandbox.url}/api/admin/users", headers=JSON, auth=(sandbox.api_key, sandbox.api_secret),
                         json={"user": {"fname": "Jan", "lname": "Berg", "email": "jan@example.de",
                                        "password": "s3cretpass", "skip_email_confirm": True}}, timeout=5)
    sandbox.update_user_in_ui(support["id"], fname="Support")
    # Then
    assert created.status_code == 201
    assert sandbox.wait_for_webhooks(5)
    assert [u["email"] for u in receiver.users()] == ["jan@example.de"]


def test_the_user_changing_their_own_email_in_the_ui_fires(sandbox: ComputeStacksSandbox,
                                                           receiver: Receiver) -> None:
    # Given
    user = linked_user(sandbox)
    sandbox.add_user("taken@example.org", "Tak", "En")
    # When
    sandbox.update_user_in_ui(user["id"], email=" New@Example.org ")
    # Then
    assert sandbox.wait_for_webhooks(5)
    assert [u["email"] for u in receiver.users()] == ["new@example.org"]
    with pytest.raises(ValueError, match="already been taken"):
        sandbox.update_user_in_ui(user["id"], email="taken@example.org")


def test_a_failed_delivery_is_retried_with_the_same_body(sandbox: ComputeStacksSandbox,
                                                         receiver: Receiver) -> None:
    # Given: the receiver answers 502 twice, and the retry schedule is shortened
    user = linked_user(sandbox)
    sandbox.webhook_users_retry_delays = (0.05, 0.05, 0.05)
    receiver.statuses = [502, 502]
    # When
    patch_user(sandbox, user["id"], email="ann2@example.org")
    # Then
    assert sandbox.wait_for_webhooks(5)
    assert [(d["attempt"], d["status"]) for d in sandbox.webhook_deliveries] == [(0, 502), (1, 502), (2, 200)]
    assert len({h["body"] for h in receiver.hits}) == 1


def test_retries_stop_after_the_schedule_and_a_refused_connection_is_retried(sandbox: ComputeStacksSandbox,
                                                                             receiver: Receiver) -> None:
    # Given: nobody listens at the URL any more
    user = linked_user(sandbox)
    sandbox.webhook_users_retry_delays = (0.01, 0.01)
    receiver.stop()
    # When
    patch_user(sandbox, user["id"], fname="Anna")
    # Then
    assert sandbox.wait_for_webhooks(5)
    deliveries = sandbox.webhook_deliveries
    assert [d["attempt"] for d in deliveries] == [0, 1, 2]
    assert all(d["status"] is None and "ConnectionRefusedError" in d["error"] for d in deliveries)


def test_the_body_is_rendered_when_the_job_runs(sandbox: ComputeStacksSandbox, receiver: Receiver) -> None:
    # Given: the job waits in the queue while a second change lands
    user = linked_user(sandbox)
    sandbox.webhook_users_delay = 0.5
    # When
    patch_user(sandbox, user["id"], email="first@example.org")
    sandbox.update_user_in_ui(user["id"], email="second@example.org")
    # Then: both deliveries carry the newest state (the job loads the user by id)
    assert sandbox.wait_for_webhooks(5)
    assert [u["email"] for u in receiver.users()] == ["second@example.org", "second@example.org"]


def test_empty_body_mode_and_no_url(sandbox: ComputeStacksSandbox, receiver: Receiver) -> None:
    # Given: 9.3.1's WebHookService posts no body for this setting
    user = linked_user(sandbox)
    sandbox.webhook_users_body = "empty"
    # When
    patch_user(sandbox, user["id"], fname="Anna")
    assert sandbox.wait_for_webhooks(5)
    sandbox.webhook_users_url = None
    patch_user(sandbox, user["id"], fname="Annie")
    # Then
    assert sandbox.wait_for_webhooks(5)
    assert [h["body"] for h in receiver.hits] == [b""]
