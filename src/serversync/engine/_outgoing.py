"""The outgoing pipeline of one mailbox: claim → compose → send → record the outcome.

A claim moves an email from Pending Send to Sending for one engine until it expires, so two
engines never send the same email. The Message-ID comes from the activity id, so a retry
reuses it and a reply correlates by In-Reply-To.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from serversync.errors import ErrorScope, SyncError
from serversync.mime import compose
from serversync.model import (
    EmailServerProfile,
    ErrorRecord,
    Mailbox,
    ParticipationType,
    SendClaim,
    SendFailed,
    SendOutcome,
    SendReleased,
    SendResult,
    SendRetry,
    SendSucceeded,
    SendUncertain,
    Workload,
)
from serversync.planning import next_send_attempt
from serversync.ports import OutgoingMailSession
from serversync.settings import ExpiredClaimPolicy

from ._context import EngineContext, deadline, logger

__all__ = ["OutgoingPipeline"]


class OutgoingPipeline:
    """Runs the outgoing workload of one mailbox."""

    def __init__(self, ctx: EngineContext, mailbox: Mailbox, profile: EmailServerProfile) -> None:
        self._ctx = ctx
        self._mailbox = mailbox
        self._profile = profile
        self.results: list[SendResult] = []

    async def run(self) -> list[SendResult]:
        """Settle expired claims, then claim and send due Pending Send emails."""
        ctx = self._ctx
        repos = ctx.repositories
        retry = ctx.settings.retry
        now = ctx.clock.now()
        expired = await ctx.storage(
            repos.list_expired_claims(self._mailbox.id, now=now), "listing expired send claims"
        )
        for claim in expired:
            await self._settle_expired(claim)

        claims = list(
            await ctx.storage(
                repos.claim_pending_send(
                    self._mailbox.id,
                    owner=ctx.engine_id,
                    now=now,
                    until=now + retry.send_claim_duration,
                    limit=ctx.settings.limits.outgoing_batch_size,
                ),
                "claiming emails to send",
            )
        )
        if not claims:
            return self.results
        try:
            await self._send_all(claims)
        except BaseException as exc:
            if isinstance(exc, Exception):
                # The mailbox failed before these emails reached the server: give them back
                # without spending an attempt. (A crash leaves them to expire instead.)
                await self._release(claims, ErrorRecord.from_exception(exc))
            raise
        return self.results

    async def _send_all(self, claims: list[SendClaim]) -> None:
        ctx = self._ctx
        credentials = await ctx.credentials.resolve(self._mailbox, self._profile, Workload.OUTGOING)
        transport = ctx.transports.outgoing_for(self._profile)
        async with AsyncExitStack() as stack:
            session = await deadline(
                ctx.settings.timeouts.connect,
                stack.enter_async_context(
                    transport.open(self._mailbox, self._profile, credentials)
                ),
                "connecting to the outgoing server",
            )
            while claims:
                claim = claims[0]
                try:
                    outcome = await self._attempt(session, claim)
                except SyncError as exc:
                    if exc.scope is ErrorScope.ITEM:
                        outcome = self._after_failure(claim, exc)
                    else:
                        # The connection is gone: this email was tried, the rest were not.
                        claims.pop(0)
                        await self._record(claim, self._after_failure(claim, exc))
                        raise
                except Exception:
                    # Unknown failure mid-send: the server may have the email. Leave the claim
                    # to expire so the expired-claim policy decides, never a blind resend.
                    claims.pop(0)
                    raise
                claims.pop(0)
                await self._record(claim, outcome)

    async def _attempt(self, session: OutgoingMailSession, claim: SendClaim) -> SendOutcome:
        ctx = self._ctx
        message = compose(
            claim.activity,
            sender_address=self._mailbox.email_address,
            now=ctx.clock.now(),
            message_id_domain=ctx.settings.message_id_domain,
        )
        receipt = await deadline(ctx.settings.timeouts.send, session.send(message), "sending")
        return SendSucceeded(
            message_id=receipt.message_id,
            sent_on=receipt.accepted_at,
            server_reply=receipt.server_reply,
        )

    def _after_failure(self, claim: SendClaim, exc: SyncError) -> SendOutcome:
        ctx = self._ctx
        error = ErrorRecord.from_exception(exc)
        retry_at = next_send_attempt(
            error,
            attempts_made=claim.activity.delivery_attempts + 1,
            now=ctx.clock.now(),
            policy=ctx.settings.retry,
        )
        if retry_at is None:
            return SendFailed(error=error)
        return SendRetry(not_before=retry_at, error=error)

    async def _record(self, claim: SendClaim, outcome: SendOutcome) -> None:
        ctx = self._ctx
        updated = await ctx.storage(
            ctx.repositories.record_send_outcome(claim, outcome), "recording a send outcome"
        )
        recipients = tuple(
            p.address
            for p in updated.parties
            if p.participation
            in (
                ParticipationType.TO_RECIPIENT,
                ParticipationType.CC_RECIPIENT,
                ParticipationType.BCC_RECIPIENT,
            )
        )
        result = SendResult(
            activity_id=updated.id,
            status=updated.status,
            message_id=updated.message_id,
            subject=updated.subject,
            recipients=recipients,
            attempt=updated.delivery_attempts,
            next_attempt_at=updated.postpone_sending_until,
            server_reply=updated.server_reply,
            error=getattr(outcome, "error", None),
        )
        self.results.append(result)
        ctx.observer.email_sent(result)

    async def _release(self, claims: list[SendClaim], error: ErrorRecord) -> None:
        ctx = self._ctx
        not_before = ctx.clock.now() + ctx.settings.retry.send_retry_interval
        for claim in claims:
            try:
                await ctx.storage(
                    ctx.repositories.record_send_outcome(
                        claim, SendReleased(not_before=not_before, error=error)
                    ),
                    "releasing a send claim",
                )
            except SyncError as exc:
                # The claim will expire on its own; the expired-claim policy then applies.
                logger.warning("could not release the send claim of %s: %s", claim.activity.id, exc)

    async def _settle_expired(self, claim: SendClaim) -> None:
        ctx = self._ctx
        error = ErrorRecord(
            error_type="ClaimExpired",
            message=(
                f"the send claim of {claim.owner} expired while Sending; the server may or may "
                "not have accepted the email"
            ),
            transient=False,
            scope=ErrorScope.ITEM.value,
        )
        outcome: SendOutcome
        if ctx.settings.retry.expired_claim_policy is ExpiredClaimPolicy.RESEND:
            outcome = SendRetry(not_before=ctx.clock.now(), error=error)
        else:
            outcome = SendUncertain(error=error)
        await self._record(claim, outcome)
