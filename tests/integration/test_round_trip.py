"""A CRM email's whole trip through real servers: the engine sends it through Postfix
(submission, STARTTLS, AUTH), Postfix delivers it over LMTP into the customer's Dovecot
mailbox, the customer's reply lands in the CRM user's INBOX, and the engine tracks the reply
against the email it sent — by In-Reply-To, and by tracking token when the reply lost it."""

from __future__ import annotations

import asyncio
import email
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import Message
from email.policy import default as default_policy

import pytest

from serversync import (
    CorrelationMethod,
    Credentials,
    DecisionReason,
    EmailStatus,
    IncomingFilteringMethod,
    MappingCredentials,
    OutcomeKind,
    ProfileId,
    RecordRef,
    Secret,
    ServerType,
    SyncEngine,
    TlsMode,
    Transports,
    Workload,
)
from serversync.adapters.transports import ImapTransport, SmtpTransport
from serversync.testing import (
    InMemoryDirectory,
    InMemoryStorage,
    a_contact,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_user,
    an_email,
)
from tests.integration.dovecot import Dovecot, DovecotUser
from tests.integration.postfix import Postfix

pytestmark = pytest.mark.integration

OPPORTUNITY = RecordRef("opportunity", "opp-round-trip")


@pytest.fixture
def people(dovecot: Dovecot) -> tuple[DovecotUser, DovecotUser]:
    """A CRM user and a customer, both with mailboxes on the test Dovecot."""
    return dovecot.add_user(), dovecot.add_user()


@pytest.fixture
def postfix(dovecot: Dovecot, people: tuple[DovecotUser, DovecotUser]) -> Iterator[Postfix]:
    with Postfix(dovecot, list(people)) as mta:
        yield mta


def _delivered(dovecot: Dovecot, user: DovecotUser, subject_part: str) -> Message:
    """The message whose subject contains ``subject_part`` once it reached ``user``'s INBOX."""
    deadline = time.monotonic() + 20
    while True:
        with dovecot.imap(user) as client:
            client.select("INBOX", readonly=True)
            status, data = client.uid("SEARCH", "SUBJECT", f'"{subject_part}"')
            assert status == "OK", data
            uids = data[0].split() if data and data[0] else []
            if uids:
                status, fetched = client.uid("FETCH", uids[-1], "(BODY.PEEK[])")
                assert status == "OK", fetched
                first = fetched[0]
                assert isinstance(first, tuple)
                return email.message_from_bytes(first[1], policy=default_policy)
        assert time.monotonic() < deadline, f"not delivered to {user.address}"
        time.sleep(0.1)


async def test_a_sent_email_and_its_replies_come_back_tracked(
    dovecot: Dovecot, postfix: Postfix, people: tuple[DovecotUser, DovecotUser]
) -> None:
    alice, jane = people
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    user = a_user(alice.address, filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL)
    directory.add(user)
    directory.add(a_contact(jane.address))
    profile = a_profile(
        id=ProfileId("dovecot-and-postfix"),
        server_type=ServerType.IMAP_SMTP,
        incoming=dovecot.endpoint("imap", TlsMode.IMPLICIT),
        outgoing=postfix.endpoint(),
    )
    storage.add_profile(profile)
    mailbox = a_mailbox(alice.address, owner=user.ref, profile_id=profile.id)
    storage.add_mailbox(mailbox)
    pending = a_pending_email(
        sender_mailbox=mailbox,
        to=[jane.address],
        subject="Quote for 40 widgets",
        body="Jane, the quote is attached in spirit.",
        regarding=OPPORTUNITY,
        owner=user.ref,
        submitted_by=user.ref,
    )
    storage.put_activity(pending)
    credentials = Credentials(username=alice.address, secret=Secret(alice.password))
    transports = Transports.by_server_type(
        incoming={ServerType.IMAP_SMTP: ImapTransport()},
        outgoing={ServerType.IMAP_SMTP: SmtpTransport()},
    )

    def engine() -> SyncEngine:
        return SyncEngine(
            repositories=storage,
            directory=directory,
            transports=transports,
            credentials=MappingCredentials(by_mailbox={mailbox.id: credentials}),
        )

    async with engine() as sender:
        (sent_run,) = await sender.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
    (result,) = sent_run.sends
    sent = storage.activities()[0]
    assert sent.status is EmailStatus.SENT, result
    assert sent.tracking_token is not None
    assert sent.subject.endswith(sent.tracking_token), "the token is in the subject"

    received = await asyncio.to_thread(_delivered, dovecot, jane, "Quote for 40 widgets")
    assert received["Message-ID"] == sent.message_id, "the MTA kept our Message-ID"
    assert received["Subject"] == sent.subject
    assert alice.address in str(received["From"])

    # Jane answers from her mail program: In-Reply-To and References name our email.
    reply = an_email(
        sender=jane.address,
        to=[alice.address],
        subject=f"RE: {sent.subject}",
        body="Yes, please go ahead.",
        message_id="<reply-1@fabrikam.example>",
        in_reply_to=str(sent.message_id),
        references=[str(sent.message_id)],
    )
    # A second answer whose program dropped the threading headers, but kept the subject.
    bare = an_email(
        sender=jane.address,
        to=[alice.address],
        subject=f"RE: {sent.subject}",
        body="And one more thing.",
        message_id="<reply-2@fabrikam.example>",
    )
    await asyncio.to_thread(dovecot.append, alice, reply, bare)

    async with engine() as receiver:
        (incoming,) = await receiver.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
    by_id = {str(item.message_id): item for item in incoming.items}
    threaded, token_only = by_id["<reply-1@fabrikam.example>"], by_id["<reply-2@fabrikam.example>"]
    assert threaded.kind is OutcomeKind.TRACKED
    assert threaded.reason is DecisionReason.CORRELATION_MATCH
    assert token_only.kind is OutcomeKind.TRACKED
    assert token_only.reason is DecisionReason.CORRELATION_MATCH
    methods = {}
    for item in (threaded, token_only):
        assert item.activity_id is not None
        stored = await storage.get_activity(item.activity_id)
        assert stored is not None
        assert stored.regarding == OPPORTUNITY, "the reply is linked to the sent email's record"
        assert stored.correlated_activity_id == sent.id
        methods[item.message_id] = stored.correlation_method
    assert methods == {
        "<reply-1@fabrikam.example>": CorrelationMethod.IN_REPLY_TO,
        "<reply-2@fabrikam.example>": CorrelationMethod.TRACKING_TOKEN,
    }


def test_the_mta_refuses_mail_that_would_leave_the_machine(
    postfix: Postfix, people: tuple[DovecotUser, DovecotUser], dovecot: Dovecot
) -> None:
    alice, _ = people
    context = ssl.create_default_context(cafile=str(dovecot.pki.ca_file))
    with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=10) as client:
        client.starttls(context=context)
        client.login(alice.address, alice.password)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(alice.address, ["someone@elsewhere.example"], b"Subject: x\r\n\r\nx")
