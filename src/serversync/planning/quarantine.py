"""Poison-message quarantine: when a message that failed alone is tried again, and when the
engine gives up on it.

Dynamics retries a message it could not track on later cycles, about 15 minutes apart, up to
5 times, then tags it Undeliverable. Here every failed attempt counts, the first included,
so with the defaults a message is tried 5 times in about an hour before it is given up.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model import ErrorRecord, ItemOutcome, QuarantinedMessage
from serversync.settings import RetryPolicy

__all__ = ["quarantine_after_failure"]

# Failures that the same message meets again on every try: given up at the first.
_NOT_RETRIED = frozenset({"MessageTooLargeError"})


def quarantine_after_failure(
    previous: QuarantinedMessage | None,
    failed: ItemOutcome,
    *,
    received_at: datetime | None,
    now: datetime,
    policy: RetryPolicy,
) -> QuarantinedMessage:
    """The quarantine entry after the failed attempt ``failed`` (an outcome with an error).

    A first failure starts a new entry; a later one counts one more attempt and keeps what
    was known of the message (its Message-ID, subject and sender may have been read on an
    earlier attempt only). Once ``policy.quarantine_max_attempts`` attempts failed, the entry
    is given up at ``now`` (or stays given up since it was) and has no next attempt. A
    message too large for ``Limits.max_message_size`` is given up at its first failure: its
    size does not change (an operator who raises the limit can retry it).
    """
    error = failed.error or ErrorRecord(
        error_type="UnknownError", message=failed.explanation, transient=True, scope="item"
    )
    attempts = previous.attempts + 1 if previous is not None else 1
    give_up = attempts >= policy.quarantine_max_attempts or error.error_type in _NOT_RETRIED
    given_up_at: datetime | None = None
    if give_up:
        given_up_at = previous.given_up_at if previous is not None else None
        given_up_at = given_up_at or now
    entry = QuarantinedMessage(
        mailbox_id=failed.mailbox_id,
        folder=failed.folder,
        remote_id=failed.remote_id,
        received_at=received_at,
        message_id=failed.message_id,
        subject=failed.subject,
        sender=failed.sender,
        explanation=failed.explanation,
        error=error,
        attempts=attempts,
        first_failed_at=now,
        last_failed_at=now,
        next_attempt_at=None if give_up else now + policy.quarantine_retry_interval,
        given_up_at=given_up_at,
    )
    if previous is None:
        return entry
    return attrs.evolve(
        entry,
        received_at=received_at or previous.received_at,
        message_id=failed.message_id or previous.message_id,
        subject=failed.subject if failed.subject is not None else previous.subject,
        sender=failed.sender or previous.sender,
        first_failed_at=previous.first_failed_at,
    )
