"""The session-wide secrets capture (tests/security/capture.py) really finds a logged secret, says where,
never prints it, and fails the run; the product's own redaction still counts (a masked value is no leak)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import LiveStack
from tests.security.capture import REGISTRY, SecretsRegistry

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "planted-secret-Vq8ZrT3nWx5Kb"  # registered only in a sub-registry: never fails the real session


def test_a_planted_secret_is_found_in_every_kind_of_capture(capsys: pytest.CaptureFixture[str]) -> None:
    from cswhmcs.local.server import LocalServer
    from cswhmcs.observability import logger

    with REGISTRY.child() as sub:
        sub.register(PLANTED, "planted test secret")
        # Given the secret reaches: the product's JSON logger, a third-party logger, a `cswhmcs serve` line,
        # and stderr a test reads back
        logger.warning("upstream said %s", PLANTED)
        logging.getLogger("some.library").error("token in a url: https://x.test/?t=%s&u=1", PLANTED)
        lines: list[str] = []
        server = LocalServer("127.0.0.1", 0, log=lines.append)
        try:
            server._log(f"127.0.0.1 POST /v1/x?{PLANTED} -> 200 (1.0 ms) fn")
        finally:
            server.httpd.server_close()
        print(f"printed {PLANTED}", file=sys.stderr)
        capsys.readouterr()
        # When the sub-registry is scanned
        findings = sub.findings()
    # Then each place is listed, with the kind and the test, and never the value
    sources = {f.source for f in findings}
    assert "log record of logger 'cswhmcs'" in sources
    assert "log record of logger 'some.library'" in sources
    assert "cswhmcs serve (in-process)" in sources
    assert "stderr read through capsys/capfd" in sources
    assert lines  # the server's own log still got the line
    for f in findings:
        assert f.kind == "planted test secret"
        assert f.where.endswith("test_a_planted_secret_is_found_in_every_kind_of_capture")
        assert PLANTED not in str(f) and "<secret>" in f.excerpt
    # And the session's own registry never learnt the planted value
    assert PLANTED not in REGISTRY.secrets()


def test_a_value_the_product_redacts_is_not_a_finding() -> None:
    from cswhmcs.observability import logger

    with REGISTRY.child() as sub:
        sub.register(PLANTED, "planted test secret")
        # Given a secret under a secret-named key of a structured log line (the product masks it)
        logger.info("login", extra={"password": PLANTED, "api_secret": PLANTED})
        # Then the capture sees the line as it is written: masked
        assert sub.findings() == []


@pytest.mark.parametrize("text", [
    f"prefix{PLANTED}suffix",  # inside a longer word
    f'{{"a": "{PLANTED}"}}',
    f"x={PLANTED[:-1]}",  # not the whole value: no finding
], ids=["inside a word", "in json", "a prefix only"])
def test_matching_finds_substrings_not_fragments(text: str) -> None:
    reg = SecretsRegistry()
    reg.register(PLANTED, "planted")
    reg.capture(text, "unit")
    assert bool(reg.findings()) == (PLANTED in text)


def test_a_non_ascii_password_is_found_raw_and_json_escaped() -> None:
    password = "pässwört-Ü-9z"
    for text in (f"raw {password}", json.dumps({"m": password})):
        reg = SecretsRegistry()
        reg.register(password, "password")
        reg.capture(text, "unit")
        assert [f.kind for f in reg.findings()] == ["password"], text


def test_short_or_repetitive_values_are_not_registered() -> None:
    reg = SecretsRegistry()
    for value in ("short", "aaaaaaaaaaaa", "", None, 12345678):
        reg.register(value, "x")
    assert reg.secrets() == {}


def test_many_signatures_are_scanned_quickly() -> None:
    import hashlib
    import time

    reg = SecretsRegistry()
    sigs = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    for s in sigs:
        reg.register(s, "X-CSW-Signature")
    for i in range(20_000):
        reg.capture(f'{{"level":"INFO","message":"request","route":"/v1/accounts/sso","status":200,"ms":{i}}}',
                    "unit")
    reg.capture(f"oops {sigs[12_345]}", "unit")
    started = time.perf_counter()
    findings = reg.findings()
    elapsed = time.perf_counter() - started
    assert [f.excerpt for f in findings] == ["oops <secret>"]
    assert elapsed < 10, elapsed  # generous: a scan of the real session must not dominate the run


def test_a_run_that_logs_a_secret_fails_and_says_where_without_the_value(tmp_path: Path) -> None:
    # Given a tiny test session with the capture plugin: one test logs the conftest signing secret
    # through a library logger, one logs nothing secret
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent("""
        import logging

        from tests.conftest import SIGNING_SECRET


        def test_leaks():
            logging.getLogger("leaky.lib").warning("configured with %s", SIGNING_SECRET)


        def test_clean():
            logging.getLogger("leaky.lib").warning("nothing to see")
    """))
    # When it runs
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "tests.security.capture", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'layers/shared'}"})
    out = proc.stdout + proc.stderr
    # Then both tests passed, yet the run failed, naming the test, the logger and the kind
    from tests.conftest import SIGNING_SECRET

    assert "2 passed" in out, out
    assert proc.returncode == 1, out
    assert "SECRETS IN LOGS" in out
    listed = [x for x in out.splitlines() if x.strip().startswith("- ")]
    assert listed and all("signing secret" in x and "test_leaky.py::test_leaks" in x for x in listed), listed
    assert any("log record of logger 'leaky.lib'" in x for x in listed), listed
    assert "test_clean" not in out.split("SECRETS IN LOGS")[1]
    assert SIGNING_SECRET not in out


@pytest.mark.integration
def test_the_registry_learns_the_secrets_a_session_uses(live_stack: LiveStack) -> None:
    from urllib.parse import parse_qs, urlsplit

    from tests.security.conftest import create_body

    # When a test creates an account with a password, signs requests and gets an SSO token
    password = "Learnt-Pw-7781zq"
    created = live_stack.call("/v1/accounts/create", create_body(91, password=password))
    assert created.status_code == 200, created.text
    sso = live_stack.call("/v1/accounts/sso", {"serviceid": 91})
    token = parse_qs(urlsplit(sso.json()["redirect_url"]).query)["token"][0]
    # Then the session's registry knows all of them (so any log line carrying one fails the run)
    known = REGISTRY.secrets()
    assert password in known and token in known
    assert live_stack.cs.api_secret in known and live_stack.whmcs.secret in known
    signature = [line for line in known if known[line] == "X-CSW-Signature"]
    assert signature and all(len(s) == 64 for s in signature)
