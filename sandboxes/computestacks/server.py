"""``ComputeStacksSandbox``: the installation's records, the knobs and the Rails pipeline behind a loopback server.

It is an ``Installation`` (``store.py``: seeding and inspection), has the ``FaultKnobs`` (``faults.py``) and the
``webhook_users`` webhook (``webhooks.py``), and is a ``plumbing.SandboxServer`` (lifecycle, ``hang``). Each
request is read by ``_Handler``, waits at the hang gate, then ``_serve`` records it and, under the one lock, lets
the knobs, Rack::Attack and ``routing.app`` answer it; the handler waits the delay the knobs asked for and sends
the answer (or drops the connection).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from sandboxes.computestacks.faults import FaultKnobs, RackAttack
from sandboxes.computestacks.rack import Request
from sandboxes.computestacks.routing import app
from sandboxes.computestacks.store import Installation
from sandboxes.computestacks.webhooks import UserWebhooks
from sandboxes.plumbing import CaseInsensitiveHeaders, Handler, Response, SandboxServer


class _Handler(Handler["ComputeStacksSandbox"]):
    def answer(self, body: bytes) -> None:
        sandbox = self.owner
        req = Request(method=self.command, target=self.path, headers=CaseInsensitiveHeaders(self.headers.items()),
                      body=body, client_ip=self.client_address[0],
                      server_authority=f"{sandbox.host}:{sandbox.port}")
        if not sandbox.hang_gate.wait():  # the sandbox is stopping
            self.hang_up()
            return
        response, delay, record = sandbox._serve(req)
        if delay > 0 and sandbox.stopping.wait(delay):
            self.hang_up()
            return
        if record.get("dropped"):  # drop_next: the connection closes without an answer
            self.hang_up()
            return
        self.send(response)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = Handler.respond


class ComputeStacksSandbox(UserWebhooks, Installation, FaultKnobs, SandboxServer):
    """The fake ComputeStacks. ``start()`` binds (``port=0``: any free port), ``stop()`` shuts it down."""

    DEFAULT_API_KEY = "cs-sandbox-key"
    DEFAULT_API_SECRET = "cs-sandbox-secret-Qm2xW9pLk4vNb8cRt6yHs3dFg5jZa1eU7o"  # noqa: S105 - a sandbox value

    handler = _Handler
    thread_name = "computestacks-sandbox"
    poll_interval = 0.05
    join_timeout = 2.0
    keep_port = True  # a restarted sandbox listens where it did
    close_connections_on_stop = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = DEFAULT_API_KEY,
                 api_secret: str = DEFAULT_API_SECRET, currencies: Iterable[str] = ("USD", "EUR", "GBP"),
                 default_currency: str = "USD", rate_limit: int = 2500, rate_period: float = 300.0,
                 lockout: bool = True, billing_address: bool = False, billing_phone: bool = False,
                 with_admin_user: bool = True, clock: Callable[[], float] = time.time,
                 verbose: bool = False) -> None:
        SandboxServer.__init__(self, host, port)
        self.api_key = api_key
        self.api_secret = api_secret
        self.verbose = verbose
        Installation.__init__(self, api_key=api_key, api_secret=api_secret, currencies=currencies,
                              default_currency=default_currency, lockout=lockout, billing_address=billing_address,
                              billing_phone=billing_phone, with_admin_user=with_admin_user, clock=clock)
        FaultKnobs.__init__(self, RackAttack(rate_limit, rate_period, clock))
        UserWebhooks.__init__(self)
        self._requests: list[dict[str, Any]] = []

    def reports_error(self, exc: BaseException | None) -> bool:
        return self.verbose  # quiet unless asked: a failing request shows in the test that made it

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received: method, path (raw), query, json, headers (no Authorization), status."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------------ HTTP entry

    def _serve(self, req: Request) -> tuple[Response, float, dict[str, Any]]:
        """Answer one request; returns the response, how long to wait before sending it, the record."""
        try:
            parsed_json = json.loads(req.body) if req.body.strip() else None
        except ValueError:
            parsed_json = None
        record = {
            "method": req.method, "path": req.path, "query": dict(req.query), "json": parsed_json,
            "headers": CaseInsensitiveHeaders((k, v) for k, v in req.headers.items() if k != "authorization"),
            "status": None, "at": self._clock(),
        }
        with self._lock:
            self._requests.append(record)
            delay, drop, response = self._intercept()
            record["dropped"] = drop is not None
            if response is None:
                response = self._rack_attack.count(req.client_ip) or app(self, req)
                delay += self._commit_delay(req.method)
            record["status"] = response.status
        return response, delay, record
