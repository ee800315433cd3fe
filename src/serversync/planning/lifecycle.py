"""Mailbox lifecycle rules: the mailbox a new user or queue gets, and what a mailbox may look
like (one per user or queue, forward mailbox constraints). Pure functions."""

from __future__ import annotations

from collections.abc import Iterable

from serversync.errors import ConfigurationError, DuplicateMailboxError
from serversync.model import (
    ActDeliveryMethod,
    EntityName,
    IncomingDeliveryMethod,
    Mailbox,
    MailboxId,
    OutgoingDeliveryMethod,
    RecordRef,
)
from serversync.settings import DefaultEmailSettings

__all__ = ["check_mailbox", "mailbox_problems", "new_mailbox"]

_OWNERS = (EntityName.SYSTEMUSER.value, EntityName.QUEUE.value)


def new_mailbox(
    owner: RecordRef,
    email_address: str,
    *,
    defaults: DefaultEmailSettings,
    existing: Iterable[Mailbox] = (),
    mailbox_id: MailboxId | None = None,
    name: str | None = None,
) -> Mailbox:
    """The mailbox a new user or queue gets, as Dynamics creates it: the organisation's
    default delivery methods, linked to the default profile when any of them is server-side
    synchronization, the address not yet approved, every workload enabled and untested.

    ``mailbox_id`` defaults to ``"<entity>:<id>"`` of the owner. Raises
    :class:`~serversync.errors.DuplicateMailboxError` when a mailbox in ``existing`` already
    belongs to ``owner`` (or has the id), and
    :class:`~serversync.errors.ConfigurationError` when the owner is not a user or queue.
    """
    if owner.entity not in _OWNERS:
        raise ConfigurationError(
            f"a mailbox belongs to a user or a queue, not to a {owner.entity} ({owner})"
        )
    chosen = mailbox_id or MailboxId(str(owner))
    for other in existing:
        if other.owner == owner:
            raise DuplicateMailboxError(
                f"{owner} already has the mailbox {other.id}; a user or queue has one mailbox",
                existing=other.id,
                mailbox_id=chosen,
            )
        if other.id == chosen:
            raise DuplicateMailboxError(
                f"the mailbox id {chosen} is taken", existing=other.id, mailbox_id=chosen
            )
    uses_sync = (
        defaults.incoming_delivery_method is IncomingDeliveryMethod.SERVER_SIDE_SYNC
        or defaults.outgoing_delivery_method is OutgoingDeliveryMethod.SERVER_SIDE_SYNC
        or defaults.act_delivery_method is ActDeliveryMethod.SERVER_SIDE_SYNC
    )
    address = email_address.strip()
    mailbox = Mailbox(
        id=chosen,
        name=name or address,
        email_address=address,
        owner=owner,
        profile_id=defaults.profile_id if uses_sync else None,
        incoming_delivery_method=defaults.incoming_delivery_method,
        outgoing_delivery_method=defaults.outgoing_delivery_method,
        act_delivery_method=defaults.act_delivery_method,
    )
    check_mailbox(mailbox)
    return mailbox


def mailbox_problems(mailbox: Mailbox) -> tuple[str, ...]:
    """What makes ``mailbox`` invalid as Dynamics defines a mailbox; empty when it is valid.

    A forward mailbox has no owner, sends nothing (outgoing None), syncs no appointments,
    contacts or tasks, and is linked to a profile; a user or queue mailbox has its user or
    queue; only forward and queue mailboxes may delete emails after processing.
    """
    problems: list[str] = []
    if not mailbox.email_address.strip():
        problems.append("a mailbox needs an email address")
    if mailbox.is_forward_mailbox:
        if mailbox.owner is not None:
            problems.append("a forward mailbox belongs to no user or queue")
        if mailbox.outgoing_delivery_method is not OutgoingDeliveryMethod.NONE:
            problems.append("a forward mailbox sends nothing: its outgoing method must be None")
        if mailbox.act_delivery_method is ActDeliveryMethod.SERVER_SIDE_SYNC:
            problems.append("a forward mailbox does not synchronize appointments, contacts, tasks")
        if mailbox.profile_id is None:
            problems.append("a forward mailbox must be linked to an email server profile")
        if mailbox.incoming_delivery_method is not IncomingDeliveryMethod.SERVER_SIDE_SYNC:
            problems.append("a forward mailbox receives through server-side synchronization")
    else:
        if mailbox.owner is None:
            problems.append("a user or queue mailbox needs its user or queue")
        elif mailbox.owner.entity not in _OWNERS:
            problems.append(f"a mailbox belongs to a user or a queue, not to a {mailbox.owner}")
        if mailbox.process_and_delete_emails and (
            mailbox.owner is None or mailbox.owner.entity != EntityName.QUEUE
        ):
            problems.append("only forward and queue mailboxes may delete emails after processing")
    return tuple(problems)


def check_mailbox(mailbox: Mailbox) -> None:
    """Raise :class:`~serversync.errors.ConfigurationError` naming every problem
    :func:`mailbox_problems` finds in ``mailbox``."""
    problems = mailbox_problems(mailbox)
    if problems:
        raise ConfigurationError(
            f"mailbox {mailbox.id}: " + "; ".join(problems), mailbox_id=mailbox.id
        )
