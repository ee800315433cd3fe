"""A throw-away Dovecot 2.3 (IMAP, IMAPS, POP3, POP3S) on 127.0.0.1 for the integration tests.

Everything lives in one directory: ``dovecot.conf``, the passwd-file ``users``, the maildirs,
a test CA with the server certificate it signed (plus a second CA that signed nothing, for
"untrusted certificate" tests), sockets, state and ``dovecot.log``. Nothing under /etc, /run
or /var is touched and no systemd unit is involved.

Traps this handles (measured on Debian 12 with Dovecot 2.3.19, as root):

* Dovecot refuses to access mail as uid 0, so as root the mail belongs to ``nobody`` and the
  directory must be traversable by it: it is made with :func:`tempfile.mkdtemp` under the
  system temp directory (pytest's own base directory is 0700 for root) and chmodded to 0755.
* Failed logins are answered on a fixed 0.5 s timer; the growing per-IP auth penalty is
  switched off (``anvil-auth-penalty`` listener with mode 0) so repeated wrong-password tests
  do not take up to 15 s each.
* Dovecot reads a changed passwd-file again at most once per second (it compares the
  second-resolution ``ioloop_time`` with its last check), so a user appended at run time may
  be refused for up to a second. A pool of users is therefore written before the start and
  each test takes fresh ones from it.
* OAuth2 (XOAUTH2/OAUTHBEARER) checks tokens at an RFC 7662 introspection endpoint; the two
  passdbs are kept apart with ``mechanisms`` so a wrong password is never sent there as a
  token and a token is never checked as a password.
"""

from __future__ import annotations

import imaplib
import itertools
import json
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs

from serversync.model import ServerEndpoint, TlsMode
from tests.integration.pki import Pki, make_pki

__all__ = [
    "Dovecot",
    "DovecotUser",
    "Pki",
    "TokenEndpoint",
    "dovecot_binary",
    "make_pki",
]


def dovecot_binary() -> str:
    """The dovecot executable; /usr/sbin is not on an ordinary user's PATH on Debian."""
    found = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.access(found, os.X_OK):
        raise RuntimeError(
            "dovecot is not installed: run scripts/test.sh, or "
            "apt-get install -y dovecot-imapd dovecot-pop3d"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- certificates -------------------------------------------------------------------------


# --- OAuth2 token introspection ----------------------------------------------------------------


class TokenEndpoint:
    """An RFC 7662 introspection endpoint on 127.0.0.1 that Dovecot asks about each token.

    ``issue(user)`` returns a valid token; ``revoke(token)`` makes it inactive. Unknown and
    revoked tokens get HTTP 200 ``{"active": false}``: Dovecot 2.3 treats any other answer
    without that body as a temporary failure.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/introspect"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def issue(self, user: str) -> str:
        """A new valid token for ``user``."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = user
        return token

    def revoke(self, token: str) -> None:
        """Make ``token`` inactive."""
        with self._lock:
            self._tokens.pop(token, None)

    def _answer(self, token: str) -> dict[str, object]:
        with self._lock:
            user = self._tokens.get(token)
        if user is None:
            return {"active": False}
        return {"active": True, "username": user, "token_type": "Bearer", "scope": "mail"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # Dovecot keeps its connection open

            def setup(self) -> None:
                super().setup()
                endpoint._connections.add(self.connection)

            def finish(self) -> None:
                endpoint._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                token = parse_qs(body).get("token", [""])[0]
                data = json.dumps(endpoint._answer(token)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        # Dovecot's keep-alive connection would keep a handler thread answering.
        for connection in list(self._connections):
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


# --- Dovecot -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DovecotUser:
    """One account on the test Dovecot; the login name is the email address."""

    address: str
    password: str


_CONFIG = """\
# serversync integration tests: a throw-away Dovecot instance
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = serversync-{instance}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
mail_location = maildir:{dir}/mail/%u/Maildir
mail_fsync = never
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
  mechanisms = plain login none
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {dir}/oauth2.conf.ext
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    auto = subscribe
    special_use = \\Sent
  }}
  mailbox Trash {{
    auto = subscribe
    special_use = \\Trash
  }}
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
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
# An MTA (tests/integration/postfix.py) delivers over LMTP and checks SMTP AUTH here.
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service auth {{
  inet_listener auth-mta {{
    address = 127.0.0.1
    port = {auth}
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

_OAUTH2 = """\
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""


class Dovecot:
    """A Dovecot instance in its own directory; use as a context manager.

    ``add_user()`` creates a fresh account while the server runs; ``endpoint()`` gives the
    :class:`ServerEndpoint` of each listener; ``append()`` and ``imap()`` manipulate mailboxes
    the way another mail client would (with imaplib, independent of the code under test).
    """

    def __init__(self, *, oauth2_url: str, users: int = 200) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="serversync-dovecot-"))
        self.dir.chmod(0o755)  # the mail user (nobody) must traverse it
        self.pki = make_pki(self.dir)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.lmtp_port = free_port()
        self.auth_port = free_port()
        self._oauth2_url = oauth2_url
        self._pool = [
            DovecotUser(address=f"user-{n}@serversync.test", password=secrets.token_hex(8))
            for n in range(1, users + 1)
        ]
        self._next_user = itertools.count()
        self._process: subprocess.Popen[bytes] | None = None
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
        else:
            self._uid, self._gid = os.getuid(), os.getgid()

    @property
    def log(self) -> str:
        """What Dovecot logged so far."""
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir(exist_ok=True)
        if os.getuid() == 0:
            login_user, internal_user, internal_group = "dovenull", "dovecot", "dovecot"
            chroot = ""
            os.chown(self.dir / "mail", self._uid, self._gid)
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            login_user = internal_user = me
            internal_group = me
            chroot = "chroot ="  # only root can chroot
        users = self.dir / "users"
        users.write_text(
            "".join(
                f"{u.address}:{{PLAIN}}{u.password}:{self._uid}:{self._gid}::"
                f"{self.dir / 'mail' / u.address}::\n"
                for u in self._pool
            )
        )
        users.chmod(0o644)
        (self.dir / "oauth2.conf.ext").write_text(_OAUTH2.format(url=self._oauth2_url))
        (self.dir / "oauth2.conf.ext").chmod(0o644)
        (self.dir / "dovecot.conf").write_text(
            _CONFIG.format(
                dir=self.dir,
                instance=self.dir.name,
                login_user=login_user,
                internal_user=internal_user,
                internal_group=internal_group,
                chroot=chroot,
                cert=self.pki.cert_file,
                key=self.pki.key_file,
                imap=self.imap_port,
                imaps=self.imaps_port,
                pop3=self.pop3_port,
                pop3s=self.pop3s_port,
                lmtp=self.lmtp_port,
                auth=self.auth_port,
            )
        )

    def start(self) -> None:
        """Write the configuration, start Dovecot in the foreground and wait for its ports."""
        self._write_config()
        output = (self.dir / "dovecot.stdout").open("wb")
        try:
            self._process = subprocess.Popen(
                [dovecot_binary(), "-F", "-c", str(self.dir / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        finally:
            output.close()
        deadline = time.monotonic() + 15
        ports = (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port, self.lmtp_port)
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        stdout = (self.dir / "dovecot.stdout").read_text(errors="replace")
                        self.stop()
                        raise RuntimeError(
                            f"dovecot did not start:\n{stdout}\n{self.log}"
                        ) from None
                    time.sleep(0.02)

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

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

    def add_user(self) -> DovecotUser:
        """An account no other test used, with its own password and an empty mailbox."""
        index = next(self._next_user)
        if index >= len(self._pool):
            raise RuntimeError(f"all {len(self._pool)} test users are taken: raise users=")
        return self._pool[index]

    def endpoint(
        self,
        protocol: str,
        tls: TlsMode,
        *,
        ca_file: Path | None = None,
        verify_certificate: bool = True,
    ) -> ServerEndpoint:
        """The endpoint of the ``imap`` or ``pop3`` listener for ``tls``, trusting our CA."""
        implicit = tls is TlsMode.IMPLICIT
        ports = {
            ("imap", False): self.imap_port,
            ("imap", True): self.imaps_port,
            ("pop3", False): self.pop3_port,
            ("pop3", True): self.pop3s_port,
        }
        return ServerEndpoint(
            host="127.0.0.1",
            port=ports[(protocol, implicit)],
            tls=tls,
            verify_certificate=verify_certificate,
            ca_file=str(ca_file or self.pki.ca_file),
        )

    @contextmanager
    def imap(self, user: DovecotUser) -> Iterator[imaplib.IMAP4]:
        """An imaplib client logged in as ``user`` over IMAPS (another mail client)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        client = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=context, timeout=10)
        try:
            client.login(user.address, user.password)
            yield client
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                client.shutdown()

    def append(
        self,
        user: DovecotUser,
        *messages: bytes,
        folder: str = "INBOX",
        arrived: datetime | None = None,
    ) -> None:
        """Deliver ``messages`` into ``folder`` with IMAP APPEND, in order, as the newest;
        ``arrived`` sets their arrival time (INTERNALDATE), else the server uses now."""
        when = imaplib.Time2Internaldate(arrived) if arrived is not None else None
        with self.imap(user) as client:
            for data in messages:
                status, detail = client.append(folder, None, when, data)
                assert status == "OK", detail

    def flags(self, user: DovecotUser, folder: str = "INBOX") -> dict[int, set[str]]:
        """The flags and keywords of every message in ``folder``, by UID."""
        with self.imap(user) as client:
            client.select(folder, readonly=True)
            status, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
            assert status == "OK", data
        found: dict[int, set[str]] = {}
        for line in data:
            if not isinstance(line, bytes):
                continue
            parsed = imaplib.ParseFlags(line)
            uid = line.split(b"UID ", 1)[1].split()[0].strip(b")")
            found[int(uid)] = {f.decode() for f in parsed}
        return found

    def rebuild_index(self, user: DovecotUser) -> None:
        """Drop the Inbox's UID list and indexes, as a server rebuild would: Dovecot then
        numbers the messages again under a new UIDVALIDITY (taken from its
        ``dovecot-uidvalidity`` counter, so it always differs from the old one)."""
        maildir = self.dir / "mail" / user.address / "Maildir"
        for path in [maildir / "dovecot-uidlist", *maildir.glob("dovecot.index*")]:
            path.unlink(missing_ok=True)
