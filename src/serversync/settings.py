"""Engine settings: timeouts, limits, retry cadence, schedule and organisation switches.

Every class is frozen; derive variants with :func:`attrs.evolve`. Defaults follow Dynamics
365 where it publishes a number (5-minute cadence, 10 transient failures 5 minutes apart) and
the choices in ``docs/decisions.md`` where it does not.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from serversync.model.act import ActEntity, ConflictWinner, SyncDirection
from serversync.model.ids import ProfileId
from serversync.model.options import (
    ActDeliveryMethod,
    IncomingDeliveryMethod,
    IncomingFilteringMethod,
    OutgoingDeliveryMethod,
)

__all__ = [
    "ActSettings",
    "AlertSettings",
    "ConflictPolicy",
    "DefaultEmailSettings",
    "ExpiredClaimPolicy",
    "Limits",
    "LoopGuardSettings",
    "OrganizationSettings",
    "PushSettings",
    "RetryPolicy",
    "Schedule",
    "SmartMatchingSettings",
    "SyncSettings",
    "Timeouts",
    "TrackingTokenSettings",
]

_positive = attrs.validators.gt(timedelta(0))
_at_least_one = attrs.validators.ge(1)


# Large enough for the biggest mail Exchange Online and Gmail accept (35 to 50 MB, encoded).
_MAX_MESSAGE_SIZE: int | None = 50 * 1024 * 1024


def _optional_size(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and value < 1:
        raise ValueError(
            f"{attribute.name} is a number of bytes (at least 1) or None, not {value!r}"
        )


@attrs.frozen(kw_only=True)
class Timeouts:
    """Deadlines for every network and storage await (seconds as :class:`timedelta`)."""

    connect: timedelta = attrs.field(default=timedelta(seconds=30), validator=_positive)
    command: timedelta = attrs.field(default=timedelta(seconds=60), validator=_positive)
    fetch: timedelta = attrs.field(default=timedelta(seconds=120), validator=_positive)
    send: timedelta = attrs.field(default=timedelta(seconds=120), validator=_positive)
    storage: timedelta = attrs.field(default=timedelta(seconds=30), validator=_positive)
    close: timedelta = attrs.field(default=timedelta(seconds=10), validator=_positive)


@attrs.frozen(kw_only=True)
class Limits:
    """Batch sizes, concurrency bounds and the message size limit.

    ``max_message_size`` (bytes; ``None`` for none) bounds every message: an incoming one
    whose announced size is larger is not downloaded but quarantined as too large, and an
    outgoing one that composes larger fails for good. Attachments have their own limit,
    :attr:`OrganizationSettings.max_upload_file_size`.
    """

    incoming_batch_size: int = attrs.field(default=100, validator=_at_least_one)
    outgoing_batch_size: int = attrs.field(default=50, validator=_at_least_one)
    max_concurrent_mailboxes: int = attrs.field(default=50, validator=_at_least_one)
    max_batches_per_run: int = attrs.field(default=20, validator=_at_least_one)
    max_message_size: int | None = attrs.field(default=_MAX_MESSAGE_SIZE, validator=_optional_size)


class ExpiredClaimPolicy(enum.StrEnum):
    """What to do with an email whose send claim expired while it was Sending.

    SMTP cannot tell afterwards whether the server got the message, so the default does not
    send it again: the email is marked Failed with ``delivery_uncertain`` for the host to
    decide. ``RESEND`` puts it back to Pending Send and accepts a possible duplicate.
    """

    MARK_UNCERTAIN = "mark_uncertain"
    RESEND = "resend"


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Back-off for failing mailboxes and for emails that could not be sent.

    Dynamics' error policy: a transient failure postpones the workload by
    ``mailbox_transient_backoff`` (``MailboxBackoffOnTransientError``; a server's retry-after
    wins when longer), a timeout by ``mailbox_timeout_backoff`` (``MailboxBackoffOnTimeout``;
    ``None`` means the transient back-off), and the ``max_transient_failures``-th failure in a
    row (``MaxMailboxTransientFailures``) counts as permanent and disables the workload.

    An incoming message that cannot be fetched, parsed or stored is quarantined and tried
    again on later cycles, ``quarantine_retry_interval`` apart (Dynamics: about every 15
    minutes); after ``quarantine_max_attempts`` failed attempts, the first included (Dynamics:
    5), it is tagged Undeliverable on the server and no longer tried.
    """

    mailbox_transient_backoff: timedelta = attrs.field(
        default=timedelta(minutes=5), validator=_positive
    )
    mailbox_timeout_backoff: timedelta | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    max_transient_failures: int = attrs.field(default=10, validator=_at_least_one)
    send_max_attempts: int = attrs.field(default=5, validator=_at_least_one)
    send_retry_interval: timedelta = attrs.field(default=timedelta(minutes=5), validator=_positive)
    send_claim_duration: timedelta = attrs.field(default=timedelta(minutes=30), validator=_positive)
    expired_claim_policy: ExpiredClaimPolicy = ExpiredClaimPolicy.MARK_UNCERTAIN
    quarantine_max_attempts: int = attrs.field(default=5, validator=_at_least_one)
    quarantine_retry_interval: timedelta = attrs.field(
        default=timedelta(minutes=15), validator=_positive
    )


def _fraction(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{attribute.name} is a fraction between 0 and 1, not {value!r}")


@attrs.frozen(kw_only=True)
class Schedule:
    """How often each workload runs; the next run is measured from the end of the last.

    Dynamics' cadence: incoming about 5 minutes after a cycle ends, outgoing every 5 minutes,
    ACT 5 to 12 minutes after a cycle (5 to 15 when the mailbox also receives mail through
    server-side sync); each mailbox gets its own fixed point in the ACT range, derived from
    its id. A profile's minimum polling interval lengthens every interval.

    A running workload renews its lease once ``lease_renewal_fraction`` of
    ``lease_duration`` has passed since the last renewal, looking at the clock every
    ``lease_check_interval`` (with the system clock, at least every tenth of that period).
    ``run_forever`` sleeps until the next workload is due, at most ``idle_sleep``.
    """

    incoming_interval: timedelta = attrs.field(default=timedelta(minutes=5), validator=_positive)
    outgoing_interval: timedelta = attrs.field(default=timedelta(minutes=5), validator=_positive)
    act_min_interval: timedelta = attrs.field(default=timedelta(minutes=5), validator=_positive)
    act_max_interval: timedelta = attrs.field(default=timedelta(minutes=12), validator=_positive)
    act_max_interval_with_incoming: timedelta = attrs.field(
        default=timedelta(minutes=15), validator=_positive
    )
    lease_duration: timedelta = attrs.field(default=timedelta(minutes=10), validator=_positive)
    lease_renewal_fraction: float = attrs.field(default=1 / 3, validator=_fraction)
    lease_check_interval: timedelta = attrs.field(default=timedelta(seconds=1), validator=_positive)
    idle_sleep: timedelta = attrs.field(default=timedelta(seconds=30), validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.act_max_interval < self.act_min_interval:
            raise ValueError("act_max_interval is shorter than act_min_interval")
        if self.act_max_interval_with_incoming < self.act_min_interval:
            raise ValueError("act_max_interval_with_incoming is shorter than act_min_interval")


@attrs.frozen(kw_only=True)
class PushSettings:
    """Push hints in :meth:`~serversync.SyncEngine.run_forever` (IMAP IDLE).

    Where the profile's incoming transport offers push
    (:class:`~serversync.ports.PushHintSource`), the engine keeps one watch per mailbox
    whose incoming workload may run, and a push makes that workload due now; polling goes
    on as before, so a missed push only costs latency. ``enabled=False`` turns push off.

    The watch is renewed on the server every ``refresh_every``, at most 29 minutes (IMAP
    servers may drop an IDLE after 30, RFC 2177); a renewal not answered within
    ``Timeouts.command`` counts as a dead connection. After a failed connection the engine
    reconnects after ``reconnect_min``, doubling up to ``reconnect_max`` while failures go
    on. One engine keeps at most ``max_watchers`` watches, and the watches of one profile,
    across engines, hold at most ``profile_connection_share`` of its
    ``max_concurrent_connections`` (rounded down), so polling always keeps the rest.
    """

    enabled: bool = True
    refresh_every: timedelta = attrs.field(
        default=timedelta(minutes=25),
        validator=[_positive, attrs.validators.le(timedelta(minutes=29))],
    )
    reconnect_min: timedelta = attrs.field(default=timedelta(seconds=1), validator=_positive)
    reconnect_max: timedelta = attrs.field(default=timedelta(minutes=5), validator=_positive)
    max_watchers: int = attrs.field(default=100, validator=attrs.validators.ge(0))
    profile_connection_share: float = attrs.field(default=0.5, validator=_fraction)

    def __attrs_post_init__(self) -> None:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max is shorter than reconnect_min")


@attrs.frozen(kw_only=True)
class AlertSettings:
    """When the engine raises the profile-level alert: more than ``mass_failure_share`` of a
    profile's mailboxes failed within ``mass_failure_window`` (Dynamics: more than half, in
    an hour). The alert is raised at most once per window and profile by one engine."""

    mass_failure_window: timedelta = attrs.field(default=timedelta(hours=1), validator=_positive)
    mass_failure_share: float = attrs.field(default=0.5, validator=_fraction)


def _prefix(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not 1 <= len(value) <= 20 or any(c.isspace() for c in value):
        raise ValueError(f"a tracking token prefix is 1 to 20 characters without spaces: {value!r}")


@attrs.frozen(kw_only=True)
class TrackingTokenSettings:
    """The organisation's tracking token format (Dynamics System Settings, Email tab).

    ``previous_prefixes`` are prefixes used before: replies carrying them still correlate.
    ``max_subject_length`` is ``MaximumSubjectLengthOnMailServer``.
    """

    enabled: bool = True
    prefix: str = attrs.field(default="CRM:", validator=_prefix)
    previous_prefixes: tuple[str, ...] = ()
    base: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    user_digits: int = attrs.field(
        default=3, validator=[attrs.validators.ge(1), attrs.validators.le(10)]
    )
    counter_digits: int = attrs.field(
        default=3, validator=[attrs.validators.ge(1), attrs.validators.le(9)]
    )
    max_subject_length: int = attrs.field(default=255, validator=attrs.validators.ge(1))

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The current prefix, then the old ones."""
        return (self.prefix, *(p for p in self.previous_prefixes if p != self.prefix))


@attrs.frozen(kw_only=True)
class SmartMatchingSettings:
    """``enablesmartmatching`` and the ``Hash*`` settings (off by default, as in Dynamics)."""

    enabled: bool = False
    filter_keywords: str = r"^[\s]*([\w]+\s?:[\s]*)+"
    max_count: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    delta_subject_count: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    min_address_count: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    window: timedelta = timedelta(days=90)


# Dynamics' default "blocked file extensions for attachments".
@attrs.frozen(kw_only=True)
class LoopGuardSettings:
    """The opt-in loop guard: reject automatic mail and senders flooding the CRM.

    Off by default, as Dynamics tracks auto-replies like any email (gap G11).
    """

    enabled: bool = False
    max_messages: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    window: timedelta = timedelta(minutes=120)


_BLOCKED_EXTENSIONS = (
    "ade",
    "adp",
    "app",
    "asa",
    "ashx",
    "asmx",
    "asp",
    "bas",
    "bat",
    "cdx",
    "cer",
    "chm",
    "class",
    "cmd",
    "com",
    "config",
    "cpl",
    "crt",
    "csh",
    "dll",
    "exe",
    "fxp",
    "hlp",
    "hta",
    "htr",
    "htw",
    "ida",
    "idc",
    "idq",
    "inf",
    "ins",
    "isp",
    "its",
    "jar",
    "js",
    "jse",
    "ksh",
    "lnk",
    "mad",
    "maf",
    "mag",
    "mam",
    "maq",
    "mar",
    "mas",
    "mat",
    "mau",
    "mav",
    "maw",
    "mda",
    "mdb",
    "mde",
    "mdt",
    "mdw",
    "mdz",
    "msc",
    "msh",
    "msh1",
    "msh1xml",
    "msh2",
    "msh2xml",
    "mshxml",
    "msi",
    "msp",
    "mst",
    "ops",
    "pcd",
    "pif",
    "prf",
    "prg",
    "printer",
    "pst",
    "reg",
    "rem",
    "scf",
    "scr",
    "sct",
    "shb",
    "shs",
    "shtm",
    "shtml",
    "soap",
    "stm",
    "tmp",
    "url",
    "vb",
    "vbe",
    "vbs",
    "vsmacro",
    "vss",
    "vst",
    "vsw",
    "ws",
    "wsc",
    "wsf",
    "wsh",
)


@attrs.frozen(kw_only=True)
class DefaultEmailSettings:
    """The organisation's default email settings, applied to the mailbox of every new user and
    queue (Dynamics ``defaultemailsettings`` and ``defaultemailserverprofileid``).

    A new mailbox gets these delivery methods, and ``profile_id`` when any of them is
    server-side synchronization.
    """

    profile_id: ProfileId | None = None
    incoming_delivery_method: IncomingDeliveryMethod = IncomingDeliveryMethod.SERVER_SIDE_SYNC
    outgoing_delivery_method: OutgoingDeliveryMethod = OutgoingDeliveryMethod.SERVER_SIDE_SYNC
    act_delivery_method: ActDeliveryMethod = ActDeliveryMethod.NONE


@attrs.frozen(kw_only=True)
class OrganizationSettings:
    """Organisation-wide switches that change what is processed (Dynamics System Settings)."""

    require_approval_for_user_email: bool = True
    require_approval_for_queue_email: bool = True
    email_correlation_enabled: bool = True
    default_user_filtering_method: IncomingFilteringMethod = (
        IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL
    )
    default_queue_filtering_method: IncomingFilteringMethod = (
        IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL
    )
    tracking_tokens: TrackingTokenSettings = attrs.Factory(TrackingTokenSettings)
    auto_create_contact_on_promote: bool = True
    """OrgDB ``AutoCreateContactOnPromote``: off, no user's "Automatically create records"
    option creates contacts or leads."""
    smart_matching: SmartMatchingSettings = attrs.Factory(SmartMatchingSettings)
    ignore_conversation_index_and_in_reply_to: bool = False
    do_not_correlate_forwarded_emails_as_replies: bool = False
    use_filtering_method_of_syncing_mailbox_only: bool = False
    force_filtering_method_for_user_mailboxes: bool = False
    """OrgDB ``SSSForceFilteringMethodForUserMailboxes`` (gap G2): a user's mailbox tracks
    only what its owner's filter accepts; queue mailboxes still ask every recipient."""
    unresolve_sender_in_case_of_multiple_match: bool = False
    unresolve_email_address_if_multiple_match: bool = False
    max_upload_file_size: int = attrs.field(default=5_120 * 1024, validator=attrs.validators.ge(0))
    blocked_attachment_extensions: tuple[str, ...] = _BLOCKED_EXTENSIONS
    allow_unresolved_parties_on_email_send: bool = False
    loop_guard: LoopGuardSettings = attrs.Factory(LoopGuardSettings)
    track_email_sent_between_users_as_two_activities: bool = False
    ignore_internal_email_detection_enhancement: bool = True
    do_not_ignore_internal_email_to_queues: bool = True
    auto_track_sent_folder_items: bool = False
    create_queue_items_for_accepting_queue_recipients: bool = True
    create_queue_item_for_synchronizing_mailbox: bool = True
    create_additional_queue_items_for_already_tracked_email: bool = False
    is_folder_based_tracking_enabled: bool = True
    max_folder_based_tracking_mappings: int = attrs.field(
        default=25, validator=attrs.validators.ge(0)
    )
    default_email_settings: DefaultEmailSettings = attrs.Factory(DefaultEmailSettings)


@attrs.frozen(kw_only=True)
class ConflictPolicy:
    """Who wins when a two-way field changed on both sides since the last sync to different
    values. Dynamics documents no policy; serversync's default is that the side modified
    last wins and a tie goes to the CRM (``docs/decisions.md``). The most specific setting
    applies: ``fields`` (entity, field name), then ``entities``, then ``default``. One-way
    fields never conflict: they only flow their way."""

    default: ConflictWinner = ConflictWinner.LATEST
    entities: Mapping[ActEntity, ConflictWinner] = attrs.field(factory=dict)
    fields: Mapping[tuple[ActEntity, str], ConflictWinner] = attrs.field(factory=dict)

    def winner_for(self, entity: ActEntity, field: str) -> ConflictWinner:
        """The rule that decides a conflict on ``field`` of ``entity``."""
        rule = self.fields.get((entity, field))
        if rule is None:
            rule = self.entities.get(entity, self.default)
        return rule


def _valid_directions(
    instance: Any, attribute: Any, value: Mapping[ActEntity, Mapping[str, SyncDirection]]
) -> None:
    # Imported here: serversync.act imports this module.
    from serversync.act.fields import validate_directions

    validate_directions(value)


@attrs.frozen(kw_only=True)
class ActSettings:
    """Appointment, contact and task synchronization (Dynamics' System Settings →
    Synchronization and the OrgDB switches of the same names).

    - ``field_directions`` overrides the default direction of fields per entity
      (:data:`serversync.act.FIELDS`); a direction a field does not allow, such as a fixed
      two-way appointment field set to one-way, raises
      :class:`~serversync.errors.ConfigurationError` when the settings are made.
    - ``sync_all_contact_addresses``: all three contact addresses instead of the business
      (mailing) one (``iscontactmailingaddresssyncenabled`` off).
    - ``distinct_physical_and_logical_deletes``: a record that leaves the user's filters
      is unlinked rather than deleted from Exchange
      (``DistinctPhysicalAndLogicalDeletesForExchangeSync``).
    - ``propagate_appointment_cancellations``: a cancelled CRM appointment is deleted from
      the organizer's Exchange calendar, which sends cancellations
      (``SSSPropagateAppointmentCancellationsToExchange``).
    - ``mapping_retention``: how long a mapping whose first sync failed is kept
      (``ExchangeSyncIdMappingPersistenceTimeInDays``, 3 days).
    - ``max_item_attempts``: attempts per record or item before it waits for a new change
      (``MaximumSynchronizationAttemptsForACT``, unpublished; 5 as for quarantined mail).
    - ``page_size`` bounds each read from Exchange and the CRM, ``max_pages_per_cycle`` the
      reads of one entity in one cycle (the rest waits for the next cycle).
    - ``crm_cursor_overlap``: the CRM cursor stays this far behind the clock, so that a row
      committed late with an earlier ``modified_on`` is still read (records read twice
      are no-ops).
    """

    field_directions: Mapping[ActEntity, Mapping[str, SyncDirection]] = attrs.field(
        factory=dict, validator=_valid_directions
    )
    conflicts: ConflictPolicy = attrs.Factory(ConflictPolicy)
    sync_all_contact_addresses: bool = False
    distinct_physical_and_logical_deletes: bool = False
    propagate_appointment_cancellations: bool = False
    mapping_retention: timedelta = attrs.field(default=timedelta(days=3), validator=_positive)
    max_item_attempts: int = attrs.field(default=5, validator=_at_least_one)
    page_size: int = attrs.field(default=100, validator=_at_least_one)
    max_pages_per_cycle: int = attrs.field(default=20, validator=_at_least_one)
    crm_cursor_overlap: timedelta = attrs.field(
        default=timedelta(minutes=1), validator=attrs.validators.ge(timedelta(0))
    )


@attrs.frozen(kw_only=True)
class SyncSettings:
    """All engine settings in one value.

    ``message_id_domain`` is the right-hand side of the Message-IDs serversync generates for
    outgoing email; by default the sender address's domain.
    """

    timeouts: Timeouts = attrs.Factory(Timeouts)
    limits: Limits = attrs.Factory(Limits)
    retry: RetryPolicy = attrs.Factory(RetryPolicy)
    schedule: Schedule = attrs.Factory(Schedule)
    alerts: AlertSettings = attrs.Factory(AlertSettings)
    push: PushSettings = attrs.Factory(PushSettings)
    organization: OrganizationSettings = attrs.Factory(OrganizationSettings)
    message_id_domain: str | None = None
    act: ActSettings = attrs.Factory(ActSettings)
