"""Contract checks every adapter must pass: plain async functions raising ``AssertionError``.

They run from any test runner. serversync runs them on its in-memory, IMAP, POP3, EWS and
SQL adapters; hosts run :func:`check_repositories` on their own storage::

    async def test_my_storage_keeps_the_contract() -> None:
        await check_repositories(MyHarness.fresh)

Each check takes a harness that exposes the adapter under test plus the few set-up steps
the port itself does not offer (putting mail into a mailbox, seeding rows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, Protocol

import attrs

from serversync.errors import (
    AuthenticationError,
    ErrorScope,
    LeaseLostError,
    RecipientsRefusedError,
    SyncError,
)
from serversync.mime import parse_headers
from serversync.model import (
    INBOX,
    ActivityId,
    ActivityParty,
    AlreadyExists,
    Checkpoint,
    CorrelationQuery,
    Created,
    Credentials,
    EmailActivity,
    EmailApprovalStatus,
    EmailDirection,
    EmailServerProfile,
    EmailStateCode,
    EmailStatus,
    EntityName,
    ErrorRecord,
    EwsCheckpoint,
    GraphCheckpoint,
    ImapCheckpoint,
    IncomingRunStart,
    Mailbox,
    MailboxId,
    MailboxTrackingFolder,
    MessageId,
    NewIncomingEmail,
    OutgoingMessage,
    ParticipationType,
    Pop3Checkpoint,
    ProfileId,
    QuarantinedMessage,
    RawMessage,
    RecordRef,
    RemoteMark,
    RemoteMessageRef,
    SendFailed,
    SendReleased,
    SendRetry,
    SendSucceeded,
    SendUncertain,
    TestStatus,
    TrackingFolderId,
    Workload,
    WorkloadState,
)
from serversync.ports import (
    BatchIncomingRepository,
    BatchMessageSession,
    CorrelationKeyLookup,
    IncomingMailSession,
    IncomingMailTransport,
    IncomingRunRepository,
    OutgoingMailTransport,
    Repositories,
    WorkloadRunEndRepository,
    WorkloadRunRepository,
)
from serversync.testing.builders import a_mailbox, a_pending_email, a_profile, an_email

__all__ = [
    "IncomingTransportHarness",
    "MailboxFixture",
    "OutgoingTransportHarness",
    "RepositoryHarness",
    "check_incoming_transport",
    "check_outgoing_transport",
    "check_repositories",
]


@attrs.frozen(kw_only=True)
class MailboxFixture:
    """A mailbox on the server under test, ready to open."""

    mailbox: Mailbox
    profile: EmailServerProfile
    credentials: Credentials | None
    wrong_credentials: Credentials | None = None


class IncomingTransportHarness(Protocol):
    """The incoming transport under test and a way to put mail into a fresh mailbox."""

    @property
    def transport(self) -> IncomingMailTransport:
        """The transport under test."""
        ...

    async def new_mailbox(self) -> MailboxFixture:
        """A mailbox with an empty Inbox, not used by any other check."""
        ...

    async def deliver(self, fixture: MailboxFixture, data: bytes) -> None:
        """Put ``data`` into the fixture's Inbox, as the newest message."""
        ...


class OutgoingTransportHarness(Protocol):
    """The outgoing transport under test and what its server accepted."""

    @property
    def transport(self) -> OutgoingMailTransport:
        """The transport under test."""
        ...

    @property
    def refused_address(self) -> str | None:
        """An address the server refuses, or ``None`` if it cannot be made to."""
        ...

    async def new_mailbox(self) -> MailboxFixture:
        """A mailbox allowed to send."""
        ...

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        """Every message the server accepted so far: (envelope recipients, data)."""
        ...


class RepositoryHarness(Protocol):
    """A fresh, empty store under test and a way to seed it as a host would."""

    @property
    def repositories(self) -> Repositories:
        """The repositories under test."""
        ...

    async def seed(
        self,
        *,
        profiles: Sequence[EmailServerProfile] = (),
        mailboxes: Sequence[Mailbox] = (),
        activities: Sequence[EmailActivity] = (),
    ) -> None:
        """Store these rows as the host's own code would."""
        ...


def _marker(n: int) -> str:
    return f"contract-body-marker-{n}"


def _message(n: int, run: str) -> tuple[MessageId, bytes]:
    mid = MessageId(f"<contract-{run}-{n}@serversync.test>")
    return mid, an_email(
        subject=f"contract message {n}",
        body=f"{_marker(n)}\n" + "x" * 200,
        message_id=mid,
    )


async def _list_all(session: IncomingMailSession, checkpoint: Checkpoint | None) -> list[str]:
    batch = await session.list_new(INBOX, checkpoint, limit=1000)
    return [r.remote_id for r in batch.refs]


async def check_incoming_transport(harness: IncomingTransportHarness) -> None:
    """Listing, cursors, limits, headers-first fetching, marks and authentication."""
    fixture = await harness.new_mailbox()
    transport = harness.transport
    run = datetime.now(UTC).strftime("%H%M%S%f")
    async with transport.open(fixture.mailbox, fixture.profile, fixture.credentials) as session:
        folders = await session.list_folders()
        assert any(f.id.upper() == INBOX or f.name.upper() == INBOX for f in folders), (
            f"list_folders() must include the Inbox, got {folders!r}"
        )
        empty = await session.list_new(INBOX, None, limit=10)
        assert empty.refs == () and not empty.more, "a fresh Inbox must list no messages"

    expected = [_message(n, run) for n in range(5)]
    for _, data in expected[:3]:
        await harness.deliver(fixture, data)

    async with transport.open(fixture.mailbox, fixture.profile, fixture.credentials) as session:
        first = await session.list_new(INBOX, None, limit=10)
        assert len(first.refs) == 3, f"expected 3 new messages, listed {len(first.refs)}"
        assert len(first.checkpoints) == 3, "one cursor per listed message"
        assert not first.more, "more=True although every message was listed"
        assert all(r.folder == INBOX for r in first.refs), "refs must name the listed folder"

        headers = await session.fetch_headers(first.refs)
        assert [h.ref for h in headers] == list(first.refs), "headers must follow the refs' order"
        for n, raw in enumerate(headers):
            parsed = parse_headers(raw.data)
            assert parsed.message_id == expected[n][0], (
                f"message {n}: listed out of delivery order or wrong headers "
                f"({parsed.message_id!r} != {expected[n][0]!r})"
            )
            assert _marker(n).encode() not in raw.data, "fetch_headers must not return the body"

        whole = await session.fetch_message(first.refs[1])
        _check_fetched_ref(whole.ref, first.refs[1], "fetch_message")
        assert _marker(1).encode() in whole.data, "fetch_message must return the body"
        body = BytesParser(policy=default_policy).parsebytes(whole.data)
        assert body["Message-ID"] == expected[1][0], "fetch_message must return the whole message"
        await _check_fetch_messages(session, first.refs, expected)

        assert first.end is not None, "a batch that listed messages must end with a cursor"
        assert await _list_all(session, first.end) == [], "nothing is new after the batch's end"
        resumed = await _list_all(session, first.checkpoints[0])
        assert resumed == [r.remote_id for r in first.refs[1:]], (
            "listing from the first message's cursor must return exactly the others"
        )

        await session.mark(first.refs[:1], RemoteMark.TRACKED)
        assert await _list_all(session, first.end) == [], "marking must not make a message new"

        for _, data in expected[3:]:
            await harness.deliver(fixture, data)
        limited = await session.list_new(INBOX, first.end, limit=1)
        assert len(limited.refs) == 1 and limited.more, "limit must cut the batch and say more"
        rest = await session.list_new(INBOX, limited.checkpoints[0], limit=10)
        assert len(rest.refs) == 1, "the rest after a limited batch is one message"
        assert not rest.more, "nothing is left after the rest"
        tail = await session.fetch_headers(rest.refs)
        assert parse_headers(tail[0].data).message_id == expected[4][0], (
            "the last message listed must be the newest"
        )

    if fixture.wrong_credentials is not None:
        try:
            async with transport.open(fixture.mailbox, fixture.profile, fixture.wrong_credentials):
                pass
        except AuthenticationError:
            pass
        else:
            raise AssertionError("wrong credentials must raise AuthenticationError")


def _check_fetched_ref(got: RemoteMessageRef, listed: RemoteMessageRef, call: str) -> None:
    """A whole message's ref is the listed one, with at most the arrival time added where
    the listing left it out (IMAP lists it only when Process Email From needs it)."""
    assert (got.folder, got.remote_id) == (listed.folder, listed.remote_id), (
        f"{call} must return the messages asked for, in the refs' order"
    )
    added = listed.received_at is None and attrs.evolve(got, received_at=None) == listed
    assert got == listed or added, f"{call} may add the arrival time to a ref, nothing else"


async def _check_fetch_messages(
    session: IncomingMailSession,
    refs: Sequence[RemoteMessageRef],
    expected: Sequence[tuple[MessageId, bytes]],
) -> None:
    """``fetch_messages``, for sessions that offer it: each message whole, in the refs'
    order, and a message that cannot be fetched failing alone."""
    if not isinstance(session, BatchMessageSession):
        return
    fetched = await session.fetch_messages([refs[2], refs[0]])
    assert len(fetched) == 2, f"fetch_messages must answer once a ref, got {len(fetched)}"
    for n, got in zip((2, 0), fetched, strict=True):
        assert isinstance(got, RawMessage), f"message {n} must be fetched, got {got!r}"
        _check_fetched_ref(got.ref, refs[n], "fetch_messages")
        assert _marker(n).encode() in got.data, "fetch_messages must return the bodies"
        parsed = BytesParser(policy=default_policy).parsebytes(got.data)
        assert parsed["Message-ID"] == expected[n][0], "fetch_messages returns whole messages"
    gone = attrs.evolve(refs[1], remote_id=_missing_id(refs[1].remote_id))
    isolated = await session.fetch_messages([refs[0], gone, refs[1]])
    assert len(isolated) == 3, "fetch_messages must answer once a ref"
    first, missing, last = isolated
    assert isinstance(first, RawMessage) and isinstance(last, RawMessage), (
        "a message that cannot be fetched must not fail the others"
    )
    assert _marker(1).encode() in last.data, "the message after a missing one is fetched"
    assert isinstance(missing, SyncError) and missing.scope is ErrorScope.ITEM, (
        f"a missing message must get an error of scope item, got {missing!r}"
    )


def _missing_id(remote_id: str) -> str:
    """A remote id shaped like ``remote_id`` (a number for a number) that names nothing."""
    if remote_id.isdigit():
        return str(int(remote_id) + 1_000_000)
    return remote_id[: len(remote_id) // 2] + "A" * (len(remote_id) - len(remote_id) // 2)


def _outgoing(sender: str, recipients: tuple[str, ...], n: int, run: str) -> OutgoingMessage:
    mid = MessageId(f"<contract-out-{run}-{n}@serversync.test>")
    data = an_email(sender=sender, to=recipients, subject=f"outgoing {n}", message_id=mid)
    return OutgoingMessage(message_id=mid, sender=sender, recipients=recipients, data=data)


async def check_outgoing_transport(harness: OutgoingTransportHarness) -> None:
    """Sending on one session, receipts, per-recipient refusals and authentication."""
    fixture = await harness.new_mailbox()
    sender = fixture.mailbox.email_address
    run = datetime.now(UTC).strftime("%H%M%S%f")
    recipients = ("first@contract.test", "second@contract.test")
    messages = [_outgoing(sender, recipients, n, run) for n in range(3)]
    before = len(await harness.accepted())
    async with harness.transport.open(fixture.mailbox, fixture.profile, fixture.credentials) as s:
        for message in messages:
            receipt = await s.send(message)
            assert receipt.message_id == message.message_id, "the receipt must name the message"
            assert receipt.refused == (), "no recipient was refused"
    accepted = (await harness.accepted())[before:]
    assert len(accepted) == len(messages), f"the server got {len(accepted)} of {len(messages)}"
    for (envelope, data), message in zip(accepted, messages, strict=True):
        assert {r.lower() for r in envelope} == set(recipients), "every recipient must be used"
        assert parse_headers(data).message_id == message.message_id, (
            "the server must keep the Message-ID"
        )

    refused = harness.refused_address
    if refused is not None:
        async with harness.transport.open(
            fixture.mailbox, fixture.profile, fixture.credentials
        ) as session:
            mixed = _outgoing(sender, (refused, "third@contract.test"), 10, run)
            receipt = await session.send(mixed)
            assert [r.lower() for r, _ in receipt.refused] == [refused.lower()], (
                "a recipient refused alone must be listed in the receipt"
            )
            try:
                await session.send(_outgoing(sender, (refused,), 11, run))
            except RecipientsRefusedError as exc:
                assert refused.lower() in {r.lower() for r in exc.recipients}, (
                    "the refused recipient must be named"
                )
            else:
                raise AssertionError("every recipient refused must raise RecipientsRefusedError")

    if fixture.wrong_credentials is not None:
        try:
            async with harness.transport.open(
                fixture.mailbox, fixture.profile, fixture.wrong_credentials
            ):
                pass
        except AuthenticationError:
            pass
        else:
            raise AssertionError("wrong credentials must raise AuthenticationError")


_T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _incoming(activity_id: str, message_id: str, *, direction: EmailDirection) -> EmailActivity:
    return EmailActivity(
        id=ActivityId(activity_id),
        direction=direction,
        status=EmailStatus.RECEIVED if direction is EmailDirection.INCOMING else EmailStatus.SENT,
        subject=f"contract {activity_id}",
        message_id=MessageId(message_id),
        received_on=_T0,
    )


async def check_repositories(factory: Callable[[], Awaitable[RepositoryHarness]]) -> None:
    """Every repository promise: lookups, state, cursors, dedupe, queue items, the send claim
    cycle (including races), leases, the quarantine and mailbox administration (one mailbox
    per user or queue, also under concurrent creation). ``factory`` returns a fresh, empty
    store."""
    first = await factory()
    # The optional combined calls get stores of their own only where implemented.
    runs = isinstance(first.repositories, WorkloadRunRepository)
    await _check_profiles_and_mailboxes(first)
    await _check_state_and_checkpoints(await factory())
    await _check_incoming_dedupe(await factory())
    await _check_incoming_batch(await factory())
    await _check_correlation_candidates(await factory())
    await _check_folder_tracking(await factory())
    await _check_send_claims(await factory())
    await _check_leases(await factory())
    await _check_lease_holder(await factory())
    if runs:
        await _check_workload_runs(await factory())
        await _check_claim_unless_expired(await factory())
    await _check_disabling_workloads(await factory())
    await _check_pending_send_count(await factory())
    await _check_mailbox_test(await factory())
    await _check_quarantine(await factory())
    await _check_quarantine_count(await factory())
    await _check_mailbox_administration(await factory())
    # The optional one-call forms of a run's start and end, where implemented (after the
    # separate calls' own checks, which name a broken promise more precisely).
    if isinstance(first.repositories, WorkloadRunEndRepository):
        await _check_workload_run_end(await factory())
    if isinstance(first.repositories, IncomingRunRepository):
        await _check_incoming_run_start(await factory())


async def _check_profiles_and_mailboxes(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    profile = a_profile(id=ProfileId("contract-profile"))
    first = a_mailbox("one@contract.test", profile_id=profile.id)
    second = a_mailbox("two@contract.test", profile_id=profile.id)
    await harness.seed(profiles=[profile], mailboxes=[first, second])
    assert await repos.get_profile(profile.id) == profile, "get_profile must return the profile"
    assert await repos.get_profile(ProfileId("missing")) is None, "an unknown profile must be None"
    assert await repos.get_mailbox(first.id) == first, "get_mailbox must return the mailbox"
    assert await repos.get_mailbox(MailboxId("missing")) is None, "an unknown mailbox must be None"
    listed = {m.id for m in await repos.list_mailboxes()}
    assert listed == {first.id, second.id}, f"list_mailboxes returned {listed!r}"
    assert not list(await repos.list_tracking_folders(first.id)), "no tracking rules were added"


async def _check_state_and_checkpoints(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    box = MailboxId("mailbox:state@contract.test")
    assert await repos.get_workload_state(box, Workload.INCOMING) is None
    state = WorkloadState(
        next_run_at=_T0,
        consecutive_failures=2,
        last_error=ErrorRecord(
            error_type="ConnectionFailedError",
            message="refused",
            transient=True,
            scope="mailbox",
            retry_after=timedelta(seconds=90),
        ),
        last_error_at=_T0,
    )
    await repos.save_workload_state(box, Workload.INCOMING, state)
    assert await repos.get_workload_state(box, Workload.INCOMING) == state
    assert await repos.get_workload_state(box, Workload.OUTGOING) is None, (
        "workload states must be kept per workload"
    )
    later = attrs.evolve(state, consecutive_failures=0, last_error=None)
    await repos.save_workload_state(box, Workload.INCOMING, later)
    assert await repos.get_workload_state(box, Workload.INCOMING) == later, "save must replace"

    assert await repos.load_checkpoint(box, INBOX) is None
    cursors: list[Checkpoint] = [
        ImapCheckpoint(uidvalidity=7, last_uid=42, highest_modseq=1001),
        Pop3Checkpoint(seen_uidls=frozenset({"a1", "b2"})),
        EwsCheckpoint(sync_state="H4sIAAAAAAAEAO29B2AcSZYlJi9tynt"),
        GraphCheckpoint(
            resume_url="https://graph.microsoft.com/v1.0/users/a%40b.test/mailFolders/inbox"
            "/messages/delta?$skiptoken=Xq9nW2",
            done=frozenset({"AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A", "AAkALgAAAAAAHYQDEapmEc2"}),
            query="v1",
        ),
    ]
    for cursor in cursors:
        await repos.save_checkpoint(box, INBOX, cursor)
        assert await repos.load_checkpoint(box, INBOX) == cursor, f"{cursor!r} must round-trip"
    await repos.save_checkpoint(box, "Archive", cursors[0])
    assert await repos.load_checkpoint(box, INBOX) == cursors[-1], "cursors are per folder"


async def _check_incoming_dedupe(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    queue = RecordRef(EntityName.QUEUE.value, "contract-queue")
    other_queue = RecordRef(EntityName.QUEUE.value, "contract-queue-2")
    first = _incoming("act-1", "<dup@contract.test>", direction=EmailDirection.INCOMING)
    created = await repos.add_incoming(first, queues=[queue])
    assert created == Created(activity_id=first.id), f"first insert must create, got {created!r}"
    again = await repos.add_incoming(attrs.evolve(first, id=ActivityId("act-2")))
    assert again == AlreadyExists(activity_id=first.id), (
        f"the same (Message-ID, direction) must answer AlreadyExists, got {again!r}"
    )
    assert await repos.get_activity(ActivityId("act-2")) is None, "a duplicate must write nothing"
    assert await repos.get_activity(first.id) == first, (
        "get_activity must return what add_incoming stored"
    )

    outgoing = _incoming("act-3", "<dup@contract.test>", direction=EmailDirection.OUTGOING)
    assert isinstance(await repos.add_incoming(outgoing), Created), (
        "the same Message-ID in the other direction is a different email"
    )
    recent = await repos.count_recent_from("NOBODY@contract.test", since=_T0 - timedelta(days=1))
    assert recent == 0, "count_recent_from counts only emails from that sender"
    first_sender = attrs.evolve(first, id=ActivityId("act-from"), message_id=MessageId("<f@c>"))
    await repos.add_incoming(attrs.evolve(first_sender, sender="Sender@Contract.test"))
    assert await repos.count_recent_from("sender@contract.test", since=_T0) == 1, (
        "count_recent_from counts incoming emails from the sender, compared without case"
    )
    assert await repos.count_recent_from("sender@contract.test", since=_T0 + timedelta(1)) == 0, (
        "count_recent_from counts only emails received since `since`"
    )
    found = await repos.find_by_message_ids([MessageId("<dup@contract.test>")])
    assert {a.id for a in found} == {first.id, outgoing.id}
    assert not list(await repos.find_by_message_ids([MessageId("<nothing@contract.test>")])), (
        "an unknown Message-ID must find nothing"
    )

    assert await repos.ensure_queue_item(queue, first.id) is False, (
        "add_incoming must have created the queue item already"
    )
    assert await repos.ensure_queue_item(other_queue, first.id) is True
    assert await repos.ensure_queue_item(other_queue, first.id) is False

    racers = [
        attrs.evolve(
            _incoming("race-0", "<race@contract.test>", direction=EmailDirection.INCOMING),
            id=ActivityId(f"race-{n}"),
        )
        for n in range(8)
    ]
    results = await asyncio.gather(*(repos.add_incoming(a) for a in racers))
    created_ids = [r.activity_id for r in results if isinstance(r, Created)]
    assert len(created_ids) == 1, f"concurrent inserts of one key created {len(created_ids)}"
    assert all(r.activity_id == created_ids[0] for r in results), (
        "every racer must be told the winner's id"
    )


async def _check_incoming_batch(harness: RepositoryHarness) -> None:
    """``add_incoming_batch``, for repositories that offer it: ``add_incoming``'s promises
    for each email, in one call."""
    repos = harness.repositories
    if not isinstance(repos, BatchIncomingRepository):
        return
    queue = RecordRef(EntityName.QUEUE.value, "contract-batch-queue")
    stored = _incoming("batch-0", "<batch-0@contract.test>", direction=EmailDirection.INCOMING)
    assert await repos.add_incoming(stored) == Created(activity_id=stored.id)
    emails = [
        _incoming(f"batch-{n}", f"<batch-{n}@contract.test>", direction=EmailDirection.INCOMING)
        for n in (1, 2)
    ]
    # Stored before, then twice in the batch: the batch's second copy finds its first.
    again = attrs.evolve(stored, id=ActivityId("batch-0-again"))
    twice = attrs.evolve(emails[0], id=ActivityId("batch-1-again"))
    results = await repos.add_incoming_batch(
        [
            NewIncomingEmail(activity=emails[0], queues=(queue,)),
            NewIncomingEmail(activity=again),
            NewIncomingEmail(activity=emails[1]),
            NewIncomingEmail(activity=twice),
        ]
    )
    assert list(results) == [
        Created(activity_id=emails[0].id),
        AlreadyExists(activity_id=stored.id),
        Created(activity_id=emails[1].id),
        AlreadyExists(activity_id=emails[0].id),
    ], f"add_incoming_batch answers each email as add_incoming would, got {results!r}"
    for email in emails:
        assert await repos.get_activity(email.id) == email, "the batch's new emails are stored"
    for duplicate in (again, twice):
        assert await repos.get_activity(duplicate.id) is None, "a duplicate writes nothing"
    assert await repos.ensure_queue_item(queue, emails[0].id) is False, (
        "add_incoming_batch stores each email's queue items with it"
    )
    assert list(await repos.add_incoming_batch([])) == [], "an empty batch stores nothing"

    refused = attrs.evolve(
        _incoming("batch-bad", "<batch-bad@contract.test>", direction=EmailDirection.INCOMING),
        subject="NUL \x00 in the subject",
    )
    after = _incoming("batch-3", "<batch-3@contract.test>", direction=EmailDirection.INCOMING)
    mixed = await repos.add_incoming_batch(
        [NewIncomingEmail(activity=refused), NewIncomingEmail(activity=after)]
    )
    assert len(mixed) == 2 and mixed[1] == Created(activity_id=after.id), (
        f"an email the store refuses must not keep the others out, got {mixed!r}"
    )
    if isinstance(mixed[0], SyncError):
        assert mixed[0].scope is ErrorScope.ITEM, "a refused email fails alone (scope item)"
        assert await repos.get_activity(refused.id) is None, "a refused email is not stored"


async def _check_send_claims(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    sender = a_mailbox("sender@contract.test")
    other = a_mailbox("other@contract.test")
    due = [
        a_pending_email(sender_mailbox=sender, to=["x@contract.test"], subject=f"due {n}")
        for n in range(3)
    ]
    later = a_pending_email(
        sender_mailbox=sender,
        to=["x@contract.test"],
        subject="later",
        postpone_sending_until=_T0 + timedelta(hours=1),
    )
    draft = attrs.evolve(due[0], id=ActivityId("contract-draft"), status=EmailStatus.DRAFT)
    foreign = a_pending_email(sender_mailbox=other, to=["x@contract.test"], subject="other")
    await harness.seed(mailboxes=[sender, other], activities=[*due, later, draft, foreign])

    until = _T0 + timedelta(minutes=30)
    claims = await repos.claim_pending_send(sender.id, owner="a", now=_T0, until=until, limit=10)
    assert {c.activity.id for c in claims} == {a.id for a in due}, (
        "only this mailbox's due Pending Send emails may be claimed"
    )
    for claim in claims:
        assert claim.activity.status is EmailStatus.SENDING, "a claim hands out a Sending email"
        assert claim.owner == "a", "a claim names its owner"
        stored = await repos.get_activity(claim.activity.id)
        assert stored is not None, "a claimed email must stay stored"
        assert stored.status is EmailStatus.SENDING, (
            "a claimed email must be stored as Sending, or another owner could claim it twice"
        )
    again = await repos.claim_pending_send(sender.id, owner="b", now=_T0, until=until, limit=10)
    assert not list(again), "a claimed email must not be claimed twice"

    by_id = {c.activity.id: c for c in claims}
    prepared = await repos.prepare_send(
        by_id[due[0].id],
        message_id=MessageId("<prepared@contract.test>"),
        subject="due 0 CRM:0001001",
        tracking_token="CRM:0001001",
    )
    assert prepared.token == by_id[due[0].id].token, "preparing keeps the claim"
    assert prepared.activity.message_id == "<prepared@contract.test>", "prepare stores the id"
    assert prepared.activity.tracking_token == "CRM:0001001", "prepare stores the token"
    stored = await repos.get_activity(due[0].id)
    assert stored is not None, "a prepared email stays stored"
    assert stored.subject == "due 0 CRM:0001001", "prepare stores the final subject"
    assert stored.message_id == "<prepared@contract.test>", (
        "the Message-ID is stored before sending"
    )
    by_id[due[0].id] = prepared
    sent = await repos.record_send_outcome(
        by_id[due[0].id],
        SendSucceeded(
            message_id=MessageId("<sent@contract.test>"), sent_on=_T0, server_reply="250"
        ),
    )
    assert sent.status is EmailStatus.SENT, "Sent outcome must set status Sent"
    assert sent.delivery_attempts == 1, "Sent outcome must count the attempt"
    assert sent.message_id == "<sent@contract.test>", "Sent outcome must store the Message-ID used"
    assert sent.tracking_token == "CRM:0001001", "Sent keeps the prepared tracking token"
    assert sent.sent_on == _T0, "Sent outcome must store the send time"
    try:
        await repos.record_send_outcome(by_id[due[0].id], SendFailed(error=_error(False)))
    except LeaseLostError:
        pass
    else:
        raise AssertionError("an outcome for a released claim must raise LeaseLostError")
    try:
        await repos.prepare_send(
            by_id[due[0].id],
            message_id=MessageId("<x@contract.test>"),
            subject="x",
            tracking_token=None,
        )
    except LeaseLostError:
        pass
    else:
        raise AssertionError("preparing a released claim must raise LeaseLostError")

    alice = RecordRef(EntityName.SYSTEMUSER.value, "alice")
    bob = RecordRef(EntityName.SYSTEMUSER.value, "bob")
    first = await repos.allocate_tracking_numbers(alice)
    second = await repos.allocate_tracking_numbers(bob)
    third = await repos.allocate_tracking_numbers(alice)
    assert first.user_number == third.user_number, "a user keeps one tracking number"
    assert first.user_number != second.user_number, "users get different tracking numbers"
    assert min(first.user_number, second.user_number) >= 1, "user numbers count from 1"
    assert (second.counter, third.counter) == (first.counter + 1, first.counter + 2), (
        "the tracking counter grows by one per email, organisation-wide"
    )

    retry_at = _T0 + timedelta(minutes=5)
    retried = await repos.record_send_outcome(
        by_id[due[1].id], SendRetry(not_before=retry_at, error=_error(True))
    )
    assert retried.status is EmailStatus.PENDING_SEND, (
        "Retry outcome must return the email to Pending Send"
    )
    assert retried.delivery_attempts == 1, "Retry outcome must count the attempt"
    assert retried.postpone_sending_until == retry_at, (
        "Retry outcome must postpone the next attempt"
    )
    early = await repos.claim_pending_send(sender.id, owner="a", now=_T0, until=until, limit=10)
    assert not list(early), "an email must not be claimed before its retry time"
    released = await repos.record_send_outcome(by_id[due[2].id], SendReleased(not_before=retry_at))
    assert released.status is EmailStatus.PENDING_SEND and released.delivery_attempts == 0, (
        "releasing a claim must not count an attempt"
    )

    racers = await asyncio.gather(
        *(
            repos.claim_pending_send(sender.id, owner=f"r{n}", now=retry_at, until=until, limit=10)
            for n in range(4)
        )
    )
    taken = [c.activity.id for batch in racers for c in batch]
    assert len(taken) == len(set(taken)), f"concurrent claims handed out one email twice: {taken}"
    assert set(taken) == {due[1].id, due[2].id}, f"due emails not claimed exactly once: {taken}"
    claim_of = {c.activity.id: c for batch in racers for c in batch}

    failed = await repos.record_send_outcome(claim_of[due[1].id], SendFailed(error=_error(False)))
    assert failed.status is EmailStatus.FAILED, "Failed outcome must set status Failed"
    assert failed.state is EmailStateCode.OPEN, "a Failed email must stay Open so it can be re-sent"
    assert failed.delivery_attempts == 2, "attempts must add up across claims"
    assert failed.last_send_error == _error(False), "Failed outcome must keep the error"

    assert not list(await repos.list_expired_claims(sender.id, now=until)), (
        "a claim is not expired at its expiry time"
    )
    expired = await repos.list_expired_claims(sender.id, now=until + timedelta(seconds=1))
    assert [c.activity.id for c in expired] == [due[2].id], (
        "only the Sending email with an expired claim is listed"
    )
    uncertain = await repos.record_send_outcome(expired[0], SendUncertain(error=_error(False)))
    assert uncertain.status is EmailStatus.FAILED, "Uncertain outcome must set status Failed"
    assert uncertain.delivery_uncertain, "Uncertain outcome must flag delivery_uncertain"


async def _check_correlation_candidates(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    customer = "customer@contract.test"

    def sent(n: int, **fields: Any) -> EmailActivity:
        return attrs.evolve(
            _incoming(f"corr-{n}", f"<corr-{n}@contract.test>", direction=EmailDirection.OUTGOING),
            sent_on=_T0 + timedelta(days=n),
            received_on=None,
            **fields,
        )

    by_token = sent(1, tracking_token="CRM:0001001")
    by_index = sent(2, base_conversation_index_hash=123456)
    party = ActivityParty(participation=ParticipationType.TO_RECIPIENT, address=customer)
    old = sent(3, parties=(party,))
    recent = [sent(10 + n, parties=(party,)) for n in range(3)]
    await harness.seed(activities=[by_token, by_index, old, *recent])

    async def ids(query: CorrelationQuery) -> set[ActivityId]:
        return {a.id for a in await repos.find_correlation_candidates(query)}

    assert await ids(CorrelationQuery()) == set(), "an empty query matches nothing"
    assert await ids(CorrelationQuery(message_ids=(MessageId("<corr-2@contract.test>"),))) == {
        by_index.id
    }, "candidates by Message-ID"
    assert await ids(CorrelationQuery(tracking_tokens=("CRM:0001001",))) == {by_token.id}, (
        "candidates by tracking token"
    )
    assert await ids(CorrelationQuery(conversation_index_hash=123456)) == {by_index.id}, (
        "candidates by conversation index hash"
    )
    everyone = await ids(CorrelationQuery(participants=(customer.upper(),)))
    assert everyone == {old.id, *(a.id for a in recent)}, (
        "candidates by participant address, compared without case"
    )
    since = await ids(CorrelationQuery(participants=(customer,), since=_T0 + timedelta(days=5)))
    assert since == {a.id for a in recent}, "participant candidates respect `since`"
    newest = await ids(CorrelationQuery(participants=(customer,), limit=2))
    assert newest == {recent[2].id, recent[1].id}, "participant candidates are the newest first"

    if isinstance(repos, CorrelationKeyLookup):
        by_keys = repos.find_by_correlation_keys
        both = await by_keys(conversation_index_hashes=[123456, 7], tracking_tokens=["CRM:0001001"])
        assert {a.id for a in both} == {by_index.id, by_token.id}, (
            "find_by_correlation_keys finds by conversation index hash and tracking token"
        )
        assert [a.id for a in await by_keys(conversation_index_hashes=[123456])] == [by_index.id], (
            "find_by_correlation_keys by conversation index hash alone"
        )
        assert (
            list(await by_keys(conversation_index_hashes=[7], tracking_tokens=["CRM:9"])) == []
        ), "hashes and tokens that no email has find nothing"
        assert list(await by_keys()) == [], "no keys find nothing"


async def _check_folder_tracking(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    account = RecordRef("account", "contract-account")
    rule = MailboxTrackingFolder(
        id=TrackingFolderId("contract-rule"),
        mailbox_id=MailboxId("mailbox:folder@contract.test"),
        exchange_folder_id="folder-1",
        regarding=account,
    )
    email = _incoming("folder-1", "<folder-1@contract.test>", direction=EmailDirection.INCOMING)
    other = _incoming("folder-2", "<folder-2@contract.test>", direction=EmailDirection.INCOMING)
    await harness.seed(activities=[email, other])
    await repos.link_to_tracking_folder(email.id, rule)
    linked = await repos.get_activity(email.id)
    assert linked is not None, "a linked email stays stored"
    assert linked.tracking_folder_id == rule.id, "link_to_tracking_folder records the rule"
    assert linked.regarding == account, "link_to_tracking_folder sets the rule's Regarding"

    await harness.seed(activities=[attrs.evolve(linked, regarding=RecordRef("account", "x"))])
    assert await repos.enforce_tracking_folder_regarding(rule) == 1, (
        "enforce_tracking_folder_regarding counts the emails it set back"
    )
    again = await repos.get_activity(email.id)
    assert again is not None, "an enforced email stays stored"
    assert again.regarding == account, "the rule's Regarding wins over a manual change"
    untouched = await repos.get_activity(other.id)
    assert untouched is not None, "other emails stay stored"
    assert untouched.regarding is None, "emails of no rule are left alone"
    assert await repos.enforce_tracking_folder_regarding(rule) == 0, "nothing left to change"


def _error(transient: bool) -> ErrorRecord:
    return ErrorRecord(
        error_type="MessageRejectedError" if not transient else "ConnectionFailedError",
        message="contract",
        transient=transient,
        scope="item",
        server_code="550" if not transient else None,
    )


async def _check_leases(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    until = _T0 + timedelta(minutes=10)
    assert await repos.try_acquire_lease("m/incoming", owner="a", now=_T0, until=until)
    assert not await repos.try_acquire_lease("m/incoming", owner="b", now=_T0, until=until), (
        "a held lease must not be given to another owner"
    )
    assert await repos.try_acquire_lease("m/outgoing", owner="b", now=_T0, until=until), (
        "leases are per key"
    )
    assert await repos.try_acquire_lease("m/incoming", owner="a", now=_T0, until=until), (
        "the owner may renew its lease"
    )
    await repos.release_lease("m/incoming", owner="b")
    assert not await repos.try_acquire_lease("m/incoming", owner="b", now=_T0, until=until), (
        "only the owner may release a lease"
    )
    assert await repos.try_acquire_lease(
        "m/incoming", owner="b", now=until + timedelta(seconds=1), until=until + timedelta(hours=1)
    ), "an expired lease must be taken over"
    await repos.release_lease("m/incoming", owner="b")
    assert await repos.try_acquire_lease("m/incoming", owner="c", now=_T0, until=until), (
        "a released lease is free"
    )


async def _check_workload_runs(harness: RepositoryHarness) -> None:
    """The optional combined calls (:class:`WorkloadRunRepository`) keep the promises of the
    separate ones they stand for."""
    repos = harness.repositories
    if not isinstance(repos, WorkloadRunRepository):
        return  # optional: the engine makes the separate calls instead
    box = MailboxId("mailbox:runs@contract.test")
    other = MailboxId("mailbox:other@contract.test")
    assert await repos.list_workload_states() == {}, "no state saved, none listed"
    due = WorkloadState(next_run_at=_T0, consecutive_failures=1)
    later = WorkloadState(next_run_at=_T0 + timedelta(minutes=5))
    await repos.save_workload_state(box, Workload.INCOMING, due)
    await repos.save_workload_state(other, Workload.OUTGOING, later)
    assert await repos.list_workload_states() == {
        (box, Workload.INCOMING): due,
        (other, Workload.OUTGOING): later,
    }, "every saved state, by mailbox and workload"

    until = _T0 + timedelta(minutes=10)
    key = f"{box}/incoming"
    assert await repos.acquire_workload_lease(
        box, Workload.INCOMING, key=key, owner="a", now=_T0, until=until
    ) == (True, due), "a free lease is taken, with the workload's state"
    assert await repos.acquire_workload_lease(
        box, Workload.INCOMING, key=key, owner="b", now=_T0, until=until
    ) == (False, None), "a held lease must not be given to another owner"
    assert not await repos.try_acquire_lease(key, owner="b", now=_T0, until=until), (
        "the combined call takes the same lease as try_acquire_lease"
    )
    assert await repos.acquire_workload_lease(
        box, Workload.OUTGOING, key=f"{box}/outgoing", owner="b", now=_T0, until=until
    ) == (True, None), "a workload never run has no state"
    assert await repos.acquire_workload_lease(
        box, Workload.INCOMING, key=key, owner="a", now=_T0, until=until
    ) == (True, due), "the owner may renew its lease"
    after = until + timedelta(seconds=1)
    assert await repos.acquire_workload_lease(
        box, Workload.INCOMING, key=key, owner="b", now=after, until=after + timedelta(hours=1)
    ) == (True, due), "an expired lease must be taken over"

    await repos.release_leases([(key, "a"), (f"{box}/outgoing", "b")])
    assert await repos.get_lease_holder(key, now=after) == "b", "only the owner may release a lease"
    assert await repos.get_lease_holder(f"{box}/outgoing", now=_T0) is None, (
        "every lease named is released"
    )
    await repos.release_leases([(key, "b")])
    assert await repos.get_lease_holder(key, now=after) is None, "a released lease is free"
    await repos.release_leases([])

    # Engines racing for one new lease: exactly one wins.
    race = f"{other}/outgoing"
    won = await asyncio.gather(
        *(
            repos.acquire_workload_lease(
                other, Workload.OUTGOING, key=race, owner=f"engine-{n}", now=_T0, until=until
            )
            for n in range(8)
        )
    )
    assert sorted(acquired for acquired, _ in won) == [False] * 7 + [True], won
    assert [state for acquired, state in won if acquired] == [later], won


async def _check_workload_run_end(harness: RepositoryHarness) -> None:
    """The end of a run in one call (:class:`WorkloadRunEndRepository`) saves the state and
    gives back the leases of their owners, as the separate calls would."""
    repos = harness.repositories
    if not isinstance(repos, WorkloadRunEndRepository):
        return  # optional: the engine makes the separate calls instead
    box = MailboxId("mailbox:end@contract.test")
    until = _T0 + timedelta(minutes=10)
    key, slot = f"{box}/incoming", "profile:p/connection:0"
    assert await repos.try_acquire_lease(key, owner="a", now=_T0, until=until)
    assert await repos.try_acquire_lease(slot, owner="a|slot", now=_T0, until=until)
    assert await repos.try_acquire_lease("other", owner="c", now=_T0, until=until)
    first = WorkloadState(next_run_at=_T0, consecutive_failures=2)
    await repos.save_workload_state(box, Workload.INCOMING, first)
    done = WorkloadState(
        next_run_at=_T0 + timedelta(minutes=5),
        last_sync_started_on=_T0,
        last_successful_sync_completed_on=_T0 + timedelta(seconds=1),
        items_processed_for_last_sync=3,
    )
    await repos.finish_workload_run(
        box, Workload.INCOMING, done, [(slot, "a|slot"), (key, "a"), ("other", "b")]
    )
    assert await repos.get_workload_state(box, Workload.INCOMING) == done, (
        "the run's state replaces the saved one"
    )
    assert await repos.get_workload_state(box, Workload.OUTGOING) is None, (
        "only the named workload's state is saved"
    )
    assert await repos.get_lease_holder(key, now=_T0) is None, "the mailbox lease is given back"
    assert await repos.get_lease_holder(slot, now=_T0) is None, "the slot is given back"
    assert await repos.get_lease_holder("other", now=_T0) == "c", (
        "only the owner may release a lease"
    )
    fresh = MailboxId("mailbox:fresh@contract.test")
    await repos.finish_workload_run(fresh, Workload.OUTGOING, done, [])
    assert await repos.get_workload_state(fresh, Workload.OUTGOING) == done, (
        "a workload never saved gets its first state"
    )


async def _check_incoming_run_start(harness: RepositoryHarness) -> None:
    """What an incoming run reads first, in one call (:class:`IncomingRunRepository`): what
    the separate calls answer."""
    repos = harness.repositories
    if not isinstance(repos, IncomingRunRepository):
        return  # optional: the engine makes the separate calls instead
    box = MailboxId("mailbox:start@contract.test")
    other = MailboxId("mailbox:elsewhere@contract.test")
    empty = await repos.load_incoming_run(box, now=_T0, quarantine_limit=10)
    assert empty == IncomingRunStart(), "a mailbox never run has no rules, entries or cursors"

    inbox = ImapCheckpoint(uidvalidity=7, last_uid=42, highest_modseq=9)
    archive = ImapCheckpoint(uidvalidity=8, last_uid=3)
    await repos.save_checkpoint(box, INBOX, inbox)
    await repos.save_checkpoint(box, "Archive", archive)
    await repos.save_checkpoint(other, INBOX, ImapCheckpoint(uidvalidity=1, last_uid=1))
    entries = [
        _poison(box, INBOX, "1", next_attempt_at=_T0 - timedelta(minutes=1)),
        _poison(box, INBOX, "2", next_attempt_at=_T0 - timedelta(minutes=2)),
        _poison(box, "Archive", "3", next_attempt_at=_T0 - timedelta(minutes=3)),
        _poison(box, INBOX, "4", next_attempt_at=_T0 + timedelta(minutes=1)),
        _poison(box, INBOX, "5", next_attempt_at=None, given_up_at=_T0),
        _poison(other, INBOX, "6", next_attempt_at=_T0 - timedelta(minutes=5)),
    ]
    for entry in entries:
        await repos.quarantine(entry)

    start = await repos.load_incoming_run(box, now=_T0, quarantine_limit=2)
    assert start.checkpoints == {INBOX: inbox, "Archive": archive}, (
        "every cursor of the mailbox, by folder, and no other mailbox's"
    )
    assert list(start.due_quarantine) == list(await repos.due_quarantine(box, now=_T0, limit=2)), (
        "the entries due_quarantine answers"
    )
    assert [e.remote_id for e in start.due_quarantine] == ["3", "2"], (
        "the due entries, earliest first, at most the limit"
    )
    assert list(start.tracking_folders) == list(await repos.list_tracking_folders(box)), (
        "the mailbox's folder rules"
    )
    everything = await repos.load_incoming_run(box, now=_T0, quarantine_limit=10)
    assert [e.remote_id for e in everything.due_quarantine] == ["3", "2", "1"], (
        "neither entries not yet due nor given-up ones"
    )


async def _check_claim_unless_expired(harness: RepositoryHarness) -> None:
    """The outgoing claim with the expired claims (:class:`WorkloadRunRepository`): nothing
    is claimed while an expired claim waits to be settled."""
    repos = harness.repositories
    if not isinstance(repos, WorkloadRunRepository):
        return  # optional: the engine makes the separate calls instead
    sender = a_mailbox("sender@contract.test")
    other = a_mailbox("other@contract.test")
    due = [
        a_pending_email(sender_mailbox=sender, to=["x@contract.test"], subject=f"due {n}")
        for n in range(2)
    ]
    foreign = a_pending_email(sender_mailbox=other, to=["x@contract.test"], subject="other")
    await harness.seed(mailboxes=[sender, other], activities=[*due, foreign])

    until = _T0 + timedelta(minutes=30)
    expired, claimed = await repos.claim_pending_send_unless_expired(
        sender.id, owner="a", now=_T0, until=until, limit=1
    )
    assert (list(expired), [c.activity.id for c in claimed]) == ([], [due[0].id]), (
        "with no expired claim, this mailbox's next due email is claimed"
    )
    stored = await repos.get_activity(due[0].id)
    assert stored is not None and stored.status is EmailStatus.SENDING, (
        "the claimed email is stored as Sending"
    )

    after = until + timedelta(seconds=1)
    expired, claimed = await repos.claim_pending_send_unless_expired(
        sender.id, owner="b", now=after, until=after + timedelta(minutes=30), limit=1
    )
    assert [c.activity.id for c in expired] == [due[0].id], "the expired claim is listed"
    assert expired[0].owner == "a", "an expired claim names the owner it expired on"
    assert not list(claimed), "nothing is claimed while an expired claim waits to be settled"
    waiting = await repos.get_activity(due[1].id)
    assert waiting is not None and waiting.status is EmailStatus.PENDING_SEND, (
        "the next email stays Pending Send"
    )
    listed = await repos.list_expired_claims(sender.id, now=after)
    assert [(c.activity.id, c.token) for c in listed] == [
        (c.activity.id, c.token) for c in expired
    ], "the combined call lists what list_expired_claims lists"

    # Engines racing: one email, one claim.
    won = await asyncio.gather(
        *(
            repos.claim_pending_send_unless_expired(
                other.id, owner=f"engine-{n}", now=_T0, until=until, limit=1
            )
            for n in range(6)
        )
    )
    claims = [c for _, claimed_ in won for c in claimed_]
    assert [c.activity.id for c in claims] == [foreign.id], "an email is claimed once"


async def _check_lease_holder(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    until = _T0 + timedelta(minutes=10)
    assert await repos.get_lease_holder("m/incoming", now=_T0) is None, "no lease, no holder"
    assert await repos.try_acquire_lease("m/incoming", owner="a", now=_T0, until=until)
    assert await repos.get_lease_holder("m/incoming", now=_T0) == "a", "the holder is named"
    assert await repos.get_lease_holder("m/outgoing", now=_T0) is None, "holders are per key"
    assert await repos.get_lease_holder("m/incoming", now=until) is None, (
        "a lease expiring at the time asked about is free"
    )
    assert await repos.try_acquire_lease(
        "m/incoming", owner="b", now=until, until=until + timedelta(minutes=10)
    ), "an expired lease must be taken over"
    assert await repos.get_lease_holder("m/incoming", now=until) == "b", "the new holder counts"
    await repos.release_lease("m/incoming", owner="b")
    assert await repos.get_lease_holder("m/incoming", now=until) is None, "a released lease"


async def _check_disabling_workloads(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    box = a_mailbox("disable@contract.test")
    await harness.seed(mailboxes=[box])
    error = ErrorRecord(
        error_type="AuthenticationError", message="login refused", transient=False, scope="mailbox"
    )
    assert await repos.disable_workload(box.id, Workload.INCOMING, error=error, at=_T0), (
        "disabling an enabled workload must answer True"
    )
    stored = await repos.get_mailbox(box.id)
    assert stored is not None, "a disabled mailbox stays stored"
    assert not stored.enabled_for_incoming, "the workload must be disabled"
    assert stored.incoming_status is TestStatus.FAILURE, "the workload's status must be Failure"
    assert stored.enabled_for_outgoing and stored.enabled_for_act, (
        "the other workloads must stay enabled"
    )
    assert stored.outgoing_status is box.outgoing_status, "other statuses are left alone"
    assert (
        attrs.evolve(stored, enabled_for_incoming=True, incoming_status=box.incoming_status) == box
    ), "nothing else on the mailbox may change"
    assert not await repos.disable_workload(box.id, Workload.INCOMING, error=error, at=_T0), (
        "disabling a disabled workload must answer False"
    )
    assert await repos.get_mailbox(box.id) == stored, "a repeated call changes nothing"
    assert await repos.disable_workload(box.id, Workload.ACT, error=error, at=_T0)
    again = await repos.get_mailbox(box.id)
    assert again is not None
    assert not again.enabled_for_act and again.act_status is TestStatus.FAILURE
    assert again.enabled_for_outgoing, "outgoing is still enabled"
    assert not await repos.disable_workload(
        MailboxId("missing"), Workload.OUTGOING, error=error, at=_T0
    ), "an unknown mailbox must answer False"


async def _check_mailbox_test(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    box = attrs.evolve(
        a_mailbox("tested@contract.test"),
        enabled_for_incoming=False,
        incoming_status=TestStatus.FAILURE,
    )
    await harness.seed(mailboxes=[box])
    for folder in (INBOX, "Archive"):
        await repos.save_checkpoint(box.id, folder, ImapCheckpoint(uidvalidity=1, last_uid=9))
    other = MailboxId("mailbox:untouched@contract.test")
    await repos.save_checkpoint(other, INBOX, ImapCheckpoint(uidvalidity=1, last_uid=5))
    await repos.record_mailbox_test(
        box.id,
        {Workload.INCOMING: TestStatus.SUCCESS, Workload.OUTGOING: TestStatus.FAILURE},
        at=_T0,
    )
    tested = await repos.get_mailbox(box.id)
    assert tested is not None, "a tested mailbox stays stored"
    assert tested.enabled_for_incoming and tested.incoming_status is TestStatus.SUCCESS, (
        "a workload that passed its test is enabled with status Success"
    )
    assert not tested.enabled_for_outgoing and tested.outgoing_status is TestStatus.FAILURE, (
        "a workload that failed its test is disabled with status Failure"
    )
    assert tested.enabled_for_act == box.enabled_for_act and tested.act_status is box.act_status, (
        "an untested workload is left alone"
    )
    assert tested.test_completed_on == _T0, "the test's completion time is stamped"
    await repos.record_mailbox_test(
        MailboxId("missing"), {Workload.INCOMING: TestStatus.SUCCESS}, at=_T0
    )
    assert await repos.get_mailbox(MailboxId("missing")) is None, "no mailbox is created"
    await repos.clear_checkpoints(box.id)
    assert await repos.load_checkpoint(box.id, INBOX) is None, "every cursor is forgotten"
    assert await repos.load_checkpoint(box.id, "Archive") is None, "every folder's cursor too"
    assert await repos.load_checkpoint(other, INBOX) == ImapCheckpoint(uidvalidity=1, last_uid=5), (
        "other mailboxes keep their cursors"
    )


async def _check_pending_send_count(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    sender = a_mailbox("backlog@contract.test")
    other = a_mailbox("other-backlog@contract.test")
    due = a_pending_email(sender_mailbox=sender, to=["x@contract.test"], subject="due")
    later = a_pending_email(
        sender_mailbox=sender,
        to=["x@contract.test"],
        subject="later",
        postpone_sending_until=_T0 + timedelta(hours=1),
    )
    sent = attrs.evolve(
        a_pending_email(sender_mailbox=sender, to=["x@contract.test"], subject="sent"),
        status=EmailStatus.SENT,
    )
    foreign = a_pending_email(sender_mailbox=other, to=["x@contract.test"], subject="other")
    await harness.seed(mailboxes=[sender, other], activities=[due, later, sent, foreign])
    assert await repos.count_pending_send(sender.id) == 2, (
        "due and postponed Pending Send emails of the mailbox count; sent ones do not"
    )
    claims = await repos.claim_pending_send(
        sender.id, owner="a", now=_T0, until=_T0 + timedelta(minutes=5), limit=1
    )
    assert len(claims) == 1
    assert await repos.count_pending_send(sender.id) == 1, "a claimed (Sending) email is not"
    assert await repos.count_pending_send(MailboxId("missing")) == 0


def _poison(mailbox: MailboxId, folder: str, remote_id: str, **fields: Any) -> QuarantinedMessage:
    values: dict[str, Any] = {
        "received_at": _T0 - timedelta(hours=1),
        "message_id": MessageId(f"<poison-{remote_id}@contract.test>"),
        "subject": f"poison {remote_id}",
        "sender": "sender@contract.test",
        "explanation": "unreadable message: contract",
        "error": ErrorRecord(
            error_type="MalformedMessageError",
            message="cannot parse message body",
            transient=False,
            scope="item",
        ),
        "attempts": 1,
        "first_failed_at": _T0,
        "last_failed_at": _T0,
        "next_attempt_at": _T0 + timedelta(minutes=15),
    }
    values.update(fields)
    return QuarantinedMessage(mailbox_id=mailbox, folder=folder, remote_id=remote_id, **values)


async def _check_quarantine(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    box = MailboxId("mailbox:poison@contract.test")
    other = MailboxId("mailbox:another@contract.test")
    assert not list(await repos.list_quarantine()), "a fresh store has an empty quarantine"
    assert await repos.get_quarantined(box, INBOX, "1") is None, "an unknown entry is None"
    assert not await repos.release_quarantine(box, INBOX, "1"), (
        "releasing an unknown entry must answer False"
    )

    later = _poison(box, INBOX, "1")
    sooner = _poison(
        box,
        INBOX,
        "2",
        first_failed_at=_T0 + timedelta(minutes=1),
        last_failed_at=_T0 + timedelta(minutes=1),
        next_attempt_at=_T0 + timedelta(minutes=5),
    )
    archived = _poison(
        box,
        "Archive",
        "1",
        message_id=None,
        subject=None,
        sender=None,
        received_at=None,
        first_failed_at=_T0 + timedelta(minutes=2),
        last_failed_at=_T0 + timedelta(minutes=2),
        next_attempt_at=_T0 + timedelta(minutes=30),
    )
    given_up = _poison(
        box,
        INBOX,
        "3",
        attempts=5,
        first_failed_at=_T0 - timedelta(hours=2),
        next_attempt_at=None,
        given_up_at=_T0,
    )
    elsewhere = _poison(other, INBOX, "1", next_attempt_at=_T0)
    for entry in (later, sooner, archived, given_up, elsewhere):
        await repos.quarantine(entry)

    assert await repos.get_quarantined(box, INBOX, "1") == later, (
        "get_quarantined must return the entry as stored"
    )
    assert await repos.get_quarantined(box, "Archive", "1") == archived, (
        "entries are kept per folder: the same remote id in another folder is another message"
    )
    assert await repos.get_quarantined(box, INBOX, "3") == given_up, "a given-up entry is kept"
    listed = [(q.folder, q.remote_id) for q in await repos.list_quarantine(box)]
    assert listed == [(INBOX, "3"), (INBOX, "1"), (INBOX, "2"), ("Archive", "1")], (
        f"list_quarantine(mailbox) lists its entries by first failure, got {listed}"
    )
    everything = [(q.mailbox_id, q.remote_id) for q in await repos.list_quarantine()]
    assert everything[0] == (other, "1") and len(everything) == 5, (
        f"list_quarantine() lists every mailbox's entries by mailbox id, got {everything}"
    )

    def ids(entries: Sequence[QuarantinedMessage]) -> list[tuple[str, str]]:
        return [(q.folder, q.remote_id) for q in entries]

    assert ids(await repos.due_quarantine(box, now=_T0, limit=10)) == [], "nothing is due yet"
    at_five = await repos.due_quarantine(box, now=_T0 + timedelta(minutes=5), limit=10)
    assert ids(at_five) == [(INBOX, "2")], (
        "an entry is due at its next attempt time; later ones and given-up ones are not"
    )
    hour = _T0 + timedelta(hours=1)
    assert ids(await repos.due_quarantine(box, now=hour, limit=10)) == [
        (INBOX, "2"),
        (INBOX, "1"),
        ("Archive", "1"),
    ], "due entries come earliest next attempt first, and never a given-up one"
    assert ids(await repos.due_quarantine(box, now=hour, limit=1)) == [(INBOX, "2")], (
        "due_quarantine must honour its limit"
    )
    assert ids(await repos.due_quarantine(other, now=_T0, limit=10)) == [(INBOX, "1")], (
        "due entries are per mailbox"
    )

    retried = attrs.evolve(
        later,
        attempts=2,
        last_failed_at=_T0 + timedelta(minutes=15),
        next_attempt_at=_T0 + timedelta(minutes=20),
    )
    await repos.quarantine(retried)
    await repos.quarantine(retried)
    assert await repos.get_quarantined(box, INBOX, "1") == retried, "quarantine must replace"
    assert len(await repos.list_quarantine(box)) == 4, "replacing an entry must not add one"
    gave_up = attrs.evolve(sooner, attempts=5, next_attempt_at=None, given_up_at=hour)
    await repos.quarantine(gave_up)
    assert ids(await repos.due_quarantine(box, now=hour, limit=10)) == [
        (INBOX, "1"),
        ("Archive", "1"),
    ], "an entry given up is no longer due"

    assert await repos.release_quarantine(box, INBOX, "1"), "releasing an entry answers True"
    assert await repos.get_quarantined(box, INBOX, "1") is None, "a released entry is gone"
    assert not await repos.release_quarantine(box, INBOX, "1"), "releasing twice answers False"
    assert await repos.get_quarantined(box, "Archive", "1") == archived, (
        "releasing one entry leaves the same remote id in another folder alone"
    )
    assert await repos.get_quarantined(other, INBOX, "1") == elsewhere, (
        "releasing one entry leaves other mailboxes alone"
    )


async def _check_quarantine_count(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    box = MailboxId("mailbox:counted@contract.test")
    other = MailboxId("mailbox:not-counted@contract.test")
    empty = await repos.count_quarantine(box)
    assert (empty.waiting, empty.given_up, empty.next_attempt_at) == (0, 0, None), (
        f"a mailbox without quarantined messages counts none, got {empty}"
    )
    await repos.quarantine(_poison(box, INBOX, "1", next_attempt_at=_T0 + timedelta(minutes=15)))
    await repos.quarantine(_poison(box, "Archive", "1", next_attempt_at=_T0 + timedelta(minutes=5)))
    await repos.quarantine(
        _poison(box, INBOX, "2", attempts=5, next_attempt_at=None, given_up_at=_T0)
    )
    await repos.quarantine(_poison(other, INBOX, "1", next_attempt_at=_T0))
    counted = await repos.count_quarantine(box)
    assert (counted.waiting, counted.given_up) == (2, 1), (
        f"count_quarantine counts the mailbox's waiting and given-up entries, got {counted}"
    )
    assert counted.total == 3
    assert counted.next_attempt_at == _T0 + timedelta(minutes=5), (
        "count_quarantine gives the earliest next attempt of the waiting entries, got "
        f"{counted.next_attempt_at}"
    )
    await repos.release_quarantine(box, "Archive", "1")
    after = await repos.count_quarantine(box)
    assert (after.waiting, after.next_attempt_at) == (1, _T0 + timedelta(minutes=15)), (
        f"a released entry is no longer counted, got {after}"
    )


async def _check_mailbox_administration(harness: RepositoryHarness) -> None:
    repos = harness.repositories
    owner = RecordRef(EntityName.SYSTEMUSER.value, "admin-user")
    box = attrs.evolve(
        a_mailbox("admin@contract.test"), owner=owner, approval=EmailApprovalStatus.APPROVED
    )
    assert await repos.create_mailbox(box) is None, "creating a new mailbox answers None"
    assert await repos.get_mailbox(box.id) == box, "a created mailbox is stored as given"
    second = attrs.evolve(a_mailbox("admin-2@contract.test"), owner=owner)
    existing = await repos.create_mailbox(second)
    assert existing == box, "a second mailbox of the same owner is refused with the first"
    assert await repos.get_mailbox(second.id) is None, "a refused mailbox is not stored"
    same_id = attrs.evolve(box, owner=RecordRef(EntityName.QUEUE.value, "another-queue"))
    assert await repos.create_mailbox(same_id) == box, "a taken id is refused"
    assert await repos.get_mailbox(box.id) == box, "a refused mailbox changes nothing"

    queue = RecordRef(EntityName.QUEUE.value, "race-queue")
    racers = [attrs.evolve(a_mailbox(f"race-{n}@contract.test"), owner=queue) for n in range(5)]
    answers = await asyncio.gather(*(repos.create_mailbox(m) for m in racers))
    stored = [m for m in await repos.list_mailboxes() if m.owner == queue]
    assert len(stored) == 1 and answers.count(None) == 1, (
        f"concurrent creations for one queue store exactly one mailbox, stored {len(stored)}"
    )
    forwards = [
        attrs.evolve(a_mailbox(f"forward-{n}@contract.test"), owner=None, is_forward_mailbox=True)
        for n in range(2)
    ]
    for forward in forwards:
        assert await repos.create_mailbox(forward) is None, "forward mailboxes have no owner"

    await repos.disable_workload(box.id, Workload.INCOMING, error=_error(transient=False), at=_T0)
    case_only = await repos.change_mailbox_address(box.id, "ADMIN@contract.test")
    assert case_only is not None and case_only.email_address == "ADMIN@contract.test"
    assert case_only.approval is EmailApprovalStatus.APPROVED, (
        "an address that changed only in letter case keeps its approval"
    )
    moved = await repos.change_mailbox_address(box.id, "admin-new@contract.test")
    assert moved is not None and moved.email_address == "admin-new@contract.test"
    assert moved.approval is EmailApprovalStatus.EMPTY, "a new address is no longer approved"
    assert not moved.enabled_for_incoming, "changing the address keeps other changes"
    assert await repos.get_mailbox(box.id) == moved, "the new address is stored"
    approved = await repos.set_mailbox_approval(box.id, EmailApprovalStatus.APPROVED)
    assert approved is not None and approved.approval is EmailApprovalStatus.APPROVED
    assert attrs.evolve(approved, approval=moved.approval) == moved, (
        "setting the approval changes nothing else"
    )
    assert await repos.get_mailbox(box.id) == approved, "the approval is stored"
    missing = MailboxId("missing")
    assert await repos.change_mailbox_address(missing, "x@contract.test") is None
    assert await repos.set_mailbox_approval(missing, EmailApprovalStatus.APPROVED) is None
    assert await repos.get_mailbox(missing) is None, "no mailbox is created"
