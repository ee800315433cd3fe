"""The outgoing pipeline of one mailbox: claim → compose → send → record the outcome.

A claim moves an email from Pending Send to Sending for one engine until it expires, so two
engines never send the same email. The Message-ID comes from the activity id, so a retry
reuses it and a reply correlates by In-Reply-To.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

import attrs

from serversync.errors import (
    ConfigurationError,
    DeliveryUncertainError,
    ErrorScope,
    PermanentError,
    SyncError,
)
from serversync.mime import compose, message_id_for
from serversync.model import (
    EmailActivity,
    EmailServerProfile,
    ErrorRecord,
    Mailbox,
    OutgoingAttachment,
    OutgoingMessage,
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
from serversync.ports import OutgoingMailSession, SentFolderSession, WorkloadRunRepository
from serversync.relevance.tokens import append_token, format_token, strip_tokens
from serversync.settings import ExpiredClaimPolicy

from ._context import EngineContext, deadline, logger
from ._optional import offered
from ._sessions import session_of

__all__ = ["OutgoingPipeline"]

# The engine's deadline on a send runs this much longer than Timeouts.send, so that the
# transport's own deadline, which knows whether the message was handed over, fires first.
_SEND_GRACE = timedelta(seconds=1)

_RECIPIENTS = (
    ParticipationType.TO_RECIPIENT,
    ParticipationType.CC_RECIPIENT,
    ParticipationType.BCC_RECIPIENT,
)


class OutgoingPipeline:
    """Runs the outgoing workload of one mailbox."""

    def __init__(self, ctx: EngineContext, mailbox: Mailbox, profile: EmailServerProfile) -> None:
        self._ctx = ctx
        self._mailbox = mailbox
        self._profile = profile
        self.results: list[SendResult] = []
        self._composed: OutgoingMessage | None = None
        self._sent_copies = _SentCopies(ctx, mailbox, profile)

    async def run(self) -> list[SendResult]:
        """Send due emails (see :meth:`_send_due`), then close the Sent folder session."""
        try:
            return await self._send_due()
        finally:
            await self._sent_copies.aclose()

    async def _send_due(self) -> list[SendResult]:
        """Settle expired claims, then claim and send due Pending Send emails one by one.

        Claiming one email at a time keeps at most one email in Sending per engine, so a
        crash leaves at most one email whose fate is uncertain.
        """
        ctx = self._ctx
        now = ctx.clock.now()
        repos = ctx.repositories
        # The lease guard forwards the store's methods: ``offered`` sees them on any Python.
        runs = offered(repos, WorkloadRunRepository)
        first: SendClaim | None = None
        if runs is not None:
            # One store call when, as nearly always, no claim has expired.
            expired, claimed = await ctx.storage(
                runs.claim_pending_send_unless_expired(
                    self._mailbox.id,
                    owner=ctx.engine_id,
                    now=now,
                    until=now + ctx.settings.retry.send_claim_duration,
                    limit=1,
                ),
                "claiming an email to send",
            )
            first = claimed[0] if claimed else None
        else:
            expired = await ctx.storage(
                repos.list_expired_claims(self._mailbox.id, now=now),
                "listing expired send claims",
            )
        for stale in expired:
            await self._settle_expired(stale)
        if runs is None or expired:
            first = await self._claim_next()
        if first is None:
            return self.results
        claim = first
        connected = False
        try:
            credentials = await ctx.credentials.resolve(
                self._mailbox, self._profile, Workload.OUTGOING
            )
            opener = ctx.transports.outgoing_for(self._profile).open(
                self._mailbox, self._profile, credentials
            )
            async with session_of(opener, ctx.settings.timeouts, "the outgoing server") as session:
                connected = True
                for _ in range(ctx.settings.limits.outgoing_batch_size):
                    await self._send_one(session, claim)
                    next_claim = await self._claim_next()
                    if next_claim is None:
                        break
                    claim = next_claim
        except Exception as exc:
            if not connected:
                # The email never reached the server: give it back without spending an attempt.
                await self._release(claim, ErrorRecord.from_exception(exc))
            raise
        return self.results

    async def _claim_next(self) -> SendClaim | None:
        ctx = self._ctx
        now = ctx.clock.now()
        claims = await ctx.storage(
            ctx.repositories.claim_pending_send(
                self._mailbox.id,
                owner=ctx.engine_id,
                now=now,
                until=now + ctx.settings.retry.send_claim_duration,
                limit=1,
            ),
            "claiming an email to send",
        )
        return claims[0] if claims else None

    async def _send_one(self, session: OutgoingMailSession, claim: SendClaim) -> None:
        try:
            claim = await self._prepare(claim)
        except SyncError as exc:
            if exc.scope is ErrorScope.ITEM:
                await self._record(claim, self._after_failure(claim, exc))
                return
            await self._release(claim, ErrorRecord.from_exception(exc))
            raise
        except Exception as exc:
            await self._release(claim, ErrorRecord.from_exception(exc))
            raise
        self._composed = None
        try:
            outcome = await self._attempt(session, claim)
        except SyncError as exc:
            outcome = self._after_failure(claim, exc)
            if exc.scope is not ErrorScope.ITEM:
                # The connection is gone: record this email's attempt, then fail the run.
                await self._record(claim, outcome)
                raise
        # Any other exception leaves the claim to expire: the server may have the email,
        # so the expired-claim policy decides, never a blind resend.
        await self._record(claim, outcome)
        folder = self._profile.sent_folder
        if folder is not None and isinstance(outcome, SendSucceeded) and self._composed:
            # Only after the outcome is recorded: a failed copy never makes a sent email
            # look unsent, and a crash before the copy loses a copy, not an email.
            error = await self._sent_copies.store(folder, self._composed)
            self.results[-1] = attrs.evolve(
                self.results[-1], copied_to_sent=error is None, sent_copy_error=error
            )

    async def _prepare(self, claim: SendClaim) -> SendClaim:
        """Fix the Message-ID, tracking token and subject before the first attempt, so that
        every retry sends exactly the same message."""
        ctx = self._ctx
        activity = claim.activity
        await self._check_sendable(activity)
        tokens = ctx.settings.organization.tracking_tokens
        if activity.message_id is not None:
            return claim  # prepared before an earlier attempt
        wants_token = tokens.enabled and activity.tracking_token is None
        message_id = message_id_for(
            activity,
            sender_address=self._mailbox.email_address,
            message_id_domain=ctx.settings.message_id_domain,
        )
        token, subject = activity.tracking_token, activity.subject
        user = activity.owner or self._mailbox.owner
        if wants_token and user is not None:
            numbers = await ctx.storage(
                ctx.repositories.allocate_tracking_numbers(user), "numbering a tracking token"
            )
            try:
                token = format_token(
                    tokens, user_number=numbers.user_number, counter=numbers.counter
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc), scope=ErrorScope.ITEM) from exc
            # A reply's subject may carry the earlier email's token: the new one replaces it.
            bare = strip_tokens(activity.subject, tokens)
            subject = append_token(bare, token, max_length=tokens.max_subject_length)
            if not subject.endswith(token):
                token = None  # the token alone is longer than the subject limit
        return await ctx.storage(
            ctx.repositories.prepare_send(
                claim, message_id=message_id, subject=subject, tracking_token=token
            ),
            "storing the Message-ID before sending",
        )

    async def _check_sendable(self, activity: EmailActivity) -> None:
        """Dynamics' checks before an email leaves: send-as permission and unresolved
        recipients. A failure fails this email only."""
        ctx = self._ctx
        sender, submitter = self._mailbox.owner, activity.submitted_by
        if (
            ctx.send_as is not None
            and sender is not None
            and submitter is not None
            and submitter != sender
            and not await ctx.send_as.may_send_as(submitter, sender)
        ):
            raise PermanentError(
                "You cannot send email as the selected user. The selected user has not allowed "
                "this or you do not have sufficient privileges.",
                scope=ErrorScope.ITEM,
            )
        if not ctx.settings.organization.allow_unresolved_parties_on_email_send:
            unresolved = [
                p.address
                for p in activity.parties
                if p.participation in _RECIPIENTS and p.record is None
            ]
            if unresolved:
                raise ConfigurationError(
                    f"unresolved recipients {', '.join(unresolved)}: the organisation does not "
                    "allow sending to addresses that are no CRM record",
                    scope=ErrorScope.ITEM,
                )

    async def _attempt(self, session: OutgoingMailSession, claim: SendClaim) -> SendOutcome:
        ctx = self._ctx
        files: Sequence[OutgoingAttachment] = ()
        if ctx.attachments is not None:
            files = await ctx.storage(
                ctx.attachments.attachments_for(claim.activity), "loading attachments"
            )
        org = ctx.settings.organization
        message = compose(
            claim.activity,
            sender_address=self._mailbox.email_address,
            now=ctx.clock.now(),
            message_id_domain=ctx.settings.message_id_domain,
            attachments=files,
            max_attachment_size=org.max_upload_file_size,
            blocked_extensions=org.blocked_attachment_extensions,
            max_message_size=ctx.settings.limits.max_message_size,
        )
        self._composed = message
        limit = ctx.settings.timeouts.send + _SEND_GRACE
        try:
            async with asyncio.timeout(limit.total_seconds()):
                receipt = await session.send(message)
        except TimeoutError as exc:
            if isinstance(exc, SyncError):
                raise
            # Cut off by the engine: how far the transport got is unknown.
            raise DeliveryUncertainError(
                f"sending {message.message_id} did not finish within "
                f"{limit.total_seconds():g} s; the server may have accepted it"
            ) from exc
        return SendSucceeded(
            message_id=receipt.message_id,
            sent_on=receipt.accepted_at,
            server_reply=receipt.server_reply,
        )

    def _after_failure(self, claim: SendClaim, exc: SyncError) -> SendOutcome:
        ctx = self._ctx
        error = ErrorRecord.from_exception(exc)
        if (
            isinstance(exc, DeliveryUncertainError)
            and ctx.settings.retry.expired_claim_policy is ExpiredClaimPolicy.MARK_UNCERTAIN
        ):
            # The server may have the email: the same doubt as an expired claim, the same
            # answer. Under RESEND the retry rules below apply.
            return SendUncertain(error=error)
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
        recipients = tuple(p.address for p in updated.parties if p.participation in _RECIPIENTS)
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

    async def _release(self, claim: SendClaim, error: ErrorRecord) -> None:
        ctx = self._ctx
        not_before = ctx.clock.now() + ctx.settings.retry.send_retry_interval
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
        if claim.activity.message_id is None:
            # Its Message-ID is stored before any attempt to send it: without one, the claim
            # expired before the email went anywhere. Back to Pending Send, no doubt to settle.
            released = ErrorRecord(
                error_type="ClaimExpired",
                message=(
                    f"the send claim of {claim.owner} expired before the email was handed to "
                    "a server; it is sent again"
                ),
                transient=True,
                scope=ErrorScope.ITEM.value,
            )
            await self._record(claim, SendReleased(not_before=ctx.clock.now(), error=released))
            return
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


class _SentCopies:
    """Stores copies of sent emails in the profile's ``sent_folder`` over one incoming
    session, opened at the first copy and kept for the rest of the batch.

    A copy that cannot be stored is reported on the email's :class:`SendResult` and logged;
    after a failure the rest of the batch goes without copies (reported the same way).
    """

    def __init__(self, ctx: EngineContext, mailbox: Mailbox, profile: EmailServerProfile) -> None:
        self._ctx = ctx
        self._mailbox = mailbox
        self._profile = profile
        self._stack = contextlib.AsyncExitStack()
        self._session: SentFolderSession | None = None
        self._broken: ErrorRecord | None = None

    async def store(self, folder: str, message: OutgoingMessage) -> ErrorRecord | None:
        """Store one copy in ``folder``; the error when it failed."""
        if self._broken is not None:
            return self._broken
        ctx = self._ctx
        try:
            session = self._session or await self._open()
            await deadline(
                ctx.settings.timeouts.command,
                session.append_sent(folder, message.data),
                f"storing a copy of {message.message_id} in {folder!r}",
            )
        except Exception as exc:  # a copy never fails the send that was recorded
            error = ErrorRecord.from_exception(exc)
            logger.warning(
                "mailbox %s: the copy of %s was not stored in %r: %s",
                self._mailbox.id,
                message.message_id,
                folder,
                error.message,
            )
            # The session may be unusable now: the rest of the batch goes without copies
            # rather than paying a timeout each.
            self._broken = error
            return error
        return None

    async def _open(self) -> SentFolderSession:
        ctx = self._ctx
        credentials = await ctx.credentials.resolve(self._mailbox, self._profile, Workload.INCOMING)
        opener = ctx.transports.incoming_for(self._profile).open(
            self._mailbox, self._profile, credentials
        )
        session = await self._stack.enter_async_context(
            session_of(opener, ctx.settings.timeouts, "the incoming server")
        )
        if not isinstance(session, SentFolderSession):
            raise ConfigurationError(
                f"the incoming transport of profile {self._profile.name!r} cannot store "
                "copies of sent mail; remove its sent_folder",
                mailbox_id=self._mailbox.id,
            )
        self._session = session
        return session

    async def aclose(self) -> None:
        """Close the session, if one was opened."""
        await self._stack.aclose()
