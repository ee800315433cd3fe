"""The mailbox lifecycle (spec entities-and-lifecycle.md §3, §4 and §6; behaviours 1 to 4 of
§12): what is processed at all, the mailbox a new user or queue gets, email address approval
and Test & Enable. Behaviours 5 and 6 are in ``test_error_policy.py``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    ActDeliveryMethod,
    AlertKind,
    AlertLevel,
    ConfigurationError,
    DefaultEmailSettings,
    DuplicateMailboxError,
    EmailApprovalStatus,
    EntityName,
    ImapCheckpoint,
    IncomingDeliveryMethod,
    IncomingFilteringMethod,
    Mailbox,
    MailboxId,
    OrganizationSettings,
    OutgoingDeliveryMethod,
    ProfileId,
    RecordRef,
    RecordState,
    RunStatus,
    SkipReason,
    SyncSettings,
    TestStatus,
    Workload,
    WorkloadState,
    check_mailbox,
    new_mailbox,
)
from serversync.testing import InMemoryWorld, a_mailbox, a_pending_email, a_profile, an_email

from .engine_support import Recorder

ALICE = "alice@contoso.example"
SUPPORT = "support@contoso.example"
CUSTOMER = "jane@fabrikam.example"
ALICE_REF = RecordRef(EntityName.SYSTEMUSER.value, "alice")
SUPPORT_REF = RecordRef(EntityName.QUEUE.value, "support")


async def _stored(world: InMemoryWorld, mailbox: Mailbox) -> Mailbox:
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    return stored


# -- behaviour 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"state": RecordState.INACTIVE}, SkipReason.INACTIVE),
        ({"profile_id": None}, SkipReason.NO_PROFILE),
        ({"profile_id": ProfileId("deleted-profile")}, SkipReason.NO_PROFILE),
    ],
)
async def test_behaviour_1_an_inactive_mailbox_or_one_without_a_profile_is_not_processed(
    change: dict[str, Any], reason: SkipReason
) -> None:
    world = InMemoryWorld()
    alice = world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
        **change,
    )
    world.deliver(ALICE, an_email(sender=CUSTOMER, to=[ALICE], subject="Order"))
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject="Hi"))
    calls_before = len(world.server.faults.calls)

    async with world.engine() as engine:
        report = await engine.run_once(workloads=list(Workload))
        forced = await engine.sync_mailbox(alice.id, workloads=list(Workload))

    for reports in (report.mailboxes, forced):
        assert {(r.workload, r.status, r.skip_reason) for r in reports} == {
            (workload, RunStatus.SKIPPED, reason) for workload in Workload
        }, "no incoming, outgoing or ACT processing"
    assert len(world.server.faults.calls) == calls_before, "the server is never contacted"
    assert not world.server.outbox, "nothing is sent"
    assert [a.subject for a in world.storage.activities()] == ["Hi"], "nothing is received"
    for workload in Workload:
        assert await world.storage.get_workload_state(alice.id, workload) is None
    assert await _stored(world, alice) == alice, "the mailbox is left as it is"


# -- behaviour 2 ------------------------------------------------------------------------------


PROFILE = ProfileId("profile-1")


def _defaults(profile: ProfileId | None = PROFILE) -> DefaultEmailSettings:
    return DefaultEmailSettings(
        profile_id=profile,
        incoming_delivery_method=IncomingDeliveryMethod.SERVER_SIDE_SYNC,
        outgoing_delivery_method=OutgoingDeliveryMethod.SERVER_SIDE_SYNC,
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
    )


def _world_with_defaults(defaults: DefaultEmailSettings) -> InMemoryWorld:
    org = OrganizationSettings(default_email_settings=defaults)
    return InMemoryWorld(settings=SyncSettings(organization=org))


async def test_behaviour_2_a_new_user_or_queue_gets_one_mailbox_a_second_is_rejected() -> None:
    world = _world_with_defaults(_defaults(ProfileId("profile-1")))

    async with world.engine() as engine:
        alice = await engine.provision_mailbox(ALICE_REF, ALICE, name="Alice")
        support = await engine.provision_mailbox(SUPPORT_REF, SUPPORT)
        with pytest.raises(DuplicateMailboxError) as refused:
            await engine.provision_mailbox(ALICE_REF, "alice.second@contoso.example")
        with pytest.raises(DuplicateMailboxError):
            await engine.provision_mailbox(SUPPORT_REF, SUPPORT, mailbox_id=MailboxId("other"))

    assert refused.value.existing == alice.id
    assert "already has the mailbox" in str(refused.value)
    stored = await world.storage.list_mailboxes()
    assert sorted(m.id for m in stored) == sorted([alice.id, support.id]), "exactly one each"
    for mailbox, owner in ((alice, ALICE_REF), (support, SUPPORT_REF)):
        assert await _stored(world, mailbox) == mailbox
        assert mailbox.owner == owner
        assert mailbox.profile_id == ProfileId("profile-1"), "linked to the default profile"
        assert mailbox.incoming_delivery_method is IncomingDeliveryMethod.SERVER_SIDE_SYNC
        assert mailbox.outgoing_delivery_method is OutgoingDeliveryMethod.SERVER_SIDE_SYNC
        assert mailbox.act_delivery_method is ActDeliveryMethod.SERVER_SIDE_SYNC
        assert mailbox.is_active
        assert not mailbox.is_forward_mailbox
        assert mailbox.approval is EmailApprovalStatus.EMPTY, "the address awaits approval"
        assert (mailbox.incoming_status, mailbox.outgoing_status, mailbox.act_status) == (
            TestStatus.NOT_RUN,
            TestStatus.NOT_RUN,
            TestStatus.NOT_RUN,
        )
    assert alice.id == MailboxId("systemuser:alice")
    assert alice.name == "Alice"


async def test_provisioning_without_server_side_sync_links_no_profile() -> None:
    defaults = DefaultEmailSettings(
        profile_id=ProfileId("profile-1"),
        incoming_delivery_method=IncomingDeliveryMethod.NONE,
        outgoing_delivery_method=OutgoingDeliveryMethod.OUTLOOK,
        act_delivery_method=ActDeliveryMethod.NONE,
    )
    world = _world_with_defaults(defaults)
    async with world.engine() as engine:
        alice = await engine.provision_mailbox(ALICE_REF, ALICE)
    assert alice.profile_id is None
    assert alice.outgoing_delivery_method is OutgoingDeliveryMethod.OUTLOOK


async def test_provisioning_refuses_a_missing_default_profile_and_an_owner_that_is_no_user() -> (
    None
):
    world = _world_with_defaults(_defaults(ProfileId("no-such-profile")))
    async with world.engine() as engine:
        with pytest.raises(ConfigurationError, match="no email server profile no-such-profile"):
            await engine.provision_mailbox(ALICE_REF, ALICE)
        with pytest.raises(ConfigurationError, match="user or a queue"):
            await engine.provision_mailbox(RecordRef("contact", "c1"), CUSTOMER)
    assert not await world.storage.list_mailboxes()


def test_the_default_email_settings_are_server_side_sync_without_a_profile() -> None:
    defaults = OrganizationSettings().default_email_settings
    assert defaults.profile_id is None
    assert defaults.incoming_delivery_method is IncomingDeliveryMethod.SERVER_SIDE_SYNC
    assert defaults.outgoing_delivery_method is OutgoingDeliveryMethod.SERVER_SIDE_SYNC
    assert defaults.act_delivery_method is ActDeliveryMethod.NONE


def test_new_mailbox_is_pure_and_checks_the_existing_mailboxes() -> None:
    first = new_mailbox(ALICE_REF, f" {ALICE} ", defaults=_defaults())
    assert first.email_address == ALICE
    assert new_mailbox(ALICE_REF, ALICE, defaults=_defaults()) == first, "same input, same box"
    with pytest.raises(DuplicateMailboxError):
        new_mailbox(ALICE_REF, ALICE, defaults=_defaults(), existing=[first])
    with pytest.raises(DuplicateMailboxError, match="taken"):
        new_mailbox(
            SUPPORT_REF, SUPPORT, defaults=_defaults(), existing=[first], mailbox_id=first.id
        )
    with pytest.raises(ConfigurationError, match="email address"):
        new_mailbox(SUPPORT_REF, "  ", defaults=_defaults())


# -- forward mailboxes (spec §6) --------------------------------------------------------------


def _forward(**changes: Any) -> Mailbox:
    fields: dict[str, Any] = {
        "owner": None,
        "is_forward_mailbox": True,
        "outgoing_delivery_method": OutgoingDeliveryMethod.NONE,
        "process_and_delete_emails": True,
    }
    fields.update(changes)
    return attrs.evolve(a_mailbox("forward@contoso.example"), **fields)


def test_a_forward_mailbox_has_no_owner_sends_nothing_and_has_a_profile() -> None:
    check_mailbox(_forward())
    bad = [
        (_forward(owner=ALICE_REF), "belongs to no user or queue"),
        (_forward(outgoing_delivery_method=OutgoingDeliveryMethod.SERVER_SIDE_SYNC), "sends"),
        (_forward(act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC), "appointments"),
        (_forward(profile_id=None), "linked to an email server profile"),
        (_forward(incoming_delivery_method=IncomingDeliveryMethod.NONE), "receives"),
    ]
    for mailbox, problem in bad:
        with pytest.raises(ConfigurationError, match=problem):
            check_mailbox(mailbox)


def test_only_forward_and_queue_mailboxes_may_delete_emails_after_processing() -> None:
    queue = a_mailbox(SUPPORT, owner=SUPPORT_REF, process_and_delete_emails=True)
    check_mailbox(queue)
    user = a_mailbox(ALICE, owner=ALICE_REF, process_and_delete_emails=True)
    with pytest.raises(ConfigurationError, match="only forward and queue mailboxes"):
        check_mailbox(user)
    with pytest.raises(ConfigurationError, match="needs its user or queue"):
        check_mailbox(a_mailbox(ALICE, owner=None))


async def test_the_engine_adds_a_valid_forward_mailbox_and_refuses_an_invalid_one() -> None:
    world = InMemoryWorld()
    async with world.engine() as engine:
        added = await engine.add_mailbox(_forward())
        with pytest.raises(ConfigurationError, match="sends nothing"):
            await engine.add_mailbox(
                _forward(
                    id=MailboxId("forward-2"),
                    outgoing_delivery_method=OutgoingDeliveryMethod.SERVER_SIDE_SYNC,
                )
            )
    assert await world.storage.list_mailboxes() == [added]


# -- email address approval (spec §4.2) and behaviour 3 ---------------------------------------


@pytest.mark.parametrize("approval", [EmailApprovalStatus.EMPTY, EmailApprovalStatus.REJECTED])
async def test_behaviour_3_an_unapproved_address_receives_and_sends_nothing_is_disabled_and_alerts(
    approval: EmailApprovalStatus,
) -> None:
    world = InMemoryWorld()
    alice = world.add_user(
        ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES, approval=approval
    )
    world.deliver(ALICE, an_email(sender=CUSTOMER, to=[ALICE], subject="Order"))
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject="Hi"))
    recorder = Recorder()
    calls_before = len(world.server.faults.calls)

    async with world.engine(observer=recorder) as engine:
        first = await engine.run_once()
        world.clock.advance(timedelta(minutes=10))
        second = await engine.run_once()

    assert {(r.workload, r.skip_reason) for r in first.mailboxes} == {
        (Workload.INCOMING, SkipReason.NOT_APPROVED),
        (Workload.OUTGOING, SkipReason.NOT_APPROVED),
    }
    assert {r.skip_reason for r in second.mailboxes} == {SkipReason.WORKLOAD_DISABLED}
    assert len(world.server.faults.calls) == calls_before, "the server is never contacted"
    assert not world.server.outbox, "nothing is sent"
    assert [a.subject for a in world.storage.activities()] == ["Hi"], "nothing is received"
    stored = await _stored(world, alice)
    assert not stored.enabled_for_incoming
    assert not stored.enabled_for_outgoing
    assert stored.incoming_status is TestStatus.FAILURE
    assert stored.outgoing_status is TestStatus.FAILURE
    alerts = recorder.alerts_of(AlertKind.WORKLOAD_DISABLED)
    assert sorted(a.workload for a in alerts if a.workload) == [
        Workload.INCOMING,
        Workload.OUTGOING,
    ], "one alert per workload, raised once"
    for alert in alerts:
        assert alert.level is AlertLevel.ERROR
        assert alert.profile_id == world.profile.id, "the profile owner is alerted"
        assert alert.mailbox_id == alice.id
        assert alert.error is not None
        assert alert.error.error_type == "EmailAddressNotApprovedError"
        assert "is not approved" in alert.message
    state = await world.storage.get_workload_state(alice.id, Workload.INCOMING)
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.error_type == "EmailAddressNotApprovedError", "health shows why"


async def test_approval_then_test_and_enable_bring_an_unapproved_mailbox_back() -> None:
    world = InMemoryWorld()
    alice = world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        approval=EmailApprovalStatus.PENDING_APPROVAL,
    )
    world.deliver(ALICE, an_email(sender=CUSTOMER, to=[ALICE], subject="Order"))
    async with world.engine() as engine:
        await engine.run_once()
        approved = await engine.set_mailbox_approval(alice.id)
        assert approved.approval is EmailApprovalStatus.APPROVED
        report = await engine.test_mailbox(alice.id)
        assert report.succeeded
        run = await engine.run_once()
    assert {r.status for r in run.mailboxes} == {RunStatus.SUCCEEDED}
    assert [a.subject for a in world.storage.activities()] == ["Order"]


async def test_without_the_approval_switch_an_unapproved_user_mailbox_syncs() -> None:
    org = OrganizationSettings(require_approval_for_user_email=False)
    world = InMemoryWorld(settings=SyncSettings(organization=org))
    world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        approval=EmailApprovalStatus.EMPTY,
    )
    queue = world.add_queue(SUPPORT, approval=EmailApprovalStatus.EMPTY)
    world.deliver(ALICE, an_email(sender=CUSTOMER, to=[ALICE], subject="Order"))
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    statuses = {r.mailbox_id: (r.status, r.skip_reason) for r in report.mailboxes}
    assert statuses[queue.id] == (RunStatus.SKIPPED, SkipReason.NOT_APPROVED), (
        "the queue switch still applies"
    )
    assert [a.subject for a in world.storage.activities()] == ["Order"]


async def test_changing_the_address_resets_its_approval() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    async with world.engine() as engine:
        same = await engine.change_mailbox_address(alice.id, ALICE.upper())
        moved = await engine.change_mailbox_address(alice.id, "alice.smith@contoso.example")
        with pytest.raises(ConfigurationError, match="no mailbox"):
            await engine.change_mailbox_address(MailboxId("missing"), ALICE)
        with pytest.raises(ConfigurationError, match="needs an email address"):
            await engine.change_mailbox_address(alice.id, " ")
        report = await engine.run_once(workloads=[Workload.INCOMING])
    assert same.approval is EmailApprovalStatus.APPROVED, "a change of letter case only keeps it"
    assert moved.email_address == "alice.smith@contoso.example"
    assert moved.approval is EmailApprovalStatus.EMPTY
    (only,) = report.mailboxes
    assert only.skip_reason is SkipReason.NOT_APPROVED, "the new address must be approved"


def test_with_email_address_keeps_everything_but_the_address_and_approval() -> None:
    box = a_mailbox(ALICE, owner=ALICE_REF, enabled_for_outgoing=False)
    moved = box.with_email_address("new@contoso.example")
    assert attrs.evolve(moved, email_address=box.email_address, approval=box.approval) == box
    assert moved.approval is EmailApprovalStatus.EMPTY


# -- behaviour 4 ------------------------------------------------------------------------------


async def test_behaviour_4_test_and_enable_sets_statuses_stamps_enables_resets_cursor() -> None:
    world = InMemoryWorld()
    alice = world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        enabled_for_incoming=False,
        incoming_status=TestStatus.FAILURE,
        enabled_for_outgoing=False,
        outgoing_status=TestStatus.FAILURE,
    )
    world.deliver(ALICE, an_email(sender=CUSTOMER, to=[ALICE], subject="Old order"))
    # The cursor already passed the message (as if the Inbox had been read before).
    await world.storage.save_checkpoint(
        alice.id, "INBOX", ImapCheckpoint(uidvalidity=1, last_uid=99)
    )
    failing = WorkloadState(
        consecutive_failures=4, next_run_at=world.clock.now().replace(year=2030)
    )
    await world.storage.save_workload_state(alice.id, Workload.INCOMING, failing)
    world.clock.advance(timedelta(minutes=3))
    tested_at = world.clock.now()

    async with world.engine() as engine:
        report = await engine.test_mailbox(alice.id)
        run = await engine.run_once(workloads=[Workload.INCOMING])

    assert {(r.workload, r.status) for r in report.results} == {
        (Workload.INCOMING, TestStatus.SUCCESS),
        (Workload.OUTGOING, TestStatus.SUCCESS),
    }
    assert report.completed_on == tested_at
    stored = await _stored(world, alice)
    assert (stored.incoming_status, stored.outgoing_status) == (
        TestStatus.SUCCESS,
        TestStatus.SUCCESS,
    )
    assert stored.enabled_for_incoming, "re-enabled"
    assert stored.enabled_for_outgoing, "re-enabled"
    assert stored.test_completed_on == tested_at, "the time is stamped"
    assert stored.act_status is TestStatus.NOT_RUN, "ACT is not configured, so not tested"
    (incoming,) = run.mailboxes
    assert incoming.status is RunStatus.SUCCEEDED, "due at once, the failure streak forgotten"
    assert [a.subject for a in world.storage.activities()] == ["Old order"], (
        "the cursor was reset: mail newer than Process Email From is considered again"
    )


async def test_behaviour_4_a_failing_workload_is_disabled_with_status_failure() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.set_password(ALICE, "changed")
    await world.storage.save_checkpoint(
        alice.id, "INBOX", ImapCheckpoint(uidvalidity=1, last_uid=7)
    )
    async with world.engine() as engine:
        report = await engine.test_mailbox(alice.id)
    assert {r.status for r in report.results} == {TestStatus.FAILURE}
    stored = await _stored(world, alice)
    assert not stored.enabled_for_incoming
    assert not stored.enabled_for_outgoing
    assert stored.test_completed_on == world.clock.now()
    assert await world.storage.load_checkpoint(alice.id, "INBOX") == ImapCheckpoint(
        uidvalidity=1, last_uid=7
    ), "a failed incoming test keeps the cursor"


async def test_behaviour_4_a_forward_mailbox_tests_incoming_only() -> None:
    world = InMemoryWorld(profile=a_profile())
    forward = world.add_forward_mailbox("forward@contoso.example")
    async with world.engine() as engine:
        report = await engine.test_mailbox(forward.id)
    assert [(r.workload, r.status) for r in report.results] == [
        (Workload.INCOMING, TestStatus.SUCCESS)
    ]
