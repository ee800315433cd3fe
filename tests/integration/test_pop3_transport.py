"""What the POP3 transport does beyond the contract: XOAUTH2, TLS verification, long lines,
messages deleted by another client, and its single folder."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from serversync.adapters.transports import Pop3Transport
from serversync.errors import AuthenticationError, ConfigurationError, MessageRejectedError
from serversync.model import (
    INBOX,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    ImapCheckpoint,
    Pop3Checkpoint,
    RemoteMark,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.settings import Timeouts
from serversync.testing import a_mailbox, a_profile, an_email
from tests.integration.dovecot import Dovecot, DovecotUser, TokenEndpoint

pytestmark = pytest.mark.integration

FAST = Timeouts(
    connect=timedelta(seconds=3),
    command=timedelta(seconds=2),
    fetch=timedelta(seconds=3),
    close=timedelta(seconds=1),
)


def profile(endpoint: ServerEndpoint) -> EmailServerProfile:
    return a_profile(server_type=ServerType.OTHER_POP3_SMTP, incoming=endpoint)


def password(user: DovecotUser) -> Credentials:
    return Credentials(username=user.address, secret=Secret(user.password))


async def test_an_oauth2_access_token_logs_in_with_xoauth2(
    dovecot: Dovecot, oauth_tokens: TokenEndpoint
) -> None:
    user = dovecot.add_user()
    dovecot.append(user, an_email(subject="token"))
    token = oauth_tokens.issue(user.address)
    credentials = Credentials(
        username=user.address, secret=Secret(token), kind=CredentialKind.OAUTH2_ACCESS_TOKEN
    )
    transport = Pop3Transport(timeouts=FAST)
    endpoint = dovecot.endpoint("pop3", TlsMode.IMPLICIT)
    async with transport.open(a_mailbox(user.address), profile(endpoint), credentials) as s:
        assert len((await s.list_new(INBOX, None, limit=5)).refs) == 1

    oauth_tokens.revoke(token)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as refused:
        async with transport.open(a_mailbox(user.address), profile(endpoint), credentials):
            pass
    assert time.monotonic() - started < 2.5, "the error challenge is answered, not waited on"
    assert refused.value.server_code == "-ERR [AUTH]"
    assert token not in str(refused.value)


async def test_an_untrusted_certificate_is_refused_unless_checks_are_off(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    transport = Pop3Transport(timeouts=FAST)
    for tls in (TlsMode.IMPLICIT, TlsMode.STARTTLS):
        untrusted = dovecot.endpoint("pop3", tls, ca_file=dovecot.pki.other_ca_file)
        with pytest.raises(ConfigurationError, match="certificate is not trusted"):
            async with transport.open(a_mailbox(user.address), profile(untrusted), password(user)):
                pass
    unchecked = dovecot.endpoint(
        "pop3", TlsMode.IMPLICIT, ca_file=dovecot.pki.other_ca_file, verify_certificate=False
    )
    async with transport.open(a_mailbox(user.address), profile(unchecked), password(user)) as s:
        assert (await s.list_new(INBOX, None, limit=5)).refs == ()


async def test_long_lines_deleted_messages_and_the_single_folder(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    long_line = b"<p>" + b"x" * 5000 + b"</p>"  # poplib alone refuses lines over 2048 bytes
    long_mail = (
        b"From: jane@fabrikam.example\r\nSubject: long\r\n"
        b"Message-ID: <long@fabrikam.example>\r\nContent-Type: text/html\r\n\r\n"
        + long_line
        + b"\r\n"
    )
    dovecot.append(
        user, long_mail, an_email(subject="doomed", message_id="<doomed@fabrikam.example>")
    )
    transport = Pop3Transport(timeouts=FAST)
    endpoint = dovecot.endpoint("pop3", TlsMode.STARTTLS)
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        assert [f.id for f in await s.list_folders()] == [INBOX]
        batch = await s.list_new(INBOX, None, limit=5)
        whole = await s.fetch_message(batch.refs[0])
        assert long_line in whole.data
        await s.mark(batch.refs, RemoteMark.TRACKED)  # nothing to do, and no error
        with pytest.raises(ConfigurationError, match="only the Inbox"):
            await s.list_new("Archive", None, limit=5)
        with pytest.raises(ConfigurationError, match="POP3 cursor"):
            await s.list_new(INBOX, ImapCheckpoint(uidvalidity=1, last_uid=1), limit=5)

    with dovecot.imap(user) as client:
        client.select(INBOX)
        client.uid("STORE", "2", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        # refs from an earlier session resolve by UIDL; the deleted one is gone
        with pytest.raises(MessageRejectedError, match="no longer"):
            await s.fetch_message(batch.refs[1])
        headers = await s.fetch_headers(batch.refs)
        assert b"Subject: long" in headers[0].data
        assert headers[1].data == b""
        again = await s.list_new(INBOX, batch.end, limit=5)
    assert again.refs == ()
    assert again.end == Pop3Checkpoint(seen_uidls=frozenset({batch.refs[0].remote_id})), (
        "the cursor forgets UIDLs that left the server"
    )
