"""Screenshot of the client area panel: `make screenshot` -> artifacts/clientarea.png (not committed).

The panel as a customer sees it: the real module's computestacks_ClientArea() runs (tests/php/driver.php,
php-cli) against the recording backend of tests/php/test_usage_views.py, which answers `/v1/accounts/overview`
with twelve months of a growing account (the four figures, usage so far by product, the last 12 billed
periods); its vars are rendered with Debian's Smarty 3, wrapped in a page styled by Bootstrap (the npm package
in node_modules, installed by `make setup`) laid out like a WHMCS product details page, and headless Chromium
takes the picture. Not a test: a look for humans.
"""

from __future__ import annotations

import html
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.chromium import INSTALL_HINT, find_chromium, render  # noqa: E402 - after the path tweak
from tests.php.test_template import SMARTY  # noqa: E402
from tests.php.test_usage_views import (  # noqa: E402
    PHP,
    Recorder,
    _start,
    client_area,
    overview,
    realistic_billed,
)

CSS = ROOT / "node_modules" / "bootstrap" / "dist" / "css" / "bootstrap.min.css"
OUT = ROOT / "artifacts" / "clientarea.png"
HEIGHT = 1500  # the four figures, the usage table and the 12-month chart, below the product's card


def real_panel() -> str:
    """The template's HTML for the vars computestacks_ClientArea() builds from the sample account's overview."""
    backend = _start(Recorder())
    try:
        _, panel, _ = client_area(backend, overview(billed=realistic_billed()), tab=False)
    finally:
        assert backend.server is not None
        backend.server.shutdown()
        backend.server.server_close()
    return panel


def page(panel: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Product Details - Client Area</title>
<link rel="stylesheet" href="{CSS.as_uri()}">
<style>body {{ background: #f6f7f9; }} .sidebar .list-group-item {{ font-size: .9rem; }}</style>
</head><body>
<nav class="navbar navbar-dark bg-dark mb-4"><div class="container">
  <span class="navbar-brand">Example Hosting</span><span class="navbar-text">Client Area</span>
</div></nav>
<div class="container">
  <nav aria-label="breadcrumb"><ol class="breadcrumb">
    <li class="breadcrumb-item">Portal Home</li><li class="breadcrumb-item">Client Area</li>
    <li class="breadcrumb-item">My Products &amp; Services</li>
    <li class="breadcrumb-item active">Product Details</li></ol></nav>
  <div class="row">
    <div class="col-md-3 sidebar">
      <div class="card mb-3"><div class="card-header">Overview</div>
        <div class="list-group list-group-flush">
          <span class="list-group-item active">Information</span>
          <span class="list-group-item">Upgrade/Downgrade</span>
          <span class="list-group-item">Request Cancellation</span>
        </div></div>
    </div>
    <div class="col-md-9">
      <div class="card mb-3"><div class="card-body">
        <h4 class="mb-1">Cloud Hosting</h4><div class="text-muted mb-2">Cloud</div>
        <span class="badge bg-success">Active</span>
        <dl class="row mt-3 mb-0 small">
          <dt class="col-sm-3">Registration Date</dt><dd class="col-sm-9">01/03/2024</dd>
          <dt class="col-sm-3">Recurring Amount</dt><dd class="col-sm-9">€0.00 EUR</dd>
        </dl></div></div>
      {panel}
    </div>
  </div>
</div>
</body></html>
"""


def main() -> int:
    if find_chromium() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    if not CSS.is_file():
        print(f"{CSS} is missing: run `npm install` (or `make setup`)", file=sys.stderr)
        return 1
    if PHP is None:
        print("php-cli is missing: apt-get install -y php-cli php-curl (make setup installs it)", file=sys.stderr)
        return 1
    if not SMARTY.is_file():
        print(f"{SMARTY} is missing: apt-get install -y smarty3 (make setup installs it)", file=sys.stderr)
        return 1
    try:
        panel = real_panel()
    except AssertionError as exc:  # the driver or Smarty failed: say why
        print(f"could not render the client area: {exc}", file=sys.stderr)
        return 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cs-screenshot-") as tmp:
        doc = Path(tmp) / "clientarea.html"
        doc.write_text(page(panel), encoding="utf-8")
        proc = render(doc, screenshot=OUT, dump_dom=False, width=1200, height=HEIGHT)
    if proc.returncode != 0 or not OUT.is_file():
        print(html.unescape(proc.stderr[-2000:]), file=sys.stderr)
        return proc.returncode or 1
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
