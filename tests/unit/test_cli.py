"""The developer commands of `cswhmcs` that sign requests."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from cswhmcs.cli import main
from cswhmcs.signing import verify

ROOT = Path(__file__).resolve().parents[2]


def test_curl_prints_a_request_signed_for_its_route(capsys: pytest.CaptureFixture[str]) -> None:
    # When
    assert main(["curl", "/v1/accounts/overview", '{"serviceid":42}', "--secret", "k1"]) == 0
    # Then the printed command carries a signature the API accepts
    argv = shlex.split(capsys.readouterr().out)
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    body = argv[argv.index("--data-binary") + 1].encode()
    verify(headers, "/v1/accounts/overview", body, [b"k1"])
    assert argv[argv.index("-X") + 2] == "http://127.0.0.1:3000/v1/accounts/overview"


def test_sign_event_refreshes_an_event_file(tmp_path: Path) -> None:
    # Given a committed event (signed long ago with the development secret)
    event_file = tmp_path / "e.json"
    shutil.copy(ROOT / "events" / "suspend_account.json", event_file)
    old = json.loads(event_file.read_text())
    # When
    assert main(["sign-event", str(event_file), "--secret", "fresh-secret", "--in-place"]) == 0
    # Then the headers (both forms) carry a fresh signature of the same body
    new = json.loads(event_file.read_text())
    assert new["body"] == old["body"]
    verify(new["headers"], new["resource"], new["body"].encode(), [b"fresh-secret"])
    assert new["multiValueHeaders"]["X-CSW-Signature"] == [new["headers"]["X-CSW-Signature"]]


def test_signing_commands_without_a_secret_say_so(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SIGNING_SECRET", raising=False)
    assert main(["curl", "/v1/connection/test"]) == 2
    assert "SIGNING_SECRET" in capsys.readouterr().err


def test_version_is_the_one_of_pyproject_and_the_changelog(capsys: pytest.CaptureFixture[str]) -> None:
    import re
    import tomllib

    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    printed = capsys.readouterr().out.strip()
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert printed == f"cswhmcs {version}"
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", (root / "CHANGELOG.md").read_text(), re.M)
    assert releases and releases[0] == version  # the newest release of the changelog
