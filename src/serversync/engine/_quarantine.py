"""The quarantine of poison messages, as the incoming pipeline and the engine's API use it.

A message that fails alone (its fetch, parse or store raised an error of scope ``item``) is
recorded here before the cursor moves past it, so it never blocks the mailbox and is never
lost: later cycles try it again by its remote reference, and once its attempts are used up it
is tagged Undeliverable on the server and kept, given up, until someone discards it.
"""

from __future__ import annotations

from datetime import UTC

import attrs

from serversync.errors import ErrorScope, SyncError
from serversync.model import (
    ItemOutcome,
    Mailbox,
    MailboxId,
    QuarantinedMessage,
    RemoteMark,
    RemoteMessageRef,
)
from serversync.planning import quarantine_after_failure
from serversync.ports import IncomingMailSession

from ._context import EngineContext, deadline, logger

__all__ = [
    "Quarantine",
    "discard_quarantined",
    "list_quarantine",
    "retry_quarantined",
]


class Quarantine:
    """The quarantine of one mailbox during one incoming cycle."""

    def __init__(self, ctx: EngineContext, mailbox: Mailbox) -> None:
        self._ctx = ctx
        self._mailbox = mailbox

    async def due(self) -> tuple[QuarantinedMessage, ...]:
        """The entries to try again now, at most one batch of them."""
        ctx = self._ctx
        due = await ctx.storage(
            ctx.repositories.due_quarantine(
                self._mailbox.id, now=ctx.clock.now(), limit=ctx.settings.limits.incoming_batch_size
            ),
            "loading the quarantined messages due",
        )
        return tuple(due)

    async def record(
        self, session: IncomingMailSession, ref: RemoteMessageRef, failed: ItemOutcome
    ) -> ItemOutcome:
        """Count the failed attempt ``failed`` of the message at ``ref``; tag the message
        Undeliverable when this attempt was its last. Returns the outcome with what happens
        next in its explanation."""
        ctx = self._ctx
        repos = ctx.repositories
        previous = await ctx.storage(
            repos.get_quarantined(failed.mailbox_id, ref.folder, ref.remote_id),
            "loading a quarantined message",
        )
        policy = ctx.settings.retry
        entry = quarantine_after_failure(
            previous, failed, received_at=ref.received_at, now=ctx.clock.now(), policy=policy
        )
        newly_given_up = entry.given_up and (previous is None or not previous.given_up)
        if newly_given_up:
            # Tagged before the entry says so: if tagging fails for the mailbox, the entry stays
            # due and the next cycle gives up on the message again.
            await self._tag_undeliverable(session, ref)
        await ctx.storage(repos.quarantine(entry), "quarantining a message")
        if entry.given_up:
            note = f"quarantined: given up after {entry.attempts} attempts, tagged Undeliverable"
            logger.warning(
                "mailbox %s: message %s in %s given up after %d attempts: %s",
                failed.mailbox_id,
                ref.remote_id,
                ref.folder,
                entry.attempts,
                failed.explanation,
            )
        else:
            assert entry.next_attempt_at is not None
            when = entry.next_attempt_at.astimezone(UTC).isoformat(timespec="seconds")
            note = (
                f"quarantined: attempt {entry.attempts} of {policy.quarantine_max_attempts}, "
                f"next at {when}"
            )
        return attrs.evolve(failed, explanation=_joined(failed.explanation, note))

    async def release(self, entry: QuarantinedMessage, why: str) -> None:
        """Forget ``entry``: its message succeeded or is gone."""
        ctx = self._ctx
        await ctx.storage(
            ctx.repositories.release_quarantine(entry.mailbox_id, entry.folder, entry.remote_id),
            "releasing a quarantined message",
        )
        logger.info(
            "mailbox %s: quarantined message %s in %s released: %s",
            entry.mailbox_id,
            entry.remote_id,
            entry.folder,
            why,
        )

    async def _tag_undeliverable(self, session: IncomingMailSession, ref: RemoteMessageRef) -> None:
        try:
            await deadline(
                self._ctx.settings.timeouts.command,
                session.mark([ref], RemoteMark.UNDELIVERABLE),
                "tagging a message Undeliverable",
            )
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                raise
            # The message alone refuses the tag (it vanished meanwhile, say): give up anyway.
            logger.warning(
                "mailbox %s: message %s in %s could not be tagged Undeliverable: %s",
                self._mailbox.id,
                ref.remote_id,
                ref.folder,
                exc,
            )


def _joined(explanation: str, note: str) -> str:
    return f"{explanation} ({note})" if explanation else note


async def list_quarantine(
    ctx: EngineContext, mailbox_id: MailboxId | None
) -> tuple[QuarantinedMessage, ...]:
    """Every quarantined message of one mailbox, or of all."""
    entries = await ctx.storage(
        ctx.repositories.list_quarantine(mailbox_id), "listing quarantined messages"
    )
    return tuple(entries)


async def _selected(
    ctx: EngineContext, mailbox_id: MailboxId | None, folder: str | None, remote_id: str | None
) -> list[QuarantinedMessage]:
    return [
        entry
        for entry in await list_quarantine(ctx, mailbox_id)
        if folder in (None, entry.folder) and remote_id in (None, entry.remote_id)
    ]


async def retry_quarantined(
    ctx: EngineContext, mailbox_id: MailboxId | None, folder: str | None, remote_id: str | None
) -> tuple[QuarantinedMessage, ...]:
    """Make the selected entries due now, given-up ones included; returns them as saved."""
    now = ctx.clock.now()
    retried = []
    for entry in await _selected(ctx, mailbox_id, folder, remote_id):
        due = attrs.evolve(entry, next_attempt_at=now, given_up_at=None)
        await ctx.storage(ctx.repositories.quarantine(due), "making a quarantined message due")
        retried.append(due)
    return tuple(retried)


async def discard_quarantined(
    ctx: EngineContext, mailbox_id: MailboxId | None, folder: str | None, remote_id: str | None
) -> tuple[QuarantinedMessage, ...]:
    """Release the selected entries without trying them again; returns those released."""
    discarded = []
    for entry in await _selected(ctx, mailbox_id, folder, remote_id):
        released = await ctx.storage(
            ctx.repositories.release_quarantine(entry.mailbox_id, entry.folder, entry.remote_id),
            "discarding a quarantined message",
        )
        if released:
            discarded.append(entry)
    return tuple(discarded)
