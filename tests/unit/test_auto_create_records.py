"""Contacts and leads for unknown senders of tracked email (spec §3.5, gap G7)."""

from __future__ import annotations

from serversync import (
    EntityName,
    IncomingFilteringMethod,
    OrganizationSettings,
    OutcomeKind,
    RunReport,
    SyncSettings,
    Workload,
)
from serversync.model import ParticipationType
from serversync.testing import InMemoryWorld, a_contact, an_email

ALICE = "alice@contoso.example"
SUPPORT = "support@contoso.example"
STRANGER = "Pat Stranger <pat@unknown.example>"
ALL = IncomingFilteringMethod.ALL_EMAIL_MESSAGES


async def receive(world: InMemoryWorld) -> RunReport:
    async with world.engine() as engine:
        return await engine.run_once(workloads=[Workload.INCOMING])


def world_with_alice(create: str | None, *, org: bool = True) -> InMemoryWorld:
    settings = SyncSettings(organization=OrganizationSettings(auto_create_contact_on_promote=org))
    world = InMemoryWorld(settings=settings)
    world.add_user(ALICE, filtering=ALL, user_fields={"auto_create_record_type": create})
    return world


async def test_an_unknown_sender_becomes_a_contact_the_email_is_linked_to() -> None:
    world = world_with_alice("contact")
    world.deliver(ALICE, an_email(sender=STRANGER, to=[ALICE], message_id="<m1@unknown.example>"))

    report = await receive(world)

    (outcome,) = report.items()
    assert outcome.kind is OutcomeKind.TRACKED
    (created,) = (await world.directory.find_by_addresses(["pat@unknown.example"]))[
        "pat@unknown.example"
    ]
    assert created.ref.entity == EntityName.CONTACT
    assert created.name == "Pat Stranger"
    assert created.owner is not None
    assert created.owner.entity == EntityName.SYSTEMUSER
    (activity,) = world.storage.activities()
    sender = next(p for p in activity.parties if p.participation is ParticipationType.SENDER)
    assert sender.record == created.ref


async def test_a_second_email_from_the_same_sender_creates_no_second_record() -> None:
    world = world_with_alice("lead")
    for n in (1, 2):
        world.deliver(
            ALICE, an_email(sender=STRANGER, to=[ALICE], message_id=f"<m{n}@unknown.example>")
        )

    await receive(world)

    found = await world.directory.find_by_addresses(["pat@unknown.example"])
    (lead,) = found["pat@unknown.example"]
    assert lead.ref.entity == EntityName.LEAD
    activities = world.storage.activities()
    assert len(activities) == 2
    for activity in activities:
        sender = next(p for p in activity.parties if p.participation is ParticipationType.SENDER)
        assert sender.record == lead.ref


async def test_nothing_is_created_without_the_users_option() -> None:
    world = world_with_alice(None)
    world.deliver(ALICE, an_email(sender=STRANGER, to=[ALICE]))

    (outcome,) = (await receive(world)).items()

    assert outcome.kind is OutcomeKind.TRACKED
    assert await world.directory.find_by_addresses(["pat@unknown.example"]) == {}


async def test_the_organisation_switch_turns_it_off_for_everyone() -> None:
    world = world_with_alice("contact", org=False)
    world.deliver(ALICE, an_email(sender=STRANGER, to=[ALICE]))

    (outcome,) = (await receive(world)).items()

    assert outcome.kind is OutcomeKind.TRACKED
    assert await world.directory.find_by_addresses(["pat@unknown.example"]) == {}


async def test_a_known_sender_gets_no_new_record() -> None:
    world = world_with_alice("contact")
    known = a_contact("pat@unknown.example")
    world.add_record(known)
    world.deliver(ALICE, an_email(sender=STRANGER, to=[ALICE]))

    await receive(world)

    found = await world.directory.find_by_addresses(["pat@unknown.example"])
    assert found["pat@unknown.example"] == (known,)


async def test_mail_a_queue_accepts_creates_nothing() -> None:
    world = InMemoryWorld()
    world.add_queue(SUPPORT)
    world.deliver(SUPPORT, an_email(sender=STRANGER, to=[SUPPORT]))

    (outcome,) = (await receive(world)).items()

    assert outcome.kind is OutcomeKind.TRACKED
    assert await world.directory.find_by_addresses(["pat@unknown.example"]) == {}


async def test_untracked_mail_creates_nothing() -> None:
    world = InMemoryWorld()
    world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL,
        user_fields={"auto_create_record_type": "contact"},
    )
    world.deliver(ALICE, an_email(sender=STRANGER, to=[ALICE]))

    (outcome,) = (await receive(world)).items()

    assert outcome.kind is not OutcomeKind.TRACKED
    assert await world.directory.find_by_addresses(["pat@unknown.example"]) == {}
    assert world.storage.activities() == []
