"""A throw-away PostgreSQL cluster on 127.0.0.1 for the tests, from the Debian packages.

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root, so as root they run as the
``postgres`` user the package created (``setpriv`` execs, so signals reach the server), in a
directory made under the system temp directory and handed to that user (pytest's own base
directory is 0700 for root). Durability is off (``fsync``, ``synchronous_commit``): the data
is thrown away. ``pg_ctl stop -m fast`` ends it even with sessions open.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PostgresServer", "postgres_bindir"]

_SUPERUSER = "postgres"


def postgres_bindir() -> Path:
    """Where the newest installed PostgreSQL keeps initdb, pg_ctl and postgres."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed: scripts/test.sh installs the Debian package postgresql"
        )
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A running cluster: :attr:`url` for the superuser, :meth:`create_database` for more."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="serversync-pg-"))
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as_postgres = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                "--",
            ]

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` as the superuser (trusted on loopback)."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_postgres, str(self.bindir / program), *args]
        # cwd "/": the server user cannot enter root's working directory.
        done = subprocess.run(command, cwd="/", capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-N",
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.directory}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        # -w waits until logins are accepted (the port opens a little earlier).
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def psql(self, sql: str, database: str = "postgres") -> None:
        """Run ``sql`` as the superuser over the cluster's socket."""
        self._run(
            "psql",
            "-h",
            str(self.directory),
            "-p",
            str(self.port),
            "-U",
            _SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        )

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create ``name`` (optionally as a copy of ``template``) and return its URL."""
        clause = f" TEMPLATE {template}" if template else ""
        self.psql(f"CREATE DATABASE {name}{clause}")
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> Sequence[str]:
        """The end of the server log (for failure messages)."""
        log = self.directory / "postgres.log"
        return log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []

    def __enter__(self) -> Self:
        started = time.monotonic()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
