"""How a recorded send outcome changes an email: one definition for every store."""

from __future__ import annotations

import attrs

from serversync.model import (
    EmailActivity,
    EmailStatus,
    SendFailed,
    SendOutcome,
    SendReleased,
    SendRetry,
    SendSucceeded,
    SendUncertain,
)

__all__ = ["apply_send_outcome"]


def apply_send_outcome(activity: EmailActivity, outcome: SendOutcome) -> EmailActivity:
    """The email after ``outcome`` was recorded: its status, attempts, retry time and error.

    :meth:`~serversync.ports.EmailActivityRepository.record_send_outcome` leaves this change
    to the store; a host's store calls this so that it changes emails exactly as the shipped
    stores do. Every outcome but :class:`~serversync.model.SendReleased` (given back unsent)
    counts one delivery attempt.
    """
    attempts = activity.delivery_attempts + 1
    if isinstance(outcome, SendSucceeded):
        return attrs.evolve(
            activity,
            status=EmailStatus.SENT,
            message_id=outcome.message_id,
            sent_on=outcome.sent_on,
            server_reply=outcome.server_reply,
            delivery_attempts=attempts,
            postpone_sending_until=None,
            last_send_error=None,
        )
    if isinstance(outcome, SendRetry):
        return attrs.evolve(
            activity,
            status=EmailStatus.PENDING_SEND,
            delivery_attempts=attempts,
            postpone_sending_until=outcome.not_before,
            last_send_error=outcome.error,
        )
    if isinstance(outcome, SendFailed):
        return attrs.evolve(
            activity,
            status=EmailStatus.FAILED,
            delivery_attempts=attempts,
            postpone_sending_until=None,
            last_send_error=outcome.error,
        )
    if isinstance(outcome, SendUncertain):
        return attrs.evolve(
            activity,
            status=EmailStatus.FAILED,
            delivery_attempts=attempts,
            postpone_sending_until=None,
            delivery_uncertain=True,
            last_send_error=outcome.error,
        )
    if isinstance(outcome, SendReleased):
        return attrs.evolve(
            activity,
            status=EmailStatus.PENDING_SEND,
            postpone_sending_until=outcome.not_before,
            last_send_error=outcome.error,
        )
    raise TypeError(f"unknown send outcome {outcome!r}")
