"""Security defaults against real servers: no secret in anything a run leaves behind, and no
silent fall-back to plain text when a profile asks for STARTTLS.

The secret scan runs whole engine cycles (Test & Enable, incoming, outgoing, health, the
quarantine) over Dovecot (IMAP with STARTTLS) and aiosmtpd (SMTP with STARTTLS) with a
right password, a wrong password, a valid OAuth 2.0 token (XOAUTH2) and a revoked one, on
a SQLite store; then the operator commands on that store. Everything is kept: every log
record at DEBUG from every logger, stdout and stderr, the reprs of reports, health, alerts,
quarantine entries and exceptions, and the store's files. None may hold a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from serversync import (
    Alert,
    BaseSyncObserver,
    ConfigurationError,
    CredentialKind,
    Credentials,
    EmailApprovalStatus,
    EmailServerProfile,
    IncomingFilteringMethod,
    Mailbox,
    MailboxId,
    MappingCredentials,
    Secret,
    ServerEndpoint,
    ServerType,
    SyncEngine,
    Timeouts,
    TlsMode,
    Transports,
    Workload,
    new_mailbox,
)
from serversync.adapters.transports import ImapTransport, Pop3Transport, SmtpTransport
from serversync.cli._commands import cli
from serversync.settings import DefaultEmailSettings
from serversync.sql import SqlStorage
from serversync.testing import InMemoryDirectory, a_pending_email, a_profile, a_user, an_email
from tests.integration.dovecot import Dovecot, DovecotUser, TokenEndpoint
from tests.integration.imap_fake import fake_imap
from tests.integration.smtp_server import Mode, SmtpServer

pytestmark = pytest.mark.integration

JANE = "jane@fabrikam.example"


class _Alerts(BaseSyncObserver):
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def alert_raised(self, alert: Alert) -> None:
        self.alerts.append(alert)


class _Lazy:
    """The credentials of ``by_mailbox`` as it is when asked (mailboxes are added later)."""

    def __init__(self, by_mailbox: dict[MailboxId, Credentials]) -> None:
        self._by_mailbox = by_mailbox

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        provider = MappingCredentials(by_mailbox=self._by_mailbox)
        return await provider.resolve(mailbox, profile, workload)


@contextlib.contextmanager
def _everything_logged() -> Iterator[list[str]]:
    """Every log record of every logger at DEBUG, formatted with its exception, as text.

    Each logger known now is set to DEBUG, and those that do not pass records up get the
    handler too, so a library's own logging settings cannot hide a record."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))
            lines.append(repr(record.args))

    handler = Keep(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    loggers = [root] + [
        item
        for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    saved = [(one, one.level, one.disabled) for one in loggers]
    for one in loggers:
        one.setLevel(logging.DEBUG)
        one.disabled = False
        if one is root or not one.propagate:
            one.addHandler(handler)
    logging.getLogger("aiosmtplib").debug("canary: libraries' DEBUG records are kept")
    try:
        yield lines
    finally:
        for one, level, disabled in saved:
            one.removeHandler(handler)
            one.setLevel(level)
            one.disabled = disabled


def _leaks(haystack: str | bytes, needles: dict[str, str]) -> list[str]:
    found = []
    for name, needle in needles.items():
        probe: str | bytes = needle.encode() if isinstance(haystack, bytes) else needle
        if probe in haystack:  # type: ignore[operator]
            found.append(name)
    return found


@attrs.define
class _Accounts:
    good: DovecotUser
    wrong: DovecotUser
    oauth: DovecotUser
    revoked: DovecotUser
    wrong_password: str
    token: str
    revoked_token: str

    def secrets(self) -> dict[str, str]:
        return {
            "the right password": self.good.password,
            "the wrong password": self.wrong_password,
            "the wrong user's real password": self.wrong.password,
            "the OAuth user's password": self.oauth.password,
            "the revoked user's password": self.revoked.password,
            "the OAuth token": self.token,
            "the revoked OAuth token": self.revoked_token,
        }


@pytest.fixture
def accounts(dovecot: Dovecot, oauth_tokens: TokenEndpoint) -> _Accounts:
    good, wrong, oauth, revoked = (dovecot.add_user() for _ in range(4))
    revoked_token = oauth_tokens.issue(revoked.address)
    oauth_tokens.revoke(revoked_token)
    return _Accounts(
        good=good,
        wrong=wrong,
        oauth=oauth,
        revoked=revoked,
        wrong_password=f"Wr0ng-{secrets.token_hex(12)}",
        token=oauth_tokens.issue(oauth.address),
        revoked_token=revoked_token,
    )


@pytest.fixture
def smtp(dovecot: Dovecot, accounts: _Accounts) -> Iterator[SmtpServer]:
    users = {u.address: u.password for u in (accounts.good, accounts.wrong, accounts.oauth)}
    tokens = {accounts.oauth.address: accounts.token}
    with SmtpServer(dovecot.pki, mode=Mode.STARTTLS, users=users, tokens=tokens) as server:
        yield server


@contextlib.asynccontextmanager
async def _store(path: Path) -> AsyncIterator[SqlStorage]:
    storage = await SqlStorage.open(f"sqlite:///{path}", upgrade=True)
    async with storage:
        yield storage


async def test_no_secret_reaches_logs_reports_errors_alerts_or_the_store(
    dovecot: Dovecot,
    accounts: _Accounts,
    smtp: SmtpServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca_file = str(dovecot.pki.ca_file)
    profile = a_profile(
        server_type=ServerType.IMAP_SMTP,
        incoming=dovecot.endpoint("imap", TlsMode.STARTTLS),
        outgoing=ServerEndpoint(
            host="127.0.0.1", port=smtp.port, tls=TlsMode.STARTTLS, ca_file=ca_file
        ),
    )
    directory = InMemoryDirectory()
    credentials: dict[MailboxId, Credentials] = {}
    given = {
        accounts.good: (accounts.good.password, CredentialKind.PASSWORD),
        accounts.wrong: (accounts.wrong_password, CredentialKind.PASSWORD),
        accounts.oauth: (accounts.token, CredentialKind.OAUTH2_ACCESS_TOKEN),
        accounts.revoked: (accounts.revoked_token, CredentialKind.OAUTH2_ACCESS_TOKEN),
    }
    observer = _Alerts()
    kept: list[object] = []
    with _everything_logged() as logged:
        async with _store(tmp_path / "store.db") as storage:
            await storage.add_profile(profile)
            engine = SyncEngine(
                repositories=storage,
                directory=directory,
                transports=Transports.by_server_type(
                    incoming={ServerType.IMAP_SMTP: ImapTransport()},
                    outgoing={ServerType.IMAP_SMTP: SmtpTransport()},
                ),
                credentials=_Lazy(credentials),
                observer=observer,
            )
            async with engine:
                boxes = []
                for user, (secret, kind) in given.items():
                    record = a_user(
                        user.address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES
                    )
                    directory.add(record)
                    box = await engine.provision_mailbox(
                        record.ref,
                        user.address,
                        defaults=DefaultEmailSettings(profile_id=profile.id),
                    )
                    # Dynamics' "Allow to Use Credentials for Email Processing".
                    credentials[box.id] = Credentials(
                        username=user.address, secret=Secret(secret), kind=kind
                    )
                    kept.append(repr(credentials[box.id]))
                    kept.append(str(credentials[box.id].secret))
                    boxes.append(box)
                    dovecot.append(user, an_email(sender=JANE, to=[user.address], subject="hi"))
                # Before approval: disabled with an alert, then approved and tested.
                kept.append(await engine.run_once())
                for box in boxes:
                    await engine.set_mailbox_approval(box.id, EmailApprovalStatus.APPROVED)
                    await storage.add_mailbox(
                        attrs.evolve(
                            await _get(storage, box.id),
                            allow_email_connector_to_use_credentials=True,
                        )
                    )
                    kept.append(await engine.test_mailbox(box.id))
                    await storage.put_activity(
                        a_pending_email(sender_mailbox=box, to=[JANE], subject="reply")
                    )
                for _ in range(2):
                    kept.append(await engine.run_once())
                    kept.append(
                        await engine.sync_mailbox(boxes[0].id, workloads=[Workload.INCOMING])
                    )
                kept.append(await engine.health())
                kept.append(await engine.quarantine())
                with pytest.raises(ConfigurationError) as unknown:
                    await engine.test_mailbox(MailboxId("missing"))
                kept.append(repr(unknown.value))
            kept.append(await storage.list_mailboxes())
            for box in boxes:
                for workload in Workload:
                    kept.append(await storage.get_workload_state(box.id, workload))
            kept.append(await storage.activities())

    reports = repr(kept)
    # The run did what it should, so the scan saw real failures and successes.
    assert "AuthenticationError" in reports, "the wrong password and the revoked token failed"
    assert "'sent'" in reports or "SENT" in reports, "the good mailboxes sent"
    assert "EmailAddressNotApprovedError" in reports
    assert observer.alerts, "alerts were raised"
    assert smtp.handler.users, "SMTP authentication was used"
    assert len(logged) > 20, "DEBUG logging from the libraries was captured"
    assert any(line.startswith("aiosmtplib DEBUG canary") for line in logged)

    found = {
        "log records": _leaks("\n".join(logged), accounts.secrets()),
        "reports, health, states, errors": _leaks(reports, accounts.secrets()),
        "alerts": _leaks(repr(observer.alerts), accounts.secrets()),
        "stdout and stderr": _leaks("".join(capsys.readouterr()), accounts.secrets()),
    }
    for name, data in _files(tmp_path).items():
        found[f"the store file {name}"] = _leaks(data, accounts.secrets())
    assert not any(found.values()), f"secrets leaked: {found}"


def _files(folder: Path) -> dict[str, bytes]:
    """Every file the store left (the database, its WAL and shared memory)."""
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


async def _get(storage: SqlStorage, mailbox_id: MailboxId) -> Mailbox:
    mailbox = await storage.get_mailbox(mailbox_id)
    assert mailbox is not None
    return mailbox


def test_no_secret_reaches_the_operator_commands_or_their_logs(
    dovecot: Dovecot, accounts: _Accounts, smtp: SmtpServer, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {
        "SS_GOOD": accounts.good.password,
        "SS_WRONG": accounts.wrong_password,
        "SS_TOKEN": accounts.token,
        "SS_REVOKED": accounts.revoked_token,
        "COLUMNS": "250",
    }
    runner = CliRunner()
    outputs: list[str] = []

    def run(*args: str) -> None:
        result = runner.invoke(cli, ["--store", store, *args], env=env, catch_exceptions=True)
        outputs.append(result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            outputs.append(repr(result.exception))

    for user in (accounts.good, accounts.wrong, accounts.oauth):
        dovecot.append(user, an_email(sender=JANE, to=[user.address], subject="cli"))
    with _everything_logged() as logged:
        run("init")
        run(
            "profile",
            "add",
            "office",
            "--incoming",
            f"127.0.0.1:{dovecot.imap_port}",
            "--tls",
            "starttls",
            "--outgoing",
            f"127.0.0.1:{smtp.port}",
            "--ca-file",
            str(dovecot.pki.ca_file),
        )
        mailboxes = [
            (accounts.good, ["--password-env", "SS_GOOD"]),
            (accounts.wrong, ["--password-env", "SS_WRONG"]),
            (accounts.oauth, ["--password-env", "SS_TOKEN", "--oauth2"]),
            (accounts.revoked, ["--password-env", "SS_REVOKED", "--oauth2"]),
        ]
        for user, secret in mailboxes:
            run("mailbox", "add", user.address, "--profile", "office", "--filter", "all", *secret)
            run("mailbox", "add", user.address, "--profile", "office", *secret)  # refused
            run("mailbox", "approve", user.address)
            run("mailbox", "test", user.address)
        run("run", "--once")
        run("status")
        run("mailbox", "list")
        run("profile", "show", "office")
        run("quarantine", "list")

    text = "\n".join(outputs)
    assert "AuthenticationError" in text, "the wrong secrets were refused"
    assert "SUCCESS" in text, "the right ones worked"
    assert "already has the mailbox" in text, "a second mailbox was refused"
    found = {
        "command output": _leaks(text, accounts.secrets()),
        "log records": _leaks("\n".join(logged), accounts.secrets()),
        "the store": _leaks((tmp_path / "cli.db").read_bytes(), accounts.secrets()),
    }
    assert not any(found.values()), f"secrets leaked: {found}"


# -- STARTTLS required: no silent downgrade ---------------------------------------------------

CREDENTIALS = Credentials(username="user@contoso.example", secret=Secret("S3cret-no-tls"))
FAST = Timeouts(connect=timedelta(seconds=3), command=timedelta(seconds=2))


async def test_an_imap_server_without_starttls_is_a_permanent_error_and_gets_no_login() -> None:
    seen: list[str] = []
    no_starttls = ["* CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED\r\n", "{tag} OK done\r\n"]
    async with fake_imap({"CAPABILITY": no_starttls}, record=seen) as port:
        endpoint = ServerEndpoint(host="127.0.0.1", port=port, tls=TlsMode.STARTTLS)
        box = a_user("user@contoso.example")
        mailbox = new_mailbox(
            box.ref, box.email_address, defaults=DefaultEmailSettings(profile_id=a_profile().id)
        )
        with pytest.raises(ConfigurationError, match="does not offer STARTTLS") as refused:
            async with ImapTransport(timeouts=FAST).open(
                mailbox, a_profile(incoming=endpoint), CREDENTIALS
            ):
                pass
    assert not refused.value.transient, "permanent: the workload is disabled, not retried"
    assert not [c for c in seen if c.split(" ")[0] in {"LOGIN", "AUTHENTICATE"}], (
        f"no credentials went over plain text: {seen}"
    )


async def test_a_pop3_server_without_stls_is_a_permanent_error_and_gets_no_login() -> None:
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK plain POP3 ready\r\n")
        while line := await reader.readline():
            command = line.decode().strip()
            seen.append(command)
            name = command.split(" ")[0].upper()
            if name == "QUIT":
                writer.write(b"+OK bye\r\n")
                break
            if name == "CAPA":
                writer.write(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")
            else:
                writer.write(b"-ERR unknown command\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = ServerEndpoint(host="127.0.0.1", port=port, tls=TlsMode.STARTTLS)
        profile = a_profile(server_type=ServerType.OTHER_POP3_SMTP, incoming=endpoint)
        user = a_user("user@contoso.example")
        mailbox = new_mailbox(user.ref, user.email_address, defaults=DefaultEmailSettings())
        with pytest.raises(ConfigurationError, match="does not offer STLS") as refused:
            async with Pop3Transport(timeouts=FAST).open(mailbox, profile, CREDENTIALS):
                pass
    finally:
        server.close()
        await server.wait_closed()
    assert not refused.value.transient
    assert not [c for c in seen if c.split(" ")[0].upper() in {"USER", "PASS", "AUTH", "APOP"}], (
        f"no credentials went over plain text: {seen}"
    )


def test_the_secret_scan_helper_finds_what_it_looks_for() -> None:
    assert _leaks("a S3cret b", {"x": "S3cret"}) == ["x"]
    assert _leaks(b"a S3cret b", {"x": "S3cret"}) == ["x"]
    assert _leaks("nothing", {"x": "S3cret"}) == []
