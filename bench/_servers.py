"""The servers a benchmark run starts for itself, all on 127.0.0.1 and all thrown away after.

* :class:`Dovecot`: IMAP, IMAPS and POP3 with any number of users, seeded by writing maildir
  files (thousands of messages a second; Dovecot indexes them at the next SELECT).
* :class:`SmtpSink`: aiosmtpd in a child process (so that client and server do not share one
  interpreter), counting what it accepts.
* PostgreSQL: the test suite's throw-away cluster (:class:`tests.postgres_server.PostgresServer`).

The Dovecot configuration follows the test suite's (``tests/integration/dovecot.py``) without
OAuth, with higher process limits, and with every user's password the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.integration.dovecot import dovecot_binary
from tests.integration.pki import Pki, make_pki
from tests.postgres_server import PostgresServer

__all__ = ["PASSWORD", "Dovecot", "PostgresServer", "SmtpSink", "die_with_parent", "free_port"]

PASSWORD = "bench-secret"
"""Every benchmark account's password."""


def die_with_parent() -> None:
    """In a child before it runs: end it (SIGTERM) when the benchmark process dies, even
    when that one is killed and cannot stop its servers (Linux ``PR_SET_PDEATHSIG``)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"{what} did not start:\n{text[-3000:]}") from None
            time.sleep(0.02)


_CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = serversync-bench-{instance}
log_path = {dir}/dovecot.log
info_log_path = /dev/null
protocols = imap pop3
listen = 127.0.0.1
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_process_limit = {process_limit}
default_client_limit = {client_limit}
first_valid_uid = 1
mail_location = maildir:{dir}/mail/%u/Maildir
mail_fsync = never
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  {chroot}
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  {chroot}
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  {chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth-worker {{
  user = $default_internal_user
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service imap-urlauth-login {{
  unix_listener imap-urlauth {{
    mode = 0
  }}
}}
"""


class Dovecot:
    """A Dovecot 2.3 in its own directory with the accounts ``users`` (password
    :data:`PASSWORD`); IMAP and POP3 in plain text, IMAPS with a throw-away test CA."""

    def __init__(self, users: Iterable[str], *, process_limit: int = 400) -> None:
        self.users = list(dict.fromkeys(users))
        self.dir = Path(tempfile.mkdtemp(prefix="serversync-bench-dovecot-"))
        self.dir.chmod(0o755)  # the mail user (nobody, as root) must traverse it
        self.pki: Pki = make_pki(self.dir)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.pop3_port = free_port()
        self._process_limit = process_limit
        self._process: subprocess.Popen[bytes] | None = None
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
        else:
            self._uid, self._gid = os.getuid(), os.getgid()

    def maildir(self, user: str) -> Path:
        """Where ``user``'s Inbox lives."""
        return self.dir / "mail" / user / "Maildir"

    def _write_config(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir(exist_ok=True)
        if os.getuid() == 0:
            login_user, internal_user, internal_group, chroot = (
                "dovenull",
                "dovecot",
                "dovecot",
                "",
            )
            os.chown(self.dir / "mail", self._uid, self._gid)
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            login_user = internal_user = internal_group = me
            chroot = "chroot ="  # only root can chroot
        users = self.dir / "users"
        users.write_text(
            "".join(
                f"{u}:{{PLAIN}}{PASSWORD}:{self._uid}:{self._gid}::{self.dir / 'mail' / u}::\n"
                for u in self.users
            )
        )
        users.chmod(0o644)
        (self.dir / "dovecot.conf").write_text(
            _CONFIG.format(
                dir=self.dir,
                instance=secrets.token_hex(4),
                login_user=login_user,
                internal_user=internal_user,
                internal_group=internal_group,
                process_limit=self._process_limit,
                client_limit=self._process_limit * 10,
                chroot=chroot,
                cert=self.pki.cert_file,
                key=self.pki.key_file,
                imap=self.imap_port,
                imaps=self.imaps_port,
                pop3=self.pop3_port,
            )
        )

    def seed(self, user: str, messages: Iterable[bytes]) -> tuple[int, int]:
        """Write ``messages`` (CRLF) into ``user``'s Inbox as maildir files, oldest first;
        return (messages, bytes). The file names carry both sizes, so Dovecot needs not
        read a file to know them."""
        maildir = self.maildir(user)
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        cur = maildir / "cur"
        stamp = int(time.time())
        count = size = 0
        for count, data in enumerate(messages, 1):
            name = f"{stamp}.M{count:08d}P{os.getpid()}.bench,S={len(data)},W={len(data)}:2,"
            (cur / name).write_bytes(data)
            size += len(data)
        if os.getuid() == 0:
            home = self.dir / "mail" / user
            for root, _dirs, files in os.walk(home):
                os.chown(root, self._uid, self._gid)
                for name in files:
                    os.chown(os.path.join(root, name), self._uid, self._gid)
        return count, size

    def start(self) -> None:
        """Write the configuration, start Dovecot in the foreground and wait for its ports."""
        self._write_config()
        log = self.dir / "dovecot.stdout"
        with log.open("wb") as output:
            self._process = subprocess.Popen(
                [dovecot_binary(), "-F", "-c", str(self.dir / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        for port in (self.imap_port, self.imaps_port, self.pop3_port):
            _wait_for_port(port, self._process, "dovecot", log)

    def stop(self) -> None:
        """Stop Dovecot and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SmtpSink:
    """aiosmtpd on a free port in a child process (``python -m bench._smtp_sink``).

    It accepts every message without AUTH or TLS and counts them: :meth:`count` asks it.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench._smtp_sink", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
            preexec_fn=die_with_parent,
        )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline().strip()
        if ready != "READY":
            self.stop()
            raise RuntimeError(f"the SMTP sink did not start: {ready!r}")

    def count(self) -> int:
        """Messages accepted so far."""
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write("count\n")
        process.stdin.flush()
        return int(process.stdout.readline())

    @property
    def pid(self) -> int:
        """The server process (for its CPU time)."""
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        """Stop the server (it exits when its stdin closes)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
