"""The billing receiver (`whmcs/modules/servers/computestacks/billing.php`) served as WHMCS would serve it.

A temp WHMCS root holds the stand-in bootstrap (`sandboxes/whmcs_root/init.php`: Capsule on the given database,
`localAPI`, `logModuleCall`, `logActivity`) and a COPY of the module folder at `modules/servers/computestacks/`
(a copy, not a symlink: PHP resolves `__DIR__` through symlinks, so a linked module would look for `init.php`
beside the source tree). `php -S` serves it with several workers (PHP_CLI_SERVER_WORKERS), so requests really run
concurrently, each in its own PHP process with its own database connection, as under PHP-FPM.

Test knobs live in `<root>/knobs.json`, which init.php re-reads on every request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sandboxes.processes import Lifecycle, end_process, wait_ready
from sandboxes.whmcsdb import WhmcsDatabase

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "whmcs" / "modules" / "servers" / "computestacks"
INIT_PHP = Path(__file__).resolve().parent / "whmcs_root" / "init.php"
RECEIVER_PATH = "/modules/servers/computestacks/billing.php"


class ReceiverUnavailable(RuntimeError):
    """php is missing or `php -S` did not come up; the message says which."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ReceiverServer(Lifecycle):
    """`php -S` serving a temp WHMCS root with the receiver; `url` is the receiver's address."""

    def __init__(self, db: WhmcsDatabase, *, workers: int = 4, host: str = "127.0.0.1", port: int = 0,
                 whmcs_version: str = "8.10.1") -> None:
        self.db = db
        self.workers = workers
        self.host = host
        self.port = port
        self.whmcs_version = whmcs_version
        self.root = Path()
        self.pid = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._knobs: dict[str, Any] = {}
        self._log_path: Path | None = None

    @property
    def base_url(self) -> str:
        """The WHMCS root's URL (what an operator would call the WHMCS URL)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The receiver's URL (``WHMCS_RECEIVER_URL``): billing.php below the WHMCS root."""
        return self.base_url + RECEIVER_PATH

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> ReceiverServer:
        php = shutil.which("php")
        if php is None:
            raise ReceiverUnavailable("php-cli is not installed: apt-get install php-cli php-mysql php-sqlite3 "
                                      "php-illuminate-database")
        self.root = Path(tempfile.mkdtemp(prefix="csw-whmcs-"))
        shutil.copy2(INIT_PHP, self.root / "init.php")
        shutil.copytree(MODULE_DIR, self.root / "modules" / "servers" / "computestacks")
        self._write_knobs()
        self.port = self.port or free_port(self.host)
        env = {**os.environ, **self.db.php_env(), "PHP_CLI_SERVER_WORKERS": str(self.workers),
               "CSW_WHMCS_VERSION": self.whmcs_version}
        self._log_path = self.root / "php-server.log"
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [php, "-S", f"{self.host}:{self.port}", "-t", str(self.root),
                 "-d", "display_errors=1", "-d", "error_reporting=E_ALL", "-d", "log_errors=0",
                 "-d", "opcache.enable_cli=0"],
                cwd=str(self.root), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._proc.pid

        def listens() -> bool:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        def exited(code: int) -> ReceiverUnavailable:
            out = self.log_text()[-500:]
            self.stop()
            return ReceiverUnavailable(f"php -S exited with code {code}: {out}")

        wait_ready(self._proc, timeout, listens, interval=0.05, exited=exited, stop=self.stop,
                   timed_out=lambda: ReceiverUnavailable(
                       f"php -S did not listen on {self.host}:{self.port} within {timeout:.0f} s"))
        return self

    def kill(self) -> None:
        """SIGKILL of the whole `php -S` process group (every worker): a crash in the middle of a request."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        end_process(proc, group=True, grace=5)
        if proc is not None:  # workers left behind by a killed parent
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.pid = 0
        if self.root != Path() and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ knobs (read by init.php per request)
    def pause_after_add(self, seconds: float | None) -> None:
        """Sleep inside the transaction right after AddBillableItem inserted the item (before the ref row's
        update and the commit); None or 0 turns it off."""
        self.set_knob("pause_after_add", float(seconds) if seconds else None)

    def paused_requests(self) -> int:
        """How many requests are asleep in `pause_after_add` right now (inside their transaction)."""
        folder = self.root / "paused"
        return len(list(folder.iterdir())) if self.root != Path() and folder.is_dir() else 0

    def wait_paused(self, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until `count` requests are asleep inside their transaction (after AddBillableItem)."""
        deadline = time.monotonic() + timeout
        while self.paused_requests() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.paused_requests()} of {count} requests reached the pause within "
                                   f"{timeout:.0f} s")
            time.sleep(0.02)

    def notice_in_bootstrap(self, on: bool = True) -> None:
        """The bootstrap raises a PHP notice and echoes a warning, as a badly-behaved WHMCS addon would."""
        self.set_knob("notice_in_bootstrap", bool(on) or None)

    def add_error(self, message: str | None) -> None:
        """Every AddBillableItem answers result=error with this message (None: off)."""
        self.set_knob("add_error", message or None)

    def set_knob(self, name: str, value: Any) -> None:
        if value is None:
            self._knobs.pop(name, None)
        else:
            self._knobs[name] = value
        self._write_knobs()

    def _write_knobs(self) -> None:
        if self.root == Path():
            return
        tmp = self.root / "knobs.json.tmp"
        tmp.write_text(json.dumps(self._knobs))
        os.replace(tmp, self.root / "knobs.json")

    def log_text(self) -> str:
        """What `php -S` printed (its request lines and anything PHP wrote to stderr)."""
        try:
            return self._log_path.read_text(errors="replace") if self._log_path else ""
        except OSError:
            return ""
