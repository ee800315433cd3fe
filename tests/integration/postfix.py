"""A throw-away Postfix on 127.0.0.1 that delivers into the test Dovecot over LMTP.

It is a private instance (``postfix -c DIR``) with its own configuration, queue and log, so a
system Postfix, if any, is left alone and no system MTA is needed. Its submission port works
like a provider's: STARTTLS required, then AUTH checked against the Dovecot users (Dovecot's
auth service over TCP); mail for ``@serversync.test`` goes over LMTP into the Dovecot
mailboxes, and every other domain is refused, so nothing leaves the machine.

Traps this handles (Postfix 3.7 on Debian 12, as root):

* Postfix re-reads a configuration file until its mtime is about 2 s old, in case it is still
  being written; the files are back-dated so a start takes well under a second.
* The queue and data directories live outside the configuration directory (otherwise the
  start-up check warns about every queue subdirectory), and no service is chrooted.
* There is no syslog: ``maillog_file`` with the ``postlog`` service writes the log into DIR.
* Dovecot 2.3's LMTP does not offer SMTPUTF8, so Postfix must not advertise it either.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from serversync.model import ServerEndpoint, TlsMode
from tests.integration.dovecot import Dovecot, DovecotUser, free_port

__all__ = ["Postfix", "postfix_binary"]

DOMAIN = "serversync.test"

_MAIN = """\
compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = localhost
mydomain = localdomain
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled in the tests
relay_domains =
default_transport = error:5.7.1 outbound mail disabled in the tests
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = texthash:{dir}/conf/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth}
smtpd_sasl_auth_enable = no
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
in_flow_delay = 0
biff = no
smtputf8_enable = no
"""

_MASTER = """\
127.0.0.1:{submission} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_binary() -> str:
    """The ``postfix`` command; scripts/test.sh installs the Debian package."""
    path = shutil.which("postfix") or "/usr/sbin/postfix"
    if not os.path.exists(path):
        raise RuntimeError("Postfix is not installed: scripts/test.sh installs it")
    return path


class Postfix:
    """A running private Postfix in front of ``dovecot``; use as a context manager.

    Only root can start Postfix (its daemons run as the ``postfix`` user).
    """

    def __init__(self, dovecot: Dovecot, users: list[DovecotUser]) -> None:
        self.dovecot = dovecot
        self.users = users
        self.dir = Path(tempfile.mkdtemp(prefix="serversync-postfix-"))
        self.dir.chmod(0o755)  # the postfix user reads its configuration
        self.submission_port = free_port()

    @property
    def log(self) -> str:
        """What Postfix logged so far."""
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def endpoint(self) -> ServerEndpoint:
        """The submission port as a profile's outgoing endpoint (STARTTLS, our test CA)."""
        return ServerEndpoint(
            host="127.0.0.1",
            port=self.submission_port,
            tls=TlsMode.STARTTLS,
            ca_file=str(self.dovecot.pki.ca_file),
        )

    def _postfix(self, *args: str) -> None:
        done = subprocess.run(
            [postfix_binary(), "-c", str(self.dir / "conf"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {done.stderr}{self.log}")

    def start(self) -> None:
        conf = self.dir / "conf"
        for sub in ("conf", "spool", "data"):
            (self.dir / sub).mkdir()
        # The queue is set up by `postfix start` itself; the data directory (locks, TLS
        # caches) must already belong to the postfix user.
        owner = pwd.getpwnam("postfix")
        os.chown(self.dir / "data", owner.pw_uid, owner.pw_gid)
        values = {
            "dir": self.dir,
            "domain": DOMAIN,
            "lmtp": self.dovecot.lmtp_port,
            "auth": self.dovecot.auth_port,
            "cert": self.dovecot.pki.cert_file,
            "key": self.dovecot.pki.key_file,
            "submission": self.submission_port,
        }
        (conf / "main.cf").write_text(_MAIN.format(**values))
        (conf / "master.cf").write_text(_MASTER.format(**values))
        (conf / "vmailbox").write_text("".join(f"{u.address} OK\n" for u in self.users))
        # Postfix waits for files younger than about 2 s to settle; these are complete.
        past = time.time() - 60
        for name in ("main.cf", "master.cf", "vmailbox"):
            os.utime(conf / name, (past, past))
        self._postfix("start")
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.submission_port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postfix did not open its port:\n{self.log}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if (self.dir / "spool" / "pid" / "master.pid").exists():
            subprocess.run(
                [postfix_binary(), "-c", str(self.dir / "conf"), "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
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
