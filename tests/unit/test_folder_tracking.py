"""Folder-level tracking rules (spec entities-and-lifecycle.md §9, behaviours 11 and 12)."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from serversync import (
    ConfigurationError,
    IncomingFilteringMethod,
    MailboxTrackingFolder,
    OrganizationSettings,
    OutcomeKind,
    RecordRef,
    ServerType,
    TrackingFolderId,
    Workload,
)
from serversync.model import EmailActivity, Mailbox
from serversync.relevance import validate_tracking_folder
from serversync.testing import InMemoryWorld, a_profile, an_email

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
CONTOSO = RecordRef("account", "contoso")


def rule_for(mailbox: Mailbox, folder_id: str, n: int = 1) -> MailboxTrackingFolder:
    return MailboxTrackingFolder(
        id=TrackingFolderId(f"rule-{n}"),
        mailbox_id=mailbox.id,
        exchange_folder_id=folder_id,
        exchange_folder_name="Contoso",
        regarding=CONTOSO,
    )


def tracked_world() -> tuple[InMemoryWorld, Mailbox, str]:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    folder = world.server.create_folder(ALICE, "Contoso")
    world.storage.add_tracking_folder(rule_for(alice, folder))
    return world, alice, folder


async def sync(world: InMemoryWorld) -> list[EmailActivity]:
    async with world.engine() as engine:
        await engine.run_once(workloads=[Workload.INCOMING])
    world.clock.advance(timedelta(minutes=5))
    return world.storage.activities()


async def test_12_email_moved_into_a_tracked_folder_is_tracked_regarding_the_rules_record() -> None:
    world, _, folder = tracked_world()
    uid = world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="Deal"))
    assert await sync(world) == [], "filter 'No email messages' tracks nothing from the Inbox"
    world.server.move(ALICE, uid, "INBOX", folder)
    (activity,) = await sync(world)
    assert activity.subject == "Deal"
    assert activity.regarding == CONTOSO
    assert activity.tracking_folder_id == "rule-1"
    assert activity.accepting_entity is None, "folder tracking is not filter acceptance"


async def test_12_a_manual_change_of_regarding_is_set_back_on_the_next_sync() -> None:
    world, _, folder = tracked_world()
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]), folder=folder)
    (activity,) = await sync(world)
    world.storage.put_activity(attrs.evolve(activity, regarding=RecordRef("account", "other")))
    (again,) = await sync(world)
    assert again.regarding == CONTOSO


async def test_12_a_renamed_folder_stays_tracked_by_its_id() -> None:
    world, _, folder = tracked_world()
    world.server.rename_folder(ALICE, folder, "Contoso Ltd")
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]), folder=folder)
    (activity,) = await sync(world)
    assert activity.regarding == CONTOSO


async def test_12_a_folder_moved_outside_the_inbox_stops_being_tracked() -> None:
    world, _, folder = tracked_world()
    world.server.move_folder(ALICE, folder, None)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]), folder=folder)
    assert await sync(world) == []
    world.server.move_folder(ALICE, folder, "INBOX")
    (activity,) = await sync(world)
    assert activity.regarding == CONTOSO, "tracking resumes when it is back under Inbox"


async def test_a_subfolder_of_a_tracked_folder_is_not_tracked() -> None:
    world, _, folder = tracked_world()
    child = world.server.create_folder(ALICE, "Old", parent=folder)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]), folder=child)
    assert await sync(world) == []


async def test_an_email_already_tracked_follows_the_folder_it_is_moved_into() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    folder = world.server.create_folder(ALICE, "Contoso")
    world.storage.add_tracking_folder(rule_for(alice, folder))
    uid = world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]))
    (activity,) = await sync(world)
    assert activity.regarding is None
    world.server.move(ALICE, uid, "INBOX", folder)
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    assert [i.kind for i in report.items()] == [OutcomeKind.DUPLICATE]
    (relinked,) = world.storage.activities()
    assert relinked.regarding == CONTOSO


async def test_rules_beyond_the_limit_are_ignored_while_syncing() -> None:
    world = InMemoryWorld(
        settings=attrs.evolve(
            InMemoryWorld().settings,
            organization=OrganizationSettings(max_folder_based_tracking_mappings=1),
        )
    )
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    first = world.server.create_folder(ALICE, "First")
    second = world.server.create_folder(ALICE, "Second")
    world.storage.add_tracking_folder(rule_for(alice, first, 1))
    world.storage.add_tracking_folder(rule_for(alice, second, 2))
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="one"), folder=first)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="two"), folder=second)
    assert [a.subject for a in await sync(world)] == ["one"]


def test_11_a_26th_rule_a_queue_mailbox_rule_and_a_pop3_rule_are_rejected() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    org = OrganizationSettings()
    existing = [rule_for(alice, f"folder-{n}", n) for n in range(25)]
    with pytest.raises(ConfigurationError, match="at most 25"):
        validate_tracking_folder(
            rule_for(alice, "folder-99", 99),
            existing,
            mailbox=alice,
            profile=world.profile,
            org=org,
        )
    validate_tracking_folder(
        rule_for(alice, "folder-99", 99),
        existing[:24],
        mailbox=alice,
        profile=world.profile,
        org=org,
    )
    queue = world.add_queue("support@contoso.example")
    with pytest.raises(ConfigurationError, match="queue"):
        validate_tracking_folder(
            rule_for(queue, "f"), [], mailbox=queue, profile=world.profile, org=org
        )
    pop3 = a_profile(server_type=ServerType.OTHER_POP3_SMTP)
    with pytest.raises(ConfigurationError, match="POP3"):
        validate_tracking_folder(rule_for(alice, "f"), [], mailbox=alice, profile=pop3, org=org)
