"""Copies of sent mail in the profile's Sent folder, over the in-memory adapters."""

from __future__ import annotations

from datetime import timedelta

from serversync import (
    ConnectionFailedError,
    EmailDirection,
    EmailStatus,
    OrganizationSettings,
    OutcomeKind,
    RunReport,
    SyncSettings,
    Workload,
)
from serversync.mime import parse_headers
from serversync.model import SENT
from serversync.testing import InMemoryWorld, a_pending_email, a_profile

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


async def run(world: InMemoryWorld, *workloads: Workload) -> RunReport:
    async with world.engine() as engine:
        return await engine.run_once(workloads=list(workloads))


async def test_a_sent_email_is_copied_to_the_sent_folder_read_and_tagged() -> None:
    world = InMemoryWorld(profile=a_profile(sent_folder="Sent"))
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)

    report = await run(world, Workload.OUTGOING)

    (result,) = report.sends()
    assert result.status is EmailStatus.SENT
    assert result.copied_to_sent is True
    assert result.sent_copy_error is None
    (sent,) = world.server.outbox
    (copy,) = world.server.messages(ALICE, "Sent")
    assert copy.data == sent.data
    assert copy.keywords == {"\\Seen", "$ServerSyncTracked"}
    assert parse_headers(copy.data).message_id == result.message_id


async def test_no_sent_folder_means_no_copy() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[JANE], subject="Hi"))

    report = await run(world, Workload.OUTGOING)

    (result,) = report.sends()
    assert result.status is EmailStatus.SENT
    assert result.copied_to_sent is None
    assert [name for name in ("Sent",) if _has_folder(world, name)] == []


def _has_folder(world: InMemoryWorld, name: str) -> bool:
    try:
        world.server.folder_id(ALICE, name)
    except KeyError:
        return False
    return True


async def test_a_failed_copy_leaves_the_email_sent_and_says_why() -> None:
    world = InMemoryWorld(profile=a_profile(sent_folder="Sent"))
    alice = world.add_user(ALICE)
    emails = [a_pending_email(sender_mailbox=alice, to=[JANE], subject=s) for s in "abc"]
    for email in emails:
        world.storage.put_activity(email)
    world.server.faults.fail_next(
        "append", ConnectionFailedError("the IMAP server went away"), skip=1
    )

    report = await run(world, Workload.OUTGOING)

    results = list(report.sends())
    assert [r.status for r in results] == [EmailStatus.SENT] * 3
    # The first copy is stored; the second fails; the third is not tried on the same session.
    assert [r.copied_to_sent for r in results] == [True, False, False]
    for result in results[1:]:
        assert result.sent_copy_error is not None
        assert "went away" in result.sent_copy_error.message
    assert len(world.server.outbox) == 3
    assert len(world.server.messages(ALICE, "Sent")) == 1
    assert {a.status for a in world.storage.activities()} == {EmailStatus.SENT}


async def test_the_copy_never_comes_back_as_a_new_email_when_sent_items_are_tracked() -> None:
    settings = SyncSettings(organization=OrganizationSettings(auto_track_sent_folder_items=True))
    world = InMemoryWorld(profile=a_profile(sent_folder="Sent"), settings=settings)
    alice = world.add_user(ALICE)
    world.server.create_folder(ALICE, "Sent", parent=None, special_use=SENT)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)

    await run(world, Workload.OUTGOING)
    assert len(world.server.messages(ALICE, "Sent")) == 1
    world.clock.advance(timedelta(minutes=10))
    incoming = await run(world, Workload.INCOMING)

    (outcome,) = incoming.items()  # the copy was read, and recognized as the sent email
    assert outcome.kind is OutcomeKind.DUPLICATE
    assert outcome.activity_id == email.id
    activities = world.storage.activities()
    assert [a.id for a in activities] == [email.id]
    assert activities[0].direction is EmailDirection.OUTGOING
