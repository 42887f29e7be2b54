"""A private PostgreSQL server that a test may stop and start (the shared one serves the rest of the suite)."""

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import psycopg

from .pooler import REPO
from .procs import free_port


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def unavailable_reason() -> str | None:
    """Why a private server cannot be started here (None when it can)."""
    if _bindir() is None:
        return "PostgreSQL's server binaries are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a `postgres` user to run the server as"
    return None


class PrivateCluster:
    """initdb into a temporary folder, served on a free loopback port; `stop()`/`start()` as a restart would."""

    def __init__(self):
        self.bindir = _bindir()
        self.dir = tempfile.mkdtemp(prefix="pooler-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        # The server refuses to run as root: as root, run it as `postgres`, in a folder it owns.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, os.path.join(self.bindir, tool), *args], check=True, capture_output=True, timeout=60
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are terminated, as in a restart or failover."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_pooler_database(self, name: str) -> str:
        """A new database with the pooler's tables (`manage.py migrate`, in a subprocess); its URL."""
        url = self.create_database(name)
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO,
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stderr[-3000:]}")
        return url

    def query(self, database: str, sql: str) -> list[tuple]:
        with psycopg.connect(self.url(database)) as connection:
            return connection.execute(sql).fetchall()

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)
