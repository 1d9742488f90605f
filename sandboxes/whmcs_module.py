"""The WHMCS sandbox's stand-in for our server module: ModuleSuspend/ModuleUnsuspend and the InvoicePaid hook.

In a real WHMCS, ``ModuleSuspend`` runs the service's server module function ``SuspendAccount($params)``
(``reference/whmcs-contract.md`` section 7), which for our module (``computestacks.php`` ->
``lib/Client.php``) POSTs the module ``$params`` as JSON, signed (API.md section 1), to the backend route
``/v1/accounts/suspend`` on the host of the service's server record, and returns ``"success"`` or the
backend's message. The sandbox does exactly that itself, synchronously (the WHMCS call lasts as long as the
module's), then sets the status and reason only when the module said ``success``, as WHMCS does.

What is sent, as the PHP module sends it:

* URL ``http(s)://<server hostname><route>`` (``Secure`` alone decides the scheme; a pasted scheme is dropped);
* headers ``Content-Type: application/json; charset=utf-8``, ``X-CSW-Timestamp``, ``X-CSW-Signature`` =
  ``v1=`` + HMAC-SHA256(first secret of the Access Hash, ``"<ts>.<route>.<body>"``), ``User-Agent``;
* body: the ``$params`` WHMCS builds for the service (``build_params``) minus ``serverusername``,
  ``serverpassword``, ``serveraccesshash``, ``model`` and ``password`` (only create/change-password send it),
  plus a fresh ``csw_nonce`` (the module's guard against same-second replays);
* limit: ``COMPUTESTACKS_TIMEOUT`` = 30 s for the whole call (``ModuleActions.module_timeout``).

The answer is read as ``Client::call`` reads it: success only for HTTP 2xx with ``result: success``; 401 gives
the signature sentence; otherwise the backend's ``message``; no answer gives a "could not be reached" /
"did not answer" sentence. A product whose module is not ``computestacks`` (e.g. ``cpanel``) has no stand-in:
its action counts as ``success`` without any call.

Knobs and helpers (on ``WhmcsSandbox``): ``set_server(hostname, access_hash, *, secure=False, server_id=1)``,
``module_timeout``, ``module_calls`` (what the module sent and got), ``invoice_paid_hook`` (bool: run our
``hooks.php`` InvoicePaid stand-in when ``pay_invoice`` marks an invoice paid).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandboxes.whmcs_envelope import ApiError, to_int

USER_AGENT = "ComputeStacks-WHMCS/2.0"
MODULE_TIMEOUT = 30.0  # COMPUTESTACKS_TIMEOUT in lib/Client.php
NEVER_SENT = ("serverusername", "serverpassword", "serveraccesshash", "model")
SUSPEND_ROUTE = "/v1/accounts/suspend"
UNSUSPEND_ROUTE = "/v1/accounts/unsuspend"
INVOICE_PAID_ROUTE = "/v1/hooks/invoice-paid"
MODULE = "computestacks"


@dataclass
class ServerRecord:
    """A WHMCS server record (Configuration > Servers), as the module reads it from ``$params``."""

    id: int
    name: str = "ComputeStacks"
    hostname: str = "cs.example.net"
    ipaddress: str = ""
    access_hash: str = ""
    secure: bool = True
    username: str = ""
    password: str = ""
    module: str = MODULE

    @property
    def base_url(self) -> str:
        """``Client::fromParams``: strip a pasted scheme and trailing slashes; Secure picks http/https."""
        host = self.hostname.strip() or self.ipaddress.strip()
        if "://" in host:
            host = host.split("://", 1)[1]
        host = host.rstrip("/")
        return "" if not host else ("https://" if self.secure else "http://") + host

    @property
    def secret(self) -> str:
        """The first of the Access Hash's comma-separated secrets (the one being rotated in comes first)."""
        return next((s.strip() for s in self.access_hash.split(",") if s.strip()), "")


@dataclass
class ModuleResult:
    """One module call: ``"success"`` or the error sentence the module returns to WHMCS."""

    function: str
    route: str
    url: str
    outcome: str  # "success" or the error text
    status: int = 0  # HTTP status, 0 when no HTTP answer arrived (or nothing was sent)
    sent: dict[str, Any] | None = None  # the JSON body sent (None when nothing was sent)
    answer: Any = None  # the decoded answer, or the raw text when it was not JSON
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    def as_dict(self) -> dict[str, Any]:
        return {"function": self.function, "route": self.route, "url": self.url, "outcome": self.outcome,
                "status": self.status, "sent": self.sent, "answer": self.answer, "seconds": self.seconds,
                **self.extra}


def sign(secret: str, route: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """API.md section 1, as ``lib/Client.php`` computes it (its own code, not the backend's verifier)."""
    ts = str(int(time.time() if now is None else now))
    mac = hmac.new(secret.encode(), f"{ts}.{route}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-CSW-Timestamp": ts, "X-CSW-Signature": "v1=" + mac}


def build_params(service: Mapping[str, Any], product: Mapping[str, Any], client_record: Mapping[str, Any],
                 server: ServerRecord) -> dict[str, Any]:
    """The module ``$params`` WHMCS passes for a service (``reference/whmcs-contract.md`` section 1)."""
    params: dict[str, Any] = {
        "accountid": service["id"], "serviceid": service["id"], "addonId": 0, "userid": service["clientid"],
        "pid": service["pid"], "serverid": server.id, "domain": service["domain"],
        "username": service["username"], "password": service["password"], "producttype": "other",
        "moduletype": product["module"],
    }
    for n in range(1, 25):  # configoption1..24: the product's Module Settings, "" when unset
        params[f"configoption{n}"] = str(product.get(f"configoption{n}", "") or "")
    params.update({
        "customfields": {}, "configoptions": {}, "server": True, "serverip": server.ipaddress,
        "serverhostname": server.hostname, "serverusername": server.username, "serverpassword": server.password,
        "serveraccesshash": server.access_hash, "serversecure": server.secure, "serverport": "",
        "serverhttpprefix": "https" if server.secure else "http", "status": service["status"],
        "clientsdetails": dict(client_record),
    })
    return params


def module_body(params: Mapping[str, Any], *, with_password: bool = False) -> dict[str, Any]:
    """``Client::moduleBody`` plus the nonce ``Client::encode`` adds."""
    body = {k: v for k, v in params.items() if k not in NEVER_SENT and (with_password or k != "password")}
    if isinstance(body.get("clientsdetails"), dict):
        body["clientsdetails"] = {k: v for k, v in body["clientsdetails"].items() if k != "password"}
    body["csw_nonce"] = secrets.token_hex(12)
    return body


def call_backend(server: ServerRecord, function: str, route: str, payload: dict[str, Any], *,
                 timeout: float = MODULE_TIMEOUT) -> ModuleResult:
    """One signed POST as ``Client::call`` makes it, and its outcome as the module function returns it."""
    base = server.base_url
    url = base + route
    if not base:
        return ModuleResult(function, route, url, "The ComputeStacks server has no Hostname: set it to the "
                                                  "backend API host on the server record.")
    secret = server.secret
    if not secret:
        return ModuleResult(function, route, url, "The ComputeStacks server has no Access Hash: set it to the "
                                                  "backend signing secret on the server record.")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
               "User-Agent": USER_AGENT, **sign(secret, route, body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only
    started = time.monotonic()
    status, raw = 0, b""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            text = (f"The ComputeStacks backend at {base} did not answer within {timeout:g} s (curl timeout in the "
                    "WHMCS module). The action may still be carried out: check before repeating it.")
        elif isinstance(reason, OSError) and not isinstance(reason, ConnectionError):  # DNS, no route...
            text = (f"The ComputeStacks backend could not be reached at {base}: {reason}. Nothing was sent; check "
                    "the server's Hostname and Secure settings, DNS and firewall.")
        elif isinstance(reason, ConnectionRefusedError):
            text = (f"The ComputeStacks backend could not be reached at {base}: connection refused. Nothing was "
                    "sent; check the server's Hostname and Secure settings, DNS and firewall.")
        else:
            text = (f"The ComputeStacks backend at {base} closed the connection without a complete answer "
                    f"({reason}). The action may still be carried out: check before repeating it.")
        return ModuleResult(function, route, url, text, sent=payload, seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    try:
        decoded: Any = json.loads(raw)
    except ValueError:
        decoded = raw.decode("utf-8", "replace")
    message = ""
    if isinstance(decoded, dict) and isinstance(decoded.get("message"), str | int | float):
        message = str(decoded["message"]).strip()
    if status == 401:
        outcome = ("The backend refused the request signature: check the server's Access Hash (signing secret) "
                   "and the clocks." + (" " + message if message else ""))
    elif 200 <= status < 300 and isinstance(decoded, dict) and decoded.get("result") == "success":
        outcome = "success"
    elif message:
        outcome = message
    else:
        outcome = f"The ComputeStacks backend answered HTTP {status} without a readable message."
    return ModuleResult(function, route, url, outcome, status=status, sent=payload, answer=decoded, seconds=seconds)


class ModuleActions:
    """The server records, ModuleSuspend/ModuleUnsuspend and the InvoicePaid hook stand-in of ``WhmcsSandbox``.

    ``_module_suspend``/``_module_unsuspend`` are API actions run WITHOUT the sandbox lock held around the
    module call: the backend may call this WHMCS back while it handles the request (as a real one would).
    """

    _lock: threading.RLock
    _services: dict[int, dict[str, Any]]
    _products: dict[int, dict[str, Any]]
    _clients: dict[int, dict[str, Any]]
    _client_record: Callable[[dict[str, Any]], dict[str, Any]]

    def __init__(self) -> None:
        self._servers: dict[int, ServerRecord] = {1: ServerRecord(1)}
        self._module_calls: list[dict[str, Any]] = []
        self.module_timeout = MODULE_TIMEOUT
        self.invoice_paid_hook = False

    # ------------------------------------------------------------------ knobs and inspection

    def set_server(self, hostname: str, access_hash: str, *, secure: bool = False, server_id: int = 1,
                   name: str = "ComputeStacks", ipaddress: str = "") -> ServerRecord:
        """The server record the module reads (``serverhostname``, ``serversecure``, ``serveraccesshash``).
        Every service uses server 1 unless ``add_service``/``set_service`` says otherwise. ``hostname`` is
        the backend's ``host[:port][/base]`` (a pasted ``http://`` is dropped: ``secure`` decides)."""
        with self._lock:
            record = ServerRecord(server_id, name=name, hostname=hostname, ipaddress=ipaddress,
                                  access_hash=access_hash, secure=secure)
            self._servers[server_id] = record
            return record

    def server(self, server_id: int) -> ServerRecord | None:
        with self._lock:
            return self._servers.get(server_id)

    @property
    def module_calls(self) -> list[dict[str, Any]]:
        """Every module call the sandbox made: function, route, url, outcome, status, sent (body), answer."""
        with self._lock:
            return [dict(c) for c in self._module_calls]

    # ------------------------------------------------------------------ API actions (called without the lock)

    def _module_suspend(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._run_module(params, "SuspendAccount", SUSPEND_ROUTE)

    def _module_unsuspend(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._run_module(params, "UnsuspendAccount", UNSUSPEND_ROUTE)

    def _run_module(self, params: dict[str, Any], function: str, route: str) -> dict[str, Any]:
        raw = params.get("serviceid")
        if raw in (None, ""):
            raise ApiError("Service ID is required")
        with self._lock:
            sid = to_int(raw)
            service = self._services.get(sid) if sid is not None else None
            if service is None:
                raise ApiError("Service ID not found")
            product = self._products[service["pid"]]
            if not product.get("module"):
                raise ApiError("Service not assigned to a module")
            server = self._servers.get(int(service.get("serverid") or 0))
            client = self._client_record(self._clients[service["clientid"]])
            module_params = (build_params(service, product, client, server)
                             if server is not None else None)
        if product["module"] != MODULE:  # no stand-in for other modules: they "succeed"
            result = ModuleResult(function, route, "", "success", extra={"serviceid": sid, "module": product["module"]})
        elif server is None or module_params is None:
            result = ModuleResult(function, route, "", "No server is assigned to this service.",
                                  extra={"serviceid": sid})
        else:
            result = call_backend(server, function, route, module_body(module_params),
                                  timeout=self.module_timeout)
            result.extra["serviceid"] = sid
        with self._lock:
            self._module_calls.append(result.as_dict())
            if not result.ok:
                raise ApiError(result.outcome)
            service = self._services[int(service["id"])]
            if function == "SuspendAccount":
                service["status"] = "Suspended"
                service["suspensionreason"] = str(params.get("suspendreason") or "")
            else:
                service["status"] = "Active"
                service["suspensionreason"] = ""
        return {"result": "success"}

    # ------------------------------------------------------------------ the InvoicePaid hook (hooks.php)

    def _run_invoice_paid_hook(self, invoice_id: int, client_id: int) -> list[dict[str, Any]]:
        """What our ``hooks.php`` InvoicePaid does: when the client has a Suspended ``computestacks`` service,
        POST ``{"invoiceid": N}`` signed to ``/v1/hooks/invoice-paid`` of each such service's server (once per
        server); nothing when there is none. Returns the calls made. Called without the lock."""
        with self._lock:
            targets: dict[int, ServerRecord] = {}
            for service in self._services.values():
                if service["clientid"] != client_id or service["status"] != "Suspended":
                    continue
                if self._products[service["pid"]].get("module") != MODULE:
                    continue
                server = self._servers.get(int(service.get("serverid") or 0))
                if server is not None:
                    targets.setdefault(server.id, server)
        results = []
        for server in targets.values():
            payload = {"invoiceid": invoice_id, "csw_nonce": secrets.token_hex(12)}
            result = call_backend(server, "InvoicePaid", INVOICE_PAID_ROUTE, payload, timeout=self.module_timeout)
            result.extra["invoiceid"] = invoice_id
            results.append(result.as_dict())
        with self._lock:
            self._module_calls.extend(results)
        return results
