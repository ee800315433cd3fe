"""Undeliverable messages moved out of the Inbox on a real Dovecot, when the profile's
``move_undelivered_emails`` asks: with MOVE, with COPY and UID EXPUNGE (UIDPLUS), and with
COPY alone, where the original stays flagged \\Deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serversync import (
    IncomingFilteringMethod,
    MappingCredentials,
    OutcomeKind,
    RetryPolicy,
    SyncEngine,
    SyncSettings,
    Transports,
    Workload,
)
from serversync.adapters.transports import ImapTransport
from serversync.model import Credentials, MailboxRunReport, ProfileId, Secret, ServerType, TlsMode
from serversync.testing import (
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_user,
    an_email,
)
from tests.integration.dovecot import Dovecot, DovecotUser, TokenEndpoint

pytestmark = pytest.mark.integration

TRACKED = "$ServerSyncTracked"
UNDELIVERABLE = "$ServerSyncUndeliverable"
BROKEN = b"\r\nno header at all\r\n"


async def _cycle(
    dovecot: Dovecot, user: DovecotUser, *, folder: str | None = None
) -> MailboxRunReport:
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    record = a_user(user.address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    directory.add(record)
    profile = a_profile(
        id=ProfileId(f"profile:{user.address}"),
        server_type=ServerType.IMAP_SMTP,
        incoming=dovecot.endpoint("imap", TlsMode.IMPLICIT),
        move_undelivered_emails=True,
    )
    storage.add_profile(profile)
    mailbox = a_mailbox(
        user.address, owner=record.ref, profile_id=profile.id, undeliverable_folder=folder
    )
    storage.add_mailbox(mailbox)
    credentials = Credentials(username=user.address, secret=Secret(user.password))
    engine = SyncEngine(
        repositories=storage,
        directory=directory,
        transports=Transports.by_server_type(
            incoming={ServerType.IMAP_SMTP: ImapTransport()}, outgoing={}
        ),
        credentials=MappingCredentials(by_mailbox={mailbox.id: credentials}),
        # The first failure is the last: the message is given up at once.
        settings=SyncSettings(retry=RetryPolicy(quarantine_max_attempts=1)),
    )
    async with engine:
        (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
    return report


def _moved(dovecot: Dovecot, user: DovecotUser, folder: str) -> list[set[str]]:
    """The flags of each message in ``folder``, without the session flag \\Recent."""
    return [flags - {"\\Recent"} for flags in dovecot.flags(user, folder).values()]


def _good(user: DovecotUser) -> bytes:
    return an_email(sender="jane@fabrikam.example", to=[user.address], subject="order 1")


async def test_an_undeliverable_message_moves_under_the_inbox(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    dovecot.append(user, BROKEN, _good(user))

    report = await _cycle(dovecot, user)

    assert [i.kind for i in report.items] == [OutcomeKind.FAILED, OutcomeKind.TRACKED]
    assert dovecot.flags(user) == {2: {TRACKED}}, "the broken message left the Inbox"
    assert _moved(dovecot, user, "INBOX/Undeliverable") == [{UNDELIVERABLE}]


async def test_the_mailboxs_own_undeliverable_folder_is_used_and_created(
    dovecot: Dovecot,
) -> None:
    user = dovecot.add_user()
    dovecot.append(user, BROKEN)

    await _cycle(dovecot, user, folder="CRM Undeliverable")

    assert dovecot.flags(user) == {}
    assert _moved(dovecot, user, '"CRM Undeliverable"') == [{UNDELIVERABLE}]


class _DovecotWithCapabilities(Dovecot):
    """A Dovecot announcing only ``capabilities`` after login."""

    def __init__(self, capabilities: str, **kwargs: object) -> None:
        self.capabilities = capabilities
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _write_config(self) -> None:
        super()._write_config()
        config = self.dir / "dovecot.conf"
        config.write_text(config.read_text() + f"imap_capability = {self.capabilities}\n")


_WITHOUT_MOVE = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE UIDPLUS CONDSTORE"
_WITHOUT_MOVE_OR_UIDPLUS = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE CONDSTORE"


@pytest.fixture(scope="module", params=["copy-and-expunge", "copy-only"])
def older_dovecot(
    request: pytest.FixtureRequest, oauth_tokens: TokenEndpoint
) -> Iterator[_DovecotWithCapabilities]:
    capabilities = (
        _WITHOUT_MOVE if request.param == "copy-and-expunge" else _WITHOUT_MOVE_OR_UIDPLUS
    )
    with _DovecotWithCapabilities(capabilities, oauth2_url=oauth_tokens.url, users=3) as server:
        yield server


async def test_without_move_the_message_is_copied_then_removed_from_the_inbox(
    older_dovecot: _DovecotWithCapabilities,
) -> None:
    user = older_dovecot.add_user()
    older_dovecot.append(user, BROKEN, _good(user))

    report = await _cycle(older_dovecot, user)

    assert [i.kind for i in report.items] == [OutcomeKind.FAILED, OutcomeKind.TRACKED]
    assert _moved(older_dovecot, user, "INBOX/Undeliverable") == [{UNDELIVERABLE}]
    left = older_dovecot.flags(user)
    if "UIDPLUS" in older_dovecot.capabilities:
        assert left == {2: {TRACKED}}, "UID EXPUNGE removed exactly the moved message"
    else:
        # A plain EXPUNGE would also remove what other clients deleted: the original stays,
        # flagged \Deleted, for the user's mail program to expunge.
        assert left == {1: {UNDELIVERABLE, "\\Deleted"}, 2: {TRACKED}}
