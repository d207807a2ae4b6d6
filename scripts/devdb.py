#!/usr/bin/env python3
"""Run a command against a PostgreSQL, provisioning one when ``DATABASE_URL`` is unset.

Usage::

    python scripts/devdb.py [--data-dir DIR] -- COMMAND [ARGS...]

* ``DATABASE_URL`` set: the command runs against it unchanged; nothing is started.
* otherwise a private PostgreSQL cluster is started on a free loopback port and
  ``DATABASE_URL`` is exported to the command. With ``--data-dir`` the cluster's files are
  kept there (``make run`` keeps ``.edm/pgdata`` so a second run reuses the data); without
  it a throwaway cluster lives in a temporary folder and is deleted afterwards
  (``make test``).
* The server is stopped when the command ends, fails, or on Ctrl-C / SIGTERM.

Where it gets PostgreSQL from, in order: the installed server's ``initdb``/``pg_ctl``
(``pg_config --bindir``, ``PATH``, ``/usr/lib/postgresql/*/bin``), else the pip package
``pgserver`` (an embedded PostgreSQL wheel), installed on first use
(``EDM_DEVDB_EMBEDDED=1`` forces it). ``initdb`` refuses to
run as root, so as root the cluster runs as the ``postgres`` system user, and its folder is
placed where that user can reach it.

Only the standard library is used so the script runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

DB_NAME = "edm"
# Throwaway clusters trade durability for speed; a kept cluster stays durable.
FAST_SETTINGS = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
COMMON_SETTINGS = [
    "max_connections=300",
    "shared_buffers=256MB",
    "work_mem=16MB",
    "maintenance_work_mem=256MB",
    "max_wal_size=4GB",
    "checkpoint_timeout=30min",
]


def log(message: str) -> None:
    print(f"[devdb] {message}", file=sys.stderr, flush=True)


def find_bindir() -> str | None:
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if os.path.exists(os.path.join(out, "initdb")):
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return os.path.dirname(candidates[0]) if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_as(user: str | None, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    # A session of its own: Ctrl-C in the terminal reaches the command we supervise, not
    # the server, which is stopped only after that command has finished with it.
    return subprocess.run(argv, start_new_session=True, **kwargs)


def reachable_by(user: str, path: str) -> bool:
    result = run_as(user, ["test", "-w", path], capture_output=True)
    return result.returncode == 0


class Cluster:
    """A PostgreSQL cluster driven by the installed ``initdb``/``pg_ctl``."""

    def __init__(self, bindir: str, data_dir: str, *, throwaway: bool) -> None:
        self.bindir = bindir
        self.data_dir = data_dir
        self.throwaway = throwaway
        self.user = "postgres" if os.geteuid() == 0 else None
        self.port = free_port()

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _chown(self, path: str) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        os.makedirs(self.data_dir, exist_ok=True)
        self._chown(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            run_as(
                self.user,
                [
                    self._bin("initdb"),
                    "-D",
                    self.data_dir,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--locale=C",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        settings = COMMON_SETTINGS + (FAST_SETTINGS if self.throwaway else [])
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {setting}" for setting in settings)
        run_as(
            self.user,
            [
                self._bin("pg_ctl"),
                "-D",
                self.data_dir,
                "-o",
                options,
                "-l",
                os.path.join(self.data_dir, "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        exists = run_as(
            self.user,
            [
                self._bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if exists != "1":
            run_as(
                self.user,
                [
                    self._bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    DB_NAME,
                ],
                check=True,
            )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    def stop(self) -> None:
        run_as(
            self.user,
            [self._bin("pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.throwaway:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class EmbeddedCluster:
    """The pip package ``pgserver``: a real PostgreSQL from a wheel, for machines without one.

    pgserver starts the server (as the ``pgserver`` system user when we are root) listening
    on a Unix socket only. We stop it ourselves with ``pg_ctl stop`` rather than through
    pgserver's handle counting, which leaves the postmaster running when an earlier run was
    killed (its pid list in the data folder then never empties); and we verify that the
    postmaster is gone.
    """

    def __init__(self, data_dir: str, *, throwaway: bool) -> None:
        self.data_dir = data_dir
        self.throwaway = throwaway
        self.server = None
        self.user: str | None = None
        self.pg_ctl: str | None = None

    def start(self) -> str:
        if not os.environ.get("XDG_RUNTIME_DIR"):
            # pgserver (platformdirs) wants a private runtime folder, else it litters /tmp.
            runtime = tempfile.mkdtemp(prefix="edm-xdg-")
            os.chmod(runtime, 0o700)
            os.environ["XDG_RUNTIME_DIR"] = runtime
        try:
            import pgserver
        except ImportError:
            log("no PostgreSQL installed; installing the embedded one (pgserver)")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "pgserver==0.1.4"], check=True
            )
            import pgserver
        from pgserver._commands import POSTGRES_BIN_PATH

        self.pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        settings = COMMON_SETTINGS + (FAST_SETTINGS if self.throwaway else [])
        if self._apply_settings(settings):
            # pg_ctl restart keeps the options pgserver started it with (postmaster.opts).
            run_as(
                self.user,
                [self.pg_ctl, "-D", self.data_dir, "-m", "fast", "-w", "-t", "60", "restart"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        exists = self.server.psql(f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}';")
        if "(1 row)" not in exists:
            self.server.psql(f"CREATE DATABASE {DB_NAME};")
        socket_dir, port = self._socket()
        # The socket folder goes where Django's URL parser reads the host, not in the query.
        host = urllib.parse.quote(socket_dir, safe="")
        return f"postgresql://postgres@{host}:{port}/{DB_NAME}"

    def _apply_settings(self, settings: list[str]) -> bool:
        """ALTER SYSTEM the settings that differ; True when a restart is needed."""
        changed = []
        for setting in settings:
            name, value = setting.split("=", 1)
            current = self.server.psql(f"SELECT current_setting('{name}');")
            if value not in current.split():
                changed.append(f"ALTER SYSTEM SET {name} = '{value}';")
        if changed:
            self.server.psql("\n".join(changed))
        return bool(changed)

    def _socket(self) -> tuple[str, int]:
        """The socket directory and port from ``postmaster.pid`` (lines 5 and 4)."""
        with open(os.path.join(self.data_dir, "postmaster.pid")) as pidfile:
            lines = pidfile.read().splitlines()
        return lines[4].strip(), int(lines[3])

    def _postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as pidfile:
                return int(pidfile.readline())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self._postmaster_pid()
        if self.pg_ctl and pid:
            run_as(
                self.user,
                [self.pg_ctl, "-D", self.data_dir, "-m", "fast", "-w", "-t", "30", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if not _wait_gone(pid, timeout=10):
                log(f"postmaster {pid} did not stop; killing it")
                _kill(pid)
        if self.throwaway:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, timeout=5)


def pick_data_dir(requested: str | None) -> tuple[str, bool]:
    """Return (data directory, throwaway?)."""
    if requested is None:
        # EDM_DEVDB_TMPDIR: where throwaway clusters go (CI gives each run its own folder,
        # so it can tell its servers from anyone else's). It must be reachable by the
        # server's user, so not under root's home.
        parent = os.environ.get("EDM_DEVDB_TMPDIR", "/tmp")
        os.makedirs(parent, exist_ok=True)
        os.chmod(parent, 0o755)
        return tempfile.mkdtemp(prefix="edm-pg-", dir=parent), True
    path = os.path.abspath(requested)
    if os.geteuid() == 0:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        # The server runs as ``postgres``: it must be able to traverse every parent folder.
        probe = run_as("postgres", ["test", "-x", parent], capture_output=True)
        if probe.returncode != 0:
            digest = hashlib.sha1(path.encode()).hexdigest()[:10]
            fallback = f"/var/tmp/edm-{digest}/pgdata"
            log(f"{parent} is not reachable by the postgres user; keeping data in {fallback}")
            os.makedirs(os.path.dirname(fallback), exist_ok=True)
            return fallback, False
    return path, False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="keep the cluster in DIR (default: throwaway)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is required after --")

    if os.environ.get("DATABASE_URL"):
        return subprocess.call(command)

    data_dir, throwaway = pick_data_dir(args.data_dir)
    bindir = find_bindir()
    embedded = os.environ.get("EDM_DEVDB_EMBEDDED") == "1"
    if bindir and not embedded and (os.geteuid() != 0 or _has_user("postgres")):
        cluster: Cluster | EmbeddedCluster = Cluster(bindir, data_dir, throwaway=throwaway)
    else:
        cluster = EmbeddedCluster(data_dir, throwaway=throwaway)

    started = time.monotonic()
    try:
        url = cluster.start()
    except Exception as exc:
        log(f"could not start PostgreSQL in {data_dir}: {exc}")
        cluster.stop()
        return 1
    log(f"PostgreSQL ready at {url} in {time.monotonic() - started:.1f}s")

    env = dict(os.environ, DATABASE_URL=url)
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        while True:
            try:
                code = child.wait()
            except KeyboardInterrupt:
                continue
            # A child killed by a signal exits as a shell reports it: 128 + the signal.
            return 128 - code if code < 0 else code
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cluster.stop()
        log("PostgreSQL stopped")


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
