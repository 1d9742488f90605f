"""One capture of every log line of the whole test session, scanned for secrets at its end (issue 8 §4).

A pytest plugin (registered by ``tests/conftest.py`` through ``pytest_plugins``). It keeps

* a registry of every secret value the tests use: the conftest signing secrets, the sandboxes' API
  credentials (whatever a test starts them with), every value the product registers for redaction, every
  signing secret and ``X-CSW-Signature`` computed in this process (tests and server alike), passwords and
  other secret-named fields of request bodies the handlers receive or ComputeStacks is sent, and the SSO
  tokens the ComputeStacks sandbox issues;
* a capture of everything logged: every record of every logger (``logging.Logger.callHandlers``, after the
  loggers' own filters, so the product's redaction has run: Powertools JSON logs, the billing functions, the
  CLI, third-party libraries), the ``cswhmcs serve`` line of every in-process ``LocalServer``, the output
  of every ``cswhmcs`` subprocess a test runs (``Popen.communicate``; stdout too, except for the commands
  whose stdout is their product: ``call`` prints the answer, ``curl`` a signed request), the stderr tests
  read from ``capsys``/``capfd``, pytest's captured stderr and log of every test, and whatever a test hands
  to ``capture()`` (e.g. the output of the load run's serve process).

At the session's end every captured line is scanned for every registered value. A hit fails the run
(exit status 1) with a list of where each secret kind appeared (test, source, a masked excerpt), never the
secret itself. ``SecretsRegistry.child()`` gives a sub-registry that sees the same captures but keeps its
own secrets, so the checker can be tested with a planted secret without failing the real session.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MIN_LENGTH = 8  # shorter values ("short", "1234") occur in ordinary text: not worth a false alarm
MIN_DISTINCT = 4
_WORD_CHARS = "A-Za-z0-9_-"
_WORD = re.compile(f"[{_WORD_CHARS}]+")
_ALL_WORD = re.compile(f"^[{_WORD_CHARS}]+$")
_SECRET_KEY = re.compile(r"(password|secret|token|signature|accesshash|access_key|api_key)", re.I)
# `cswhmcs` commands whose stdout is what they are for (a signed request, an API answer, a document).
_OUTPUT_IS_THE_PRODUCT = frozenset({"call", "curl", "sign-event", "openapi"})
_STD_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


@dataclass(frozen=True)
class Finding:
    kind: str  # what the secret is ("signing secret", "password", ...), never its value
    where: str  # the test (node id) or "session"
    source: str  # which capture saw it (a logger, "cswhmcs serve", a subprocess, ...)
    excerpt: str  # the line, the secret masked

    def __str__(self) -> str:
        return f"{self.kind} in {self.source} during {self.where}: {self.excerpt}"


def worth_registering(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= MIN_LENGTH and len(set(value)) >= MIN_DISTINCT


class SecretsRegistry:
    """Secret values and captured text; ``findings()`` says where any of the first appears in the second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._chunks: list[tuple[str, str, str]] = []  # (where, source, text)
        self._children: list[SecretsRegistry] = []
        self.where = "session"

    # ------------------------------------------------------------------ registering
    def register(self, value: Any, kind: str) -> None:
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                return
        if worth_registering(value):
            with self._lock:
                self._secrets.setdefault(value, kind)

    def secrets(self) -> dict[str, str]:
        with self._lock:
            return dict(self._secrets)

    # ------------------------------------------------------------------ capturing
    def capture(self, text: Any, source: str, where: str | None = None) -> None:
        if not text:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        elif not isinstance(text, str):
            text = str(text)
        where = where or self.where
        with self._lock:
            self._chunks.append((where, source, text))
            children = list(self._children)
        for child in children:
            child.capture(text, source, where)

    @contextlib.contextmanager
    def child(self) -> Iterator[SecretsRegistry]:
        """A registry that receives every capture made while the block runs, with secrets of its own."""
        sub = SecretsRegistry()
        sub.where = self.where
        with self._lock:
            self._children.append(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._children.remove(sub)

    # ------------------------------------------------------------------ scanning
    def findings(self) -> list[Finding]:
        with self._lock:
            secrets = dict(self._secrets)
            chunks = list(self._chunks)
        if not secrets or not chunks:
            return []
        found = _find(secrets, [text for _, _, text in chunks])
        out: list[Finding] = []
        seen: set[tuple[str, str, str]] = set()
        for where, source, text in chunks:
            for value in found:
                for form in _forms(value):
                    at = text.find(form)
                    if at < 0:
                        continue
                    key = (secrets[value], where, source)
                    if key not in seen:
                        seen.add(key)
                        out.append(Finding(secrets[value], where, source, _excerpt(text, at, form, found)))
                    break
        return out


def _forms(value: str) -> list[str]:
    """The value as it would appear in text: raw, and escaped inside a JSON string."""
    escaped = json.dumps(value)[1:-1]
    return [value] if escaped == value else [value, escaped]


def _find(secrets: dict[str, str], texts: list[str]) -> set[str]:
    """The registered values that occur in any text.

    Most secrets (signatures, tokens, credentials) are made of word characters only: each occurrence lies
    inside a maximal run of word characters, so the distinct runs of all text are collected once and every
    window of each secret length is looked up in a set (tens of thousands of secrets cost no more than a
    few). The other secrets are searched for directly.
    """
    words: set[str] = set()
    for text in texts:
        words.update(_WORD.findall(text))
    by_length: dict[int, set[str]] = {}
    others: list[str] = []
    for value in secrets:
        if _ALL_WORD.match(value):
            by_length.setdefault(len(value), set()).add(value)
        else:
            others.append(value)
    found: set[str] = set()
    for length, values in by_length.items():
        for word in words:
            if len(word) == length:
                if word in values:
                    found.add(word)
            elif len(word) > length:
                found.update(word[i:i + length] for i in range(len(word) - length + 1)
                             if word[i:i + length] in values)
    if others:
        joined = "\n".join(texts)
        found.update(v for v in others if any(form in joined for form in _forms(v)))
    return found


def _excerpt(text: str, at: int, form: str, found: set[str]) -> str:
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[start:end if end >= 0 else len(text)]
    if len(line) > 300:
        lo = max(0, at - start - 120)
        line = ("..." if lo else "") + line[lo:lo + 300] + "..."
    for value in found:
        for f in _forms(value):
            line = line.replace(f, "<secret>")
    return line.replace(form, "<secret>")


REGISTRY = SecretsRegistry()


# ---------------------------------------------------------------------- what feeds the registry


def _record_text(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: keep what there is
        message = f"{record.msg!r} {record.args!r}"
    extras = {k: v for k, v in vars(record).items() if k not in _STD_RECORD_ATTRS}
    parts = [record.name, record.levelname, message]
    if extras:
        parts.append(json.dumps(extras, default=str, ensure_ascii=False))
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return " ".join(parts)


def _secret_fields(value: Any, kind: str, depth: int = 0) -> None:
    """Register every string under a secret-looking key of a decoded JSON body."""
    if depth > 8:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and _SECRET_KEY.search(k) and isinstance(v, str):
                REGISTRY.register(v, f"{kind} ({k})")
            else:
                _secret_fields(v, kind, depth + 1)
    elif isinstance(value, list):
        for v in value[:100]:
            _secret_fields(v, kind, depth + 1)


def _json_or_none(raw: Any) -> Any:
    if isinstance(raw, bytes | bytearray):
        if len(raw) > 65536:
            return None
        try:
            raw = bytes(raw).decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(raw, str) or len(raw) > 65536:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _install() -> None:
    """Wrap the few functions every secret and every log line goes through (test instrumentation only)."""
    from tests.conftest import OLD_SIGNING_SECRET, SIGNING_SECRET

    REGISTRY.register(SIGNING_SECRET, "signing secret")
    REGISTRY.register(OLD_SIGNING_SECRET, "signing secret")

    # Every log record of every logger, after the logger's own filters (the product's redaction).
    original_call_handlers = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # capturing must never break logging
            REGISTRY.capture(_record_text(record), f"log record of logger {record.name!r}")
        original_call_handlers(self, record)

    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]

    # Signatures and the secrets they are computed with (the tests' signer and the server's verifier).
    from cswhmcs import signing

    original_compute = signing.compute_signature

    @functools.wraps(original_compute)
    def compute_signature(secret: bytes, timestamp: int | str, route: str, body: bytes) -> str:
        sig = original_compute(secret, timestamp, route, body)
        REGISTRY.register(secret, "signing secret")
        REGISTRY.register(sig.removeprefix(signing.VERSION_PREFIX), "X-CSW-Signature")
        return sig

    signing.compute_signature = compute_signature

    # Whatever the product itself registers for redaction (credentials, signing secrets).
    from cswhmcs import observability

    original_register = observability.register_secret_values

    @functools.wraps(original_register)
    def register_secret_values(*values: str) -> None:
        for v in values:
            REGISTRY.register(v, "secret the backend registered for redaction")
        original_register(*values)

    observability.register_secret_values = register_secret_values

    # Passwords and other secret fields of every body the handlers receive.
    from cswhmcs import api

    original_handle = api.handle

    @functools.wraps(original_handle)
    def handle(*args: Any, **kwargs: Any) -> Any:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, dict) and "body" in arg:
                _secret_fields(_json_or_none(arg.get("body")), "request body field")
        return original_handle(*args, **kwargs)

    api.handle = handle

    # The sandboxes: their credentials, what ComputeStacks is sent (passwords) and issues (SSO tokens).
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.whmcs import WhmcsSandbox

    for cls, attrs in ((ComputeStacksSandbox, ("api_key", "api_secret")),
                       (WhmcsSandbox, ("identifier", "secret", "access_key"))):
        original_start = cls.start

        def start(self: Any, _orig: Any = original_start, _attrs: tuple[str, ...] = attrs) -> Any:
            for name in _attrs:
                REGISTRY.register(getattr(self, name, None), f"{type(self).__name__} credential ({name})")
            return _orig(self)

        setattr(cls, "start", start)  # noqa: B010
        original_add = cls.add_credential

        def add_credential(self: Any, key: str, secret: str, *a: Any, _orig: Any = original_add,
                           **kw: Any) -> Any:
            REGISTRY.register(key, f"{type(self).__name__} credential")
            REGISTRY.register(secret, f"{type(self).__name__} credential")
            return _orig(self, key, secret, *a, **kw)

        setattr(cls, "add_credential", add_credential)  # noqa: B010
    REGISTRY.register(ComputeStacksSandbox.DEFAULT_API_KEY, "ComputeStacks sandbox credential")
    REGISTRY.register(ComputeStacksSandbox.DEFAULT_API_SECRET, "ComputeStacks sandbox credential")
    from sandboxes import whmcs as whmcs_sandbox

    for name in ("DEFAULT_IDENTIFIER", "DEFAULT_SECRET", "DEFAULT_ACCESS_KEY"):
        REGISTRY.register(getattr(whmcs_sandbox, name, None), "WHMCS sandbox credential")

    original_serve = getattr(ComputeStacksSandbox, "_serve", None)
    if original_serve is not None:
        def serve(self: Any, req: Any) -> Any:
            _secret_fields(_json_or_none(getattr(req, "body", None)), "field sent to ComputeStacks")
            result = original_serve(self, req)
            with contextlib.suppress(Exception):
                body = result[0].body
                if b"token" in body:
                    _secret_fields(_json_or_none(body), "token issued by ComputeStacks")
            return result

        ComputeStacksSandbox._serve = serve  # type: ignore[method-assign]

    # `cswhmcs serve` in-process: its one line per request.
    from cswhmcs.local import server as local_server

    original_init = local_server.LocalServer.__init__

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        names = ("host", "port", "template", "log")
        bound = dict(zip(names, args, strict=False)) | kwargs
        inner = bound.get("log") or (lambda line: print(line, file=sys.stderr, flush=True))

        def log(line: str) -> None:
            REGISTRY.capture(line, "cswhmcs serve (in-process)")
            inner(line)

        bound["log"] = log
        original_init(self, **bound)

    setattr(local_server.LocalServer, "__init__", init)  # noqa: B010

    # The output of every `cswhmcs` subprocess a test runs (serve, call, billing ...).
    original_communicate = subprocess.Popen.communicate

    def communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
        out, err = original_communicate(self, *args, **kwargs)
        argv: Any = self.args
        words = argv.split() if isinstance(argv, str) else [str(a) for a in argv]
        if any(Path(w).name == "cswhmcs" for w in words) or "bench" in words:
            sub = next((w for w in words[1:] if not w.startswith("-")), "")
            REGISTRY.capture(err, f"stderr of subprocess cswhmcs {sub}")
            if sub not in _OUTPUT_IS_THE_PRODUCT:
                REGISTRY.capture(out, f"stdout of subprocess cswhmcs {sub}")
        return out, err

    subprocess.Popen.communicate = communicate  # type: ignore[method-assign]

    # What tests read of stderr through capsys/capfd (it no longer reaches pytest's own capture). Not stdout:
    # in-process log records are captured above already, and what a command prints there is its output
    # (`cswhmcs curl` prints a signed request, `cswhmcs call` the answer, SSO URL included, by design).
    from _pytest.capture import CaptureFixture

    original_readouterr = CaptureFixture.readouterr

    def readouterr(self: Any) -> Any:
        result = original_readouterr(self)
        REGISTRY.capture(result.err, "stderr read through capsys/capfd")
        return result

    CaptureFixture.readouterr = readouterr  # type: ignore[method-assign]


# ---------------------------------------------------------------------- pytest hooks


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "_csw_secrets_installed", False):
        return
    config._csw_secrets_installed = True  # type: ignore[attr-defined]
    _install()


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    REGISTRY.where = nodeid


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    REGISTRY.where = "session"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # pytest's captured stderr and log of each test phase (stdout: see readouterr above).
    for name, content in report.sections:
        if name.startswith(("Captured stderr", "Captured log")) and name.endswith(report.when or ""):
            REGISTRY.capture(content, f"pytest {name.lower()}", where=report.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import time

    started = time.perf_counter()
    findings = REGISTRY.findings()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        chars = sum(len(text) for _, _, text in REGISTRY._chunks)
        reporter.write_line(f"secrets capture: {len(REGISTRY.secrets())} secret values, {len(REGISTRY._chunks)} "
                            f"captures ({chars / 1e6:.1f} MB) scanned in {time.perf_counter() - started:.1f} s, "
                            f"{len(findings)} finding(s)")
    if not findings:
        return
    lines = [f"SECRETS IN LOGS: {len(findings)} place(s) where a secret value appeared in captured output "
             "(the values are not shown):"]
    lines += [f"  - {f}" for f in findings]
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def secrets_registry() -> SecretsRegistry:
    """The session's registry: register a secret a test makes up, or capture output a test collected."""
    return REGISTRY
