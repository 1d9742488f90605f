"""A throwaway MariaDB server (Debian's `mariadb-server`) for the billing receiver's tests and `make dev`.

WHMCS runs on MySQL/MariaDB (InnoDB); the receiver's exactly-once rule rests on InnoDB's behaviour (a unique key
makes a concurrent second insert wait for the first transaction, then fail; a killed client's transaction is rolled
back). SQLite cannot show that faithfully, so the tests run the real engine: its own datadir and socket under a
temp dir, no TCP port (`--skip-networking`), small buffers so it starts in about a second, root or not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sandboxes.processes import Lifecycle, end_process, wait_ready

INSTALL_HINT = "apt-get install mariadb-server php-mysql"
# A unix socket path longer than this is refused by the kernel (sun_path is 108 bytes including the NUL).
_MAX_SOCKET_PATH = 100
# Small and fast: a test database, not a production one (durability of a crash of the *machine* is not tested).
_SERVER_OPTIONS = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--performance-schema=OFF",
    "--skip-log-bin",
    "--skip-name-resolve",
    "--max-connections=200",
    "--innodb-lock-wait-timeout=20",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
)


class MariaDBUnavailable(RuntimeError):
    """MariaDB cannot be started here; the message names what to install or what went wrong."""


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def binaries() -> tuple[str, str]:
    """(mariadb-install-db, mariadbd), or MariaDBUnavailable naming the package to install."""
    install = _find("mariadb-install-db") or _find("mysql_install_db")
    server = _find("mariadbd") or _find("mysqld")
    if not install or not server:
        missing = "mariadb-install-db" if not install else "mariadbd"
        raise MariaDBUnavailable(f"MariaDB is not installed ({missing} not found): {INSTALL_HINT}")
    return install, server


def available() -> bool:
    try:
        binaries()
    except MariaDBUnavailable:
        return False
    return True


class MariaDB(Lifecycle):
    """One private MariaDB server. `start()` installs a fresh datadir and waits until it accepts connections;
    `stop()` ends it by its pid (TERM, then KILL after 10 s) and removes its directory."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="csw-mariadb-"))
        self.datadir = self.base_dir / "data"
        self.socket = str(self.base_dir / "sock")
        self.pid_file = self.base_dir / "pid"
        self.error_log = self.base_dir / "error.log"
        self.pid = 0
        self._proc: subprocess.Popen[bytes] | None = None
        if len(self.socket) > _MAX_SOCKET_PATH:
            raise MariaDBUnavailable(f"the socket path {self.socket} is too long for a unix socket; "
                                     "pass a shorter base_dir")

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 20.0) -> MariaDB:
        install, server = binaries()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        # Its own temporary directory: a starting mariadbd deletes every #sql* file in its tmpdir, so servers
        # starting at once in a shared /tmp would break each other's install.
        tmpdir = self.base_dir / "tmp"
        tmpdir.mkdir(exist_ok=True)
        own_tmp = [f"--tmpdir={tmpdir}"]
        proc = subprocess.run(
            [install, "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *own_tmp, *as_root],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise MariaDBUnavailable(f"mariadb-install-db failed (exit {proc.returncode}): {' | '.join(tail)}")
        self._proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}", "--skip-networking",
             f"--pid-file={self.pid_file}", f"--log-error={self.error_log}", *own_tmp, *as_root, *_SERVER_OPTIONS],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self._proc.pid
        last_error = ""

        def accepts() -> bool:
            nonlocal last_error
            if not Path(self.socket).exists():
                return False
            try:
                self._connect().close()
            except Exception as exc:  # not ready yet
                last_error = str(exc)
                return False
            return True

        wait_ready(
            self._proc, timeout, accepts, interval=0.05, stop=self.stop,
            exited=lambda code: MariaDBUnavailable(f"mariadbd exited with code {code}: {self._log_tail()}"),
            timed_out=lambda: MariaDBUnavailable(
                f"mariadbd did not accept connections within {timeout:.0f} s ({last_error})"),
        )
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        end_process(proc)
        self.pid = 0
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.datadir, ignore_errors=True)

    # ------------------------------------------------------------------ databases
    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A new PyMySQL connection as root over the socket (autocommit)."""
        return self._connect(database, **kwargs)

    def create_database(self, name: str) -> None:
        _check_name(name)
        self._execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    def drop_database(self, name: str) -> None:
        _check_name(name)
        self._execute(f"DROP DATABASE IF EXISTS `{name}`")

    def _execute(self, sql: str) -> None:
        """One statement on a connection of its own, closed after."""
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def _connect(self, database: str | None = None, **kwargs: Any) -> Any:
        try:
            import pymysql
        except ImportError as exc:  # pragma: no cover - the dev extra installs it
            raise MariaDBUnavailable("PyMySQL is not installed: pip install -e '.[dev]'") from exc
        return pymysql.connect(unix_socket=self.socket, user="root", database=database, autocommit=True,
                               connect_timeout=5, **kwargs)

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.error_log.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no error log)"


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c == "_" for c in name):
        raise ValueError(f"database name {name!r} must be 1-64 letters, digits or underscores")
