"""ComputeStacks' users webhook (the admin setting ``webhook_users``), as ``reference/computestacks-api.md`` section 7
and the controller source (``user.rb#user_webooks``, ``WebHookJob``, ``WebHookService``, 9.3.1) describe it.

* When: after a user is created or updated (through the admin API, or in the UI: ``Installation.update_user_in_ui``)
  and one of ``fname lname email encrypted_password currency is_admin api_key country city state address1 address2
  zip`` changed (setting a password always changes ``encrypted_password``), unless the user is a support account,
  and only when ``webhook_users_url`` holds an http(s) URL. Suspension (``active``), labels and ``external_id`` do
  not fire it. Seeding helpers (``add_user``, ``set_user_fields``) act behind the app's back and never fire it.
* How: asynchronously (``perform_later``): a background thread, after ``webhook_users_delay`` seconds of queue
  latency, renders the user *as it is then* (the job loads the record by id, so two quick changes may both carry
  the newest state; a user deleted meanwhile is dropped) and POSTs it with ``Accept: application/json``,
  ``Content-Type: application/json; charset=UTF-8``, no signature and no auth header; the URL's query (a token)
  is the receiver's only credential. 30 s timeout (``webhook_users_timeout``).
* Body (``webhook_users_body``): ``"show"`` (default) = ``{"user": {...}}`` exactly as ``GET /api/admin/users/:id``
  renders it (what the reference and API.md describe); ``"empty"`` = no body at all, which is what 9.3.1's
  ``WebHookService`` actually posts for this setting (it keeps the rendered data only for ``webhook_billing_usage``).
* Retries: a non-2xx answer or a refused connection is retried with the same body after 2 min, 15 min, then
  hourly, 5 times at most (``webhook_users_retry_delays``; ``()`` = never, which is what 9.3.1 ends up doing: its
  retry job is enqueued with one argument too many and fails). A timeout or another connection error is only
  logged, never retried, as in ``WebHookJob``.

Inspection: ``webhook_deliveries`` (one record per attempt: user_id, url, attempt, body, status, error, at) and
``wait_for_webhooks(timeout)`` (True once no delivery is queued, in flight or waiting for a retry).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from sandboxes.computestacks.controllers import SUPPORT_EMAILS
from sandboxes.computestacks.store import Installation
from sandboxes.computestacks.views import user_json

WATCHED = frozenset({"fname", "lname", "email", "password", "currency", "is_admin", "api_key", "country", "city",
                     "state", "address1", "address2", "zip"})  # "password" stands for encrypted_password
RETRY_DELAYS = (120.0, 900.0, 3600.0, 3600.0, 3600.0)
USER_AGENT = "http.rb/5.1.1"  # the HTTP gem WebHookService posts with
BODY_MODES = ("show", "empty")


class UserWebhooks:
    """The ``webhook_users`` setting and its deliveries. A base of ``ComputeStacksSandbox``, placed before
    ``Installation`` so that its ``_user_committed`` is the one the controllers reach."""

    _lock: threading.RLock
    _users: dict[int, dict[str, Any]]
    stopping: threading.Event
    _clock: Callable[[], float]

    def __init__(self) -> None:
        self.webhook_users_url: str | None = None
        self.webhook_users_timeout = 30.0
        self.webhook_users_retry_delays: tuple[float, ...] = RETRY_DELAYS
        self.webhook_users_delay = 0.0
        self.webhook_users_body = "show"
        self._deliveries: list[dict[str, Any]] = []
        self._pending = 0
        self._idle = threading.Condition(threading.Lock())

    # ------------------------------------------------------------------ inspection

    @property
    def webhook_deliveries(self) -> list[dict[str, Any]]:
        with self._idle:
            return [dict(d) for d in self._deliveries]

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        """Block until every delivery is finished (retries included); False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    # ------------------------------------------------------------------ after commit (under the installation lock)

    def _user_committed(self, before: dict[str, Any] | None, after: dict[str, Any], *,
                        password_changed: bool = False) -> None:
        url = self.webhook_users_url
        if not url or not url.lower().startswith(("http://", "https://")):
            return
        if after["email"] in SUPPORT_EMAILS:
            return
        changed = password_changed or before is None or any(
            before.get(k) != after.get(k) for k in WATCHED - {"password"})
        if not changed:
            return
        if self.webhook_users_body not in BODY_MODES:
            raise ValueError(f"webhook_users_body must be one of {BODY_MODES}")
        with self._idle:
            self._pending += 1
        job = threading.Thread(target=self._job, name="computestacks-webhook", daemon=True,
                               args=(int(after["id"]), url, self.webhook_users_delay,
                                     tuple(self.webhook_users_retry_delays), self.webhook_users_body,
                                     float(self.webhook_users_timeout)))
        job.start()

    # ------------------------------------------------------------------ the job (a background thread)

    def _render(self, user_id: int, mode: str) -> bytes | None:
        with self._lock:
            user = self._users.get(user_id)
            if user is None:  # ActiveJob::DeserializationError: discarded
                return None
            if mode == "empty":
                return b""
            assert isinstance(self, Installation)
            return json.dumps({"user": user_json(self, user, "show")}, ensure_ascii=False,
                              separators=(",", ":")).encode()

    def _job(self, user_id: int, url: str, delay: float, retries: tuple[float, ...], mode: str,
             timeout: float) -> None:
        try:
            if delay > 0 and self.stopping.wait(delay):
                return  # the sandbox stopped: the queued job is lost with it
            body = self._render(user_id, mode)
            if body is None:
                self._record(user_id, url, 0, None, None, "user no longer exists: job discarded")
                return
            for attempt in range(len(retries) + 1):
                if attempt and self.stopping.wait(retries[attempt - 1]):
                    return
                status, error, refused = self._post(url, body, timeout)
                self._record(user_id, url, attempt, body, status, error)
                failed = (status is not None and not 200 <= status < 300) or refused
                if not failed:
                    return
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    @staticmethod
    def _post(url: str, body: bytes, timeout: float) -> tuple[int | None, str | None, bool]:
        """(HTTP status, error text, connection refused)."""
        headers = {"Accept": "application/json", "Content-Type": "application/json; charset=UTF-8",
                   "User-Agent": USER_AGENT}
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
                reply.read()
                return reply.status, None, False
        except urllib.error.HTTPError as exc:
            return exc.code, None, False
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return None, f"{type(reason).__name__}: {reason}", isinstance(reason, ConnectionRefusedError)

    def _record(self, user_id: int, url: str, attempt: int, body: bytes | None, status: int | None,
                error: str | None) -> None:
        with self._idle:
            self._deliveries.append({"user_id": user_id, "url": url, "attempt": attempt,
                                     "body": None if body is None else body.decode("utf-8"), "status": status,
                                     "error": error, "at": self._clock()})
