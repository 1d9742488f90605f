"""clientarea.tpl rendered by Debian's real Smarty 3 (the engine family WHMCS uses).

`render_clientarea()` is also used by tests/php/screenshot.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "whmcs" / "modules" / "servers" / "computestacks"
TEMPLATE = MODULE_DIR / "clientarea.tpl"
SMARTY = Path("/usr/share/php/smarty3/Smarty.class.php")
PHP = shutil.which("php")

pytestmark = [
    pytest.mark.php,
    pytest.mark.skipif(PHP is None, reason="php-cli is not installed (apt-get install php-cli)"),
    pytest.mark.skipif(
        not SMARTY.is_file(), reason="Debian's smarty3 is not installed (apt-get install smarty3)"
    ),
]

# Smarty 3.1 predates PHP 8.2's dynamic-property deprecation: silence E_DEPRECATED from the library only,
# and turn anything else (notices about unassigned variables, warnings) into a failure.
_RENDER = r"""
error_reporting(E_ALL & ~E_DEPRECATED);
require $argv[1];
$problems = array();
set_error_handler(function ($severity, $message, $file, $line) use (&$problems) {
    if ($severity !== E_DEPRECATED && $severity !== E_USER_DEPRECATED) {
        $problems[] = "$message ($file:$line)";
    }
    return true;
});
$smarty = new Smarty();
$smarty->setTemplateDir($argv[2]);
$smarty->setCompileDir($argv[3]);
$smarty->setCacheDir($argv[3]);
$smarty->error_unassigned = true;
$smarty->assign(json_decode(stream_get_contents(STDIN), true));
$html = $smarty->fetch('clientarea.tpl');
if ($problems) {
    fwrite(STDERR, implode("\n", $problems) . "\n");
    exit(3);
}
echo $html;
"""

SAMPLE_VARS: dict[str, Any] = {
    "serviceid": 42,
    "sso_url": "clientarea.php?action=productdetails&id=42&dosinglesignon=1",
    "error": "",
    "username": "ann.lee@example.org",
    "cs_user_id": "17",
    "active": True,
    "projects": 3,
    "services": 7,
    "run_rate": "12.30",
    "current_usage": "4.05",
    "currency": "EUR",
    "currency_symbol": "€",
    "run_rate_display": "€12.30",
    "current_usage_display": "€4.05",
    # what a backend without API.md section 3's usage additions gives (tests/php/test_usage_views.py has them)
    "usage_reported": False,
    "billed_reported": False,
}


def render_clientarea(variables: dict[str, Any]) -> str:
    """The template's HTML for `variables`, as computestacks_ClientArea() would hand them to Smarty."""
    assert PHP is not None
    with tempfile.TemporaryDirectory(prefix="smarty-") as compile_dir:
        proc = subprocess.run(
            [
                PHP,
                "-d",
                "display_errors=stderr",
                "-r",
                _RENDER,
                "--",
                str(SMARTY),
                str(MODULE_DIR),
                compile_dir,
            ],
            input=json.dumps(variables),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(f"Smarty failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


class _Elements(HTMLParser):
    """Collects text by CSS class and every link's href (attribute values come back unescaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.text_by_class: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []
        self._open: list[tuple[str, list[str]]] = []
        self._link: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._open.append((tag, a.get("class", "").split()))
        if tag == "a":
            self._link = {"href": a.get("href", ""), "text": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            self.links.append((self._link["href"], self._link["text"].strip()))
            self._link = None
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, classes in self._open:
            for c in classes:
                self.text_by_class[c] = self.text_by_class.get(c, "") + data
        if self._link is not None:
            self._link["text"] += data


def parse(html: str) -> _Elements:
    p = _Elements()
    p.feed(html)
    p.close()
    return p


def test_overview_figures_and_sso_link() -> None:
    html = render_clientarea(SAMPLE_VARS)
    page = parse(html)
    text = {k: v.strip() for k, v in page.text_by_class.items()}
    assert text["computestacks-run-rate"] == "€12.30"
    assert text["computestacks-current-usage"] == "€4.05"
    assert text["computestacks-currency"] == "EUR"
    assert text["computestacks-projects"] == "3"
    assert text["computestacks-services"] == "7"
    assert "ann.lee@example.org" in text["computestacks-username"]
    assert "Active" in text["computestacks-username"]
    assert page.links == [
        ("clientarea.php?action=productdetails&id=42&dosinglesignon=1", "Launch Control Panel")
    ]
    # the & of the URL is escaped in the markup itself
    assert 'href="clientarea.php?action=productdetails&amp;id=42&amp;dosinglesignon=1"' in html
    assert "alert-warning" not in html
    # without the usage additions, neither their panels nor a chart
    assert "Usage This Period" not in html and "Billing History" not in html and "<svg" not in html


def test_every_value_is_escaped() -> None:
    hostile = {
        **SAMPLE_VARS,
        "username": '<script>alert("x")</script>@example.org',
        "run_rate_display": "<b>€12.30</b>",
        "currency": 'EUR"><img src=x onerror=alert(1)>',
        "sso_url": 'clientarea.php?id=42"><script>alert(2)</script>',
    }
    html = render_clientarea(hostile)
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;@example.org" in html
    assert "&lt;b&gt;€12.30&lt;/b&gt;" in html


def test_template_escapes_each_variable_it_prints() -> None:
    source = TEMPLATE.read_text(encoding="utf-8")
    printed = re.findall(r"\{\$[^}]*\}", source)
    assert printed, "the template prints nothing?"
    assert all("|escape" in tag for tag in printed), [t for t in printed if "|escape" not in t]
    markup = re.sub(r"\{\*.*?\*\}", "", source, flags=re.S)  # comments are not rendered
    assert not re.search(r"(?i)(secret|token|password|accesshash)", markup)


def test_suspended_account_has_no_launch_link() -> None:
    html = render_clientarea({**SAMPLE_VARS, "active": False})
    page = parse(html)
    assert page.links == []
    assert "Suspended" in page.text_by_class["computestacks-username"]
    assert "Launch Control Panel" in html  # shown disabled


def test_error_branch() -> None:
    html = render_clientarea(
        {
            "serviceid": 42,
            "sso_url": SAMPLE_VARS["sso_url"],
            "error": "Your cloud account details could not be loaded <now>.",
        }
    )
    assert "alert-warning" in html
    assert "Your cloud account details could not be loaded &lt;now&gt;." in html
    assert "<table" not in html and "Launch Control Panel" not in html
