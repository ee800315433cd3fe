"""The incoming pipeline of one mailbox: list → headers → decide → fetch → store → advance.

Messages are stored before the cursor moves past them, so a crash or cancellation at any
await re-lists them next time, and ``add_incoming``'s dedupe key keeps them single. A message
that fails alone (an error of scope ``item`` while fetching, parsing or storing it) is
quarantined before the cursor moves past it, and tried again first thing in later cycles.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from serversync.errors import (
    ConfigurationError,
    ErrorScope,
    MalformedMessageError,
    MessageTooLargeError,
    SyncError,
)
from serversync.mime import ensure_message_id, forwarded_message, parse_headers, parse_message
from serversync.model import (
    INBOX,
    SENT,
    ActivityId,
    AddResult,
    AlreadyExists,
    Checkpoint,
    CrmRecord,
    DecisionReason,
    EmailActivity,
    EmailDirection,
    EmailServerProfile,
    EntityName,
    ErrorRecord,
    IncomingDeliveryMethod,
    IncomingRunStart,
    ItemOutcome,
    Mailbox,
    MailboxTrackingFolder,
    MessageId,
    NewIncomingEmail,
    OutcomeKind,
    ParsedHeaders,
    ParsedMessage,
    QuarantinedMessage,
    RawHeaders,
    RawMessage,
    RemoteMark,
    RemoteMessageRef,
    Workload,
)
from serversync.model.mailboxes import process_email_from
from serversync.model.messages import normalize_address
from serversync.ports import (
    IncomingMailSession,
    IncomingRunRepository,
    RecordCreator,
)
from serversync.ports.relevance import Reject, RelevanceFacts, Track
from serversync.relevance import Decision, decide, tracked_folders
from serversync.relevance.auto_create import sender_record_to_create
from serversync.relevance.conversation import base_conversation_index_hash
from serversync.relevance.correlation import correlation_query

from ._activities import build_incoming_activity, queues_for
from ._bulk import add_all, fetch_all
from ._context import EngineContext, deadline, logger
from ._leases import check_lease
from ._ledger import Ledger
from ._optional import offered
from ._quarantine import Quarantine
from ._read_ahead import ReadAhead, addresses_of
from ._sessions import session_of

__all__ = ["IncomingPipeline", "Judgement"]


def _replaced(raw: RawHeaders, entry: QuarantinedMessage) -> str | None:
    """Why the message at a quarantined reference is not the one quarantined, if another
    message is there now (its folder was renumbered meanwhile)."""
    if entry.message_id is None:
        return None
    try:
        _, message_id = ensure_message_id(parse_headers(raw.data))
    except MalformedMessageError:
        return None  # unreadable again: the attempt fails and is counted
    if message_id != entry.message_id:
        return f"the reference now names another message ({message_id})"
    return None


def _received_on(
    listed: RemoteMessageRef,
    fetched: RemoteMessageRef,
    headers: ParsedHeaders,
    now: Callable[[], datetime],
) -> datetime:
    """When the server received a message: the arrival time the whole message came with
    (an IMAP listing leaves it out unless Process Email From needs it), else the listed
    one, else the Date header, else now."""
    return fetched.received_at or listed.received_at or headers.date or now()


def _common(headers: ParsedHeaders, message_id: MessageId) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "subject": headers.subject,
        "sender": headers.sender.address if headers.sender else None,
    }


@attrs.frozen(kw_only=True)
class FolderPlan:
    """One folder to read in a cycle: its id, its tracking rule, and the direction of the
    mail in it (Outgoing for sent items)."""

    folder: str
    rule: MailboxTrackingFolder | None = None
    direction: EmailDirection = EmailDirection.INCOMING


@attrs.frozen(kw_only=True)
class Judgement:
    """A message's outcome before anything is stored, with what led to it."""

    outcome: ItemOutcome
    decision: Decision | None = None
    facts: RelevanceFacts | None = None


_PRINCIPALS = frozenset({EntityName.SYSTEMUSER.value, EntityName.QUEUE.value})

# A group of messages to track is fetched and stored once it holds this many messages or
# announced bytes (bodies are held until stored).
_GROUP_MESSAGES = 100
_GROUP_BYTES = 32 * 1024 * 1024

_Key = tuple[str, object]
"""What storing an email changes, or judging a message reads: ("message-id", id),
("conversation", hash), ("token", token), ("address", address), ("sender", address)."""


@attrs.frozen(kw_only=True)
class _ToStore:
    """A message judged to be tracked, waiting for its body and its storing."""

    ref: RemoteMessageRef
    headers: ParsedHeaders
    message_id: MessageId
    judged: Judgement


class IncomingPipeline:
    """Runs the incoming workload of one mailbox through an open session."""

    def __init__(
        self,
        ctx: EngineContext,
        mailbox: Mailbox,
        profile: EmailServerProfile | None,
        owner_record: CrmRecord | None,
    ) -> None:
        self._ctx = ctx
        self._mailbox = mailbox
        self._profile = profile
        self._owner_record = owner_record
        self._cutoff = process_email_from(mailbox, profile)
        self._quarantine = Quarantine(ctx, mailbox)
        # (folder, remote id) of the quarantined messages tried again in this cycle.
        self._retried: set[tuple[str, str]] = set()
        # The lookups of the header batch in hand, asked once for the batch.
        self._ahead: ReadAhead | None = None
        # What the store read at the start of the run, when it reads it in one call; the
        # folders whose cursor was taken from it (a folder read again loads its cursor).
        self._start: IncomingRunStart | None = None
        self._started_folders: set[str] = set()
        self.outcomes: list[ItemOutcome] = []

    async def run(self) -> list[ItemOutcome]:
        """Process every folder the mailbox tracks; raise on a mailbox-level failure."""
        ctx = self._ctx
        profile = self._profile
        if profile is None:
            raise ConfigurationError("the mailbox has no email server profile")
        credentials = await ctx.credentials.resolve(self._mailbox, profile, Workload.INCOMING)
        transport = ctx.transports.incoming_for(profile)
        opener = transport.open(self._mailbox, profile, credentials)
        async with session_of(opener, ctx.settings.timeouts, "the incoming server") as session:
            runs = offered(ctx.repositories, IncomingRunRepository)
            if runs is not None:
                self._start = await ctx.storage(
                    runs.load_incoming_run(
                        self._mailbox.id,
                        now=ctx.clock.now(),
                        quarantine_limit=ctx.settings.limits.incoming_batch_size,
                    ),
                    "loading folder rules, quarantined messages and checkpoints",
                )
            plans = await self._folders(session)
            await self._retry_quarantined(session, plans)
            for plan in plans:
                rule = plan.rule
                if rule is not None and rule.regarding is not None:
                    # The rule's Regarding wins over manual changes, on every cycle.
                    await ctx.storage(
                        ctx.repositories.enforce_tracking_folder_regarding(rule),
                        "re-applying a folder rule's Regarding",
                    )
                await self._sync_folder(session, plan)
        return self.outcomes

    async def _folders(self, session: IncomingMailSession) -> list[FolderPlan]:
        """The Inbox, every folder a folder-level tracking rule applies to, and the sent
        items when the organisation tracks them."""
        ctx = self._ctx
        org = ctx.settings.organization
        result = [FolderPlan(folder=INBOX)]
        if self._start is not None:
            rules: Sequence[MailboxTrackingFolder] = self._start.tracking_folders
        else:
            rules = await ctx.storage(
                ctx.repositories.list_tracking_folders(self._mailbox.id), "loading folder rules"
            )
        if not rules and not org.auto_track_sent_folder_items:
            return result
        remote = await deadline(
            ctx.settings.timeouts.command, session.list_folders(), "listing folders"
        )
        applied = tracked_folders(
            rules, remote, mailbox=self._mailbox, profile=self._profile, org=org
        )
        result += [FolderPlan(folder=folder.id, rule=rule) for rule, folder in applied]
        if org.auto_track_sent_folder_items:
            result += [
                FolderPlan(folder=f.id, direction=EmailDirection.OUTGOING)
                for f in remote
                if f.special_use == SENT
            ][:1]
        return result

    async def _sync_folder(self, session: IncomingMailSession, plan: FolderPlan) -> None:
        folder = plan.folder
        ctx = self._ctx
        limits = ctx.settings.limits
        mailbox_id = self._mailbox.id
        checkpoint: Checkpoint | None
        if self._start is not None and folder not in self._started_folders:
            checkpoint = self._start.checkpoints.get(folder)
        else:
            checkpoint = await ctx.storage(
                ctx.repositories.load_checkpoint(mailbox_id, folder), "loading the checkpoint"
            )
        self._started_folders.add(folder)
        for _ in range(limits.max_batches_per_run):
            batch = await deadline(
                ctx.settings.timeouts.command,
                session.list_new(folder, checkpoint, limit=limits.incoming_batch_size),
                "listing new messages",
            )
            if batch.reset:
                logger.info(
                    "mailbox %s folder %s: the server reset the cursor; re-listing (dedupe "
                    "keeps it free of duplicates)",
                    mailbox_id,
                    folder,
                )
            progress: Checkpoint | None = checkpoint
            try:
                if batch.refs:
                    headers = await deadline(
                        ctx.settings.timeouts.fetch,
                        session.fetch_headers(batch.refs),
                        "fetching message headers",
                    )
                    if len(headers) != len(batch.refs):
                        raise MalformedMessageError(
                            "the server returned headers for a different number of messages",
                            reason="header count mismatch",
                        )
                    self._ahead = await ReadAhead.load(ctx, headers)
                    ledger = Ledger(batch.checkpoints, checkpoint, self._report)
                    try:
                        await self._run_batch(session, plan, headers, ledger)
                    finally:
                        progress = ledger.progress
                    self._ahead = None
                if batch.end is not None:
                    progress = batch.end
            except Exception:
                self._ahead = None
                # Keep what was stored; the failing message and the rest are listed again.
                await self._save(folder, checkpoint, progress)
                raise
            await self._save(folder, checkpoint, progress)
            checkpoint = progress
            if not batch.more:
                return

    async def _save(self, folder: str, before: Checkpoint | None, after: Checkpoint | None) -> None:
        if after is None or after == before:
            return
        ctx = self._ctx
        await ctx.storage(
            ctx.repositories.save_checkpoint(self._mailbox.id, folder, after),
            "saving the checkpoint",
        )

    def _report(self, outcome: ItemOutcome) -> None:
        self.outcomes.append(outcome)
        self._ctx.observer.item_processed(outcome)

    async def _run_batch(
        self,
        session: IncomingMailSession,
        plan: FolderPlan,
        headers: Sequence[RawHeaders],
        ledger: Ledger,
    ) -> None:
        """Judge a header batch in order, and fetch and store the messages to track in
        groups: a group is done before judging a message its emails could change the
        judgement of (see :meth:`_depends_on`), when it is full, and at the batch's end."""
        group: list[tuple[int, _ToStore]] = []
        keys: set[_Key] = set()
        size = 0

        async def finish_group(upto: int) -> None:
            nonlocal size
            finished, error = await self._finish(session, [item for _, item in group])
            for (index, item), outcome in zip(group, finished, strict=False):
                ledger.decide(index, await self._quarantined(session, item.ref, outcome))
            if error is not None:
                ledger.settle(group[len(finished)][0])
                raise error
            group.clear()
            keys.clear()
            size = 0
            ledger.settle(upto)

        for index, raw in enumerate(headers):
            if (raw.ref.folder, raw.ref.remote_id) in self._retried:
                if not group:
                    ledger.settle(index + 1)
                continue
            if group and self._depends_on(raw, keys):
                await finish_group(index)
            result = await self._judged(session, raw, plan)
            if isinstance(result, _ToStore):
                group.append((index, result))
                keys |= self._changes(result)
                size += raw.ref.size or 0
                if len(group) >= _GROUP_MESSAGES or size >= _GROUP_BYTES:
                    await finish_group(index + 1)
                continue
            ledger.decide(index, result)
            if not group:
                ledger.settle(index + 1)
        if group:
            await finish_group(len(headers))
        ledger.settle(len(headers))

    def _depends_on(self, raw: RawHeaders, keys: set[_Key]) -> bool:
        """Whether storing emails with ``keys`` (see :meth:`_changes`) could change what
        judging ``raw`` finds in the store: its Message-ID, the emails it answers or shares
        a conversation index or token with, its addresses' records, its sender's count."""
        parsed = self._ahead.headers(raw) if self._ahead is not None else None
        if parsed is None:
            return True  # judged without the batch's lookups: finish the group first
        headers, message_id = parsed
        org = self._ctx.settings.organization
        wanted: set[_Key] = {("message-id", message_id)}
        wanted |= {("message-id", m) for m in headers.thread_ids}
        query = correlation_query(headers, org, now=None)
        if query.conversation_index_hash is not None:
            wanted.add(("conversation", query.conversation_index_hash))
        wanted |= {("token", t) for t in query.tracking_tokens}
        wanted |= {("address", a) for a in addresses_of(headers)}
        if org.loop_guard.enabled and headers.sender is not None:
            wanted.add(("sender", normalize_address(headers.sender.address)))
        return not wanted.isdisjoint(keys)

    def _changes(self, item: _ToStore) -> set[_Key]:
        """What storing ``item``'s email changes for the judgement of later messages."""
        headers = item.headers
        org = self._ctx.settings.organization
        keys: set[_Key] = {("message-id", item.message_id)}
        index = base_conversation_index_hash(headers.conversation_index)
        if index is not None:
            keys.add(("conversation", index))
        sender = headers.sender.address if headers.sender is not None else None
        if org.smart_matching.enabled:
            # Smart matching looks for recent emails with any of the same participants.
            keys |= {("address", a) for a in addresses_of(headers)}
        elif sender is not None and self._creates_sender_record(item):
            # Storing it creates a contact or lead for its sender.
            keys.add(("address", normalize_address(sender)))
        if org.loop_guard.enabled and sender is not None:
            keys.add(("sender", normalize_address(sender)))
        return keys

    def _creates_sender_record(self, item: _ToStore) -> bool:
        """Whether storing ``item`` will create a record for its sender (see
        :meth:`_with_sender_record`)."""
        verdict = item.judged.decision.verdict if item.judged.decision else None
        facts = item.judged.facts
        if not isinstance(self._ctx.directory, RecordCreator):
            return False
        if not isinstance(verdict, Track) or facts is None:
            return False
        request = sender_record_to_create(item.headers, verdict, facts, message_id=item.message_id)
        return request is not None

    async def _judged(
        self, session: IncomingMailSession, raw: RawHeaders, plan: FolderPlan
    ) -> ItemOutcome | _ToStore:
        """Judge one message: its outcome (a failure of the message alone quarantined), or
        what storing it needs."""
        ref = raw.ref
        result: ItemOutcome | _ToStore
        try:
            if self._mailbox.is_forward_mailbox:
                result = await self._process_forwarded(session, raw)
            else:
                result = await self._process(session, raw, plan)
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                raise
            # Past the steps that report their own failure (tagging it, linking it): the
            # message alone failed, and a later attempt finds it stored and finishes the job.
            result = self._failed(ref, f"cannot process the message: {exc}", exc)
        if isinstance(result, _ToStore):
            return result
        return await self._quarantined(session, ref, result)

    async def _quarantined(
        self, session: IncomingMailSession, ref: RemoteMessageRef, outcome: ItemOutcome
    ) -> ItemOutcome:
        """A failed outcome once its failure is counted in the quarantine."""
        if outcome.kind is OutcomeKind.FAILED:
            return await self._quarantine.record(session, ref, outcome)
        return outcome

    async def _handle(
        self, session: IncomingMailSession, raw: RawHeaders, plan: FolderPlan
    ) -> ItemOutcome:
        """Process one message whole; a failure of the message alone is quarantined (before
        the caller moves the cursor past it) and reported as ``FAILED``."""
        result = await self._judged(session, raw, plan)
        if not isinstance(result, _ToStore):
            return result
        finished, error = await self._finish(session, [result])
        if error is not None:
            raise error
        (outcome,) = finished
        return await self._quarantined(session, raw.ref, outcome)

    async def _retry_quarantined(
        self, session: IncomingMailSession, plans: Sequence[FolderPlan]
    ) -> None:
        """Try the mailbox's due quarantined messages again, by their remote references."""
        if self._start is not None:
            due: Sequence[QuarantinedMessage] = self._start.due_quarantine
        else:
            due = await self._quarantine.due()
        by_folder = {plan.folder: plan for plan in plans}
        for entry in due:
            plan = by_folder.get(entry.folder) or FolderPlan(folder=entry.folder)
            self._report(await self._retry(session, entry, plan))

    async def _retry(
        self, session: IncomingMailSession, entry: QuarantinedMessage, plan: FolderPlan
    ) -> ItemOutcome:
        ref = entry.ref
        attempt = entry.attempts + 1
        raw = await self._refetch_headers(session, ref)
        if raw is None:
            return await self._release_gone(entry, "no longer on the server")
        replaced = _replaced(raw, entry)
        if replaced is not None:
            return await self._release_gone(entry, replaced)
        # The message now at the reference is processed here; if the listing returns it too
        # (its cursor was not saved), it is not processed twice.
        self._retried.add((ref.folder, ref.remote_id))
        outcome = await self._handle(session, raw, plan)
        if outcome.kind is OutcomeKind.FAILED:
            return outcome
        await self._quarantine.release(entry, f"{outcome.kind.value} on attempt {attempt}")
        note = f"from the quarantine, attempt {attempt}"
        explanation = f"{outcome.explanation} ({note})" if outcome.explanation else note
        return attrs.evolve(outcome, explanation=explanation)

    async def _release_gone(self, entry: QuarantinedMessage, why: str) -> ItemOutcome:
        await self._quarantine.release(entry, why)
        return self._outcome(
            entry.ref,
            OutcomeKind.SKIPPED,
            explanation=f"quarantined message released: {why}",
            message_id=entry.message_id,
            subject=entry.subject,
            sender=entry.sender,
        )

    async def _refetch_headers(
        self, session: IncomingMailSession, ref: RemoteMessageRef
    ) -> RawHeaders | None:
        """The header block at ``ref``, or ``None`` when the message is gone.

        Adapters answer a vanished message with an empty block or an error of the message
        alone; an empty block is confirmed by fetching the whole message, since a message
        without any header looks the same.
        """
        timeouts = self._ctx.settings.timeouts
        try:
            headers = await deadline(
                timeouts.fetch,
                session.fetch_headers([ref]),
                "fetching a quarantined message's headers",
            )
            if len(headers) == 1 and headers[0].data:
                return headers[0]
            whole = await deadline(
                timeouts.fetch, session.fetch_message(ref), "fetching a quarantined message"
            )
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                raise
            return None
        return RawHeaders(ref=ref, data=whole.data) if whole.data else None

    def _outcome(self, ref: RemoteMessageRef, kind: OutcomeKind, **fields: Any) -> ItemOutcome:
        base = ItemOutcome(
            mailbox_id=self._mailbox.id, folder=ref.folder, remote_id=ref.remote_id, kind=kind
        )
        return attrs.evolve(base, **fields)

    async def _process(
        self, session: IncomingMailSession, raw: RawHeaders, plan: FolderPlan
    ) -> ItemOutcome | _ToStore:
        """Judge one message: its outcome, or, for one to track, what storing it needs."""
        rule = plan.rule
        ref = raw.ref
        skipped = self._before_cutoff(ref)
        if skipped is not None:
            return skipped
        parsed_ahead = self._ahead.headers(raw) if self._ahead is not None else None
        if parsed_ahead is not None:
            headers, message_id = parsed_ahead
        else:
            try:
                headers = parse_headers(raw.data)
            except MalformedMessageError as exc:
                return self._failed(ref, f"unreadable headers: {exc.reason}", exc)
            headers, message_id = ensure_message_id(headers)
        common = _common(headers, message_id)
        ctx = self._ctx
        repos = ctx.repositories

        judged = await self.judge(headers, message_id, ref, plan)
        if judged.outcome.kind is OutcomeKind.DUPLICATE:
            await self._queue_already_tracked(judged.outcome)
            if rule is not None and rule.regarding is not None and judged.outcome.activity_id:
                # Moved into a tracked folder: the email follows the folder's record.
                await ctx.storage(
                    repos.link_to_tracking_folder(judged.outcome.activity_id, rule),
                    "linking an email to a folder rule",
                )
            await self._mark(session, ref, RemoteMark.TRACKED)
            return judged.outcome
        verdict = judged.decision.verdict if judged.decision else None
        facts = judged.facts
        if isinstance(verdict, Reject) and verdict.reason is DecisionReason.INVALID_SENDER:
            # Dynamics retries such a message for 5 cycles, then tags it Undeliverable; its
            # From will not parse on a later cycle either, so it is tagged at once.
            await self._mark(session, ref, RemoteMark.UNDELIVERABLE)
            return judged.outcome
        if not isinstance(verdict, Track) or facts is None:
            return judged.outcome
        trace = judged.outcome.trace

        # A size the server announced spares the download; a size it did not is checked after.
        too_large = self._too_large(ref.size)
        if too_large is not None:
            return self._failed(ref, too_large.message, too_large, trace=trace, **common)
        return _ToStore(ref=ref, headers=headers, message_id=message_id, judged=judged)

    async def _process_forwarded(
        self, session: IncomingMailSession, raw: RawHeaders
    ) -> ItemOutcome:
        """A forward mailbox's message: the original attached to it is evaluated as incoming
        mail of the user or queue who forwarded it, if that user or queue receives its mail
        through a forward mailbox (incoming delivery method 3)."""
        ref = raw.ref
        skipped = self._before_cutoff(ref)
        if skipped is not None:
            return skipped
        ctx = self._ctx
        try:
            wrapper = parse_headers(raw.data)
            too_large = self._too_large(ref.size)
            if too_large is not None:
                raise too_large
            data = await deadline(
                ctx.settings.timeouts.fetch, session.fetch_message(ref), "fetching a message"
            )
            too_large = self._too_large(len(data.data))
            if too_large is not None:
                raise too_large
            original = forwarded_message(data.data)
            headers = parse_headers(original)
            parsed = parse_message(original)
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                raise
            return self._failed(ref, f"cannot read the forwarded message: {exc}", exc)
        headers, message_id = ensure_message_id(headers)
        forwarder = wrapper.sender.address if wrapper.sender else "nobody"
        target = await self._forwarding_mailbox(forwarder)
        if target is None:
            return self._outcome(
                ref,
                OutcomeKind.NOT_RELEVANT,
                reason=DecisionReason.NO_RECIPIENT_MATCH,
                rule="forward-mailbox",
                explanation=(
                    f"forwarded by {forwarder}, who is no user or queue receiving mail "
                    "through a forward mailbox"
                ),
                **_common(headers, message_id),
            )
        mailbox, owner = target
        pipeline = IncomingPipeline(ctx, mailbox, self._profile, owner)
        judged = await pipeline.judge(headers, message_id, ref)
        kind = judged.outcome.kind
        if kind is OutcomeKind.TRACKED:
            received_on = _received_on(ref, data.ref, headers, ctx.clock.now)
            outcome = await pipeline._store(session, ref, judged, parsed, received_on)
        else:
            outcome = judged.outcome
            if kind is OutcomeKind.DUPLICATE:
                await self._mark(session, ref, RemoteMark.TRACKED)
        return attrs.evolve(
            outcome,
            mailbox_id=self._mailbox.id,
            explanation=f"forwarded by {forwarder}: {outcome.explanation}",
        )

    async def _forwarding_mailbox(self, address: str) -> tuple[Mailbox, CrmRecord] | None:
        """The active mailbox of a user or queue at ``address`` that uses a forward mailbox."""
        ctx = self._ctx
        found = await ctx.storage(
            ctx.directory.find_by_addresses([address]), "resolving the forwarder"
        )
        for record in found.get(normalize_address(address), ()):
            if record.mailbox_id is None or record.ref.entity not in _PRINCIPALS:
                continue
            mailbox = await ctx.storage(
                ctx.repositories.get_mailbox(record.mailbox_id), "loading a mailbox"
            )
            if (
                mailbox is not None
                and mailbox.is_active
                and mailbox.incoming_delivery_method is IncomingDeliveryMethod.FORWARD_MAILBOX
            ):
                return mailbox, record
        return None

    async def _store(
        self,
        session: IncomingMailSession,
        ref: RemoteMessageRef,
        judged: Judgement,
        parsed: ParsedMessage,
        received_on: datetime,
    ) -> ItemOutcome:
        """Create the email activity for a Track verdict, then tag the message."""
        email = await self._email_for(judged, parsed, received_on)
        outcomes, error = await self._store_all(session, [(ref, judged, email)])
        if error is not None:
            raise error
        return outcomes[0]

    async def _finish(
        self, session: IncomingMailSession, group: Sequence[_ToStore]
    ) -> tuple[list[ItemOutcome], SyncError | None]:
        """Fetch, parse and store the messages of ``group`` and tag the stored ones.

        Returns the outcomes of the group's first messages, in order, and the error that
        stopped the rest (the session or the store failed for the mailbox), if one did:
        those before it are stored and tagged, the rest are left for a later cycle.
        """
        fetched = await fetch_all(self._ctx, session, [item.ref for item in group])
        outcomes: list[ItemOutcome | None] = []
        waiting: list[tuple[int, RemoteMessageRef, Judgement, NewIncomingEmail]] = []
        error: SyncError | None = None
        for item, message in zip(group, fetched, strict=True):
            if isinstance(message, SyncError) and message.scope is not ErrorScope.ITEM:
                error = message
                break
            outcome = await self._prepared(item, message)
            if isinstance(outcome, NewIncomingEmail):
                waiting.append((len(outcomes), item.ref, item.judged, outcome))
                outcomes.append(None)
            else:
                outcomes.append(outcome)
        stored, store_error = await self._store_all(
            session, [(ref, judged, email) for _, ref, judged, email in waiting]
        )
        for (position, *_), outcome in zip(waiting, stored, strict=False):
            outcomes[position] = outcome
        if store_error is not None:
            # The emails before the one the store failed on are stored: report up to it.
            outcomes = outcomes[: waiting[len(stored)][0]]
            error = store_error
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(outcomes)
        return done, error

    async def _prepared(
        self, item: _ToStore, message: RawMessage | SyncError
    ) -> NewIncomingEmail | ItemOutcome:
        """The email to store for a fetched message, or the outcome of its failure."""
        ref = item.ref
        headers = item.headers
        fields = {"trace": item.judged.outcome.trace, **_common(headers, item.message_id)}
        if isinstance(message, SyncError):
            # This message alone (it vanished, or the server refuses to return it).
            return self._failed(ref, f"cannot fetch the message: {message}", message, **fields)
        too_large = self._too_large(len(message.data))
        if too_large is not None:
            return self._failed(ref, too_large.message, too_large, **fields)
        try:
            parsed = parse_message(message.data)
        except MalformedMessageError as exc:
            return self._failed(ref, f"unreadable message: {exc.reason}", exc, **fields)
        received_on = _received_on(ref, message.ref, headers, self._ctx.clock.now)
        try:
            return await self._email_for(item.judged, parsed, received_on)
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                raise
            return self._failed(ref, f"cannot process the message: {exc}", exc)

    async def _email_for(
        self, judged: Judgement, parsed: ParsedMessage, received_on: datetime
    ) -> NewIncomingEmail:
        """The email activity for a Track verdict, and its queues."""
        verdict = judged.decision.verdict if judged.decision else None
        facts = judged.facts
        message_id = judged.outcome.message_id
        assert isinstance(verdict, Track), "only a Track verdict is stored"
        assert facts is not None
        assert message_id is not None
        facts = await self._with_sender_record(parsed.headers, verdict, facts, message_id)
        activity = build_incoming_activity(
            activity_id=ActivityId(str(uuid.uuid4())),
            message_id=message_id,
            message=parsed,
            verdict=verdict,
            facts=facts,
            mailbox=self._mailbox,
            received_on=received_on,
        )
        queues = tuple(queues_for(verdict, parsed.headers, facts))
        return NewIncomingEmail(activity=activity, queues=queues)

    async def _store_all(
        self,
        session: IncomingMailSession,
        emails: Sequence[tuple[RemoteMessageRef, Judgement, NewIncomingEmail]],
    ) -> tuple[list[ItemOutcome], SyncError | None]:
        """Store ``emails``, then tag the messages stored; their outcomes in order, and the
        error that stopped the store for the mailbox, if one did (see :meth:`_finish`)."""
        results = await add_all(self._ctx, [email for _, _, email in emails])
        outcomes: list[ItemOutcome] = []
        tag: list[int] = []
        error: SyncError | None = None
        for (ref, judged, email), result in zip(emails, results, strict=True):
            if isinstance(result, SyncError):
                if result.scope is not ErrorScope.ITEM:
                    error = result
                    break
                # The store refused this email alone (a value it cannot hold, a host's rule).
                outcomes.append(
                    self._failed(
                        ref,
                        f"cannot store the email: {result}",
                        result,
                        trace=judged.outcome.trace,
                        message_id=judged.outcome.message_id,
                        subject=judged.outcome.subject,
                        sender=judged.outcome.sender,
                    )
                )
                continue
            outcomes.append(self._stored(judged, email.activity, result))
            tag.append(len(outcomes) - 1)
        refused = await self._tag_tracked(session, [emails[n][0] for n in tag])
        for n, exc in refused.items():
            ref = emails[tag[n]][0]
            outcomes[tag[n]] = self._failed(ref, f"cannot process the message: {exc}", exc)
        return outcomes, error

    def _stored(self, judged: Judgement, activity: EmailActivity, result: AddResult) -> ItemOutcome:
        message_id = judged.outcome.message_id
        assert message_id is not None
        if self._ahead is not None:
            if isinstance(result, AlreadyExists):
                self._ahead.forget(message_id)
            else:
                self._ahead.stored(activity)
        if isinstance(result, AlreadyExists):
            return attrs.evolve(
                judged.outcome,
                kind=OutcomeKind.DUPLICATE,
                reason=DecisionReason.DUPLICATE,
                rule="dedupe",
                explanation=f"stored meanwhile as email {result.activity_id}",
                activity_id=result.activity_id,
            )
        return attrs.evolve(judged.outcome, activity_id=result.activity_id)

    async def _tag_tracked(
        self, session: IncomingMailSession, refs: Sequence[RemoteMessageRef]
    ) -> dict[int, SyncError]:
        """Tag the stored messages at ``refs`` in one call; the errors of those that could
        not be tagged alone, by position (they are found by tagging one at a time)."""
        if not refs:
            return {}
        try:
            await self._mark_refs(session, refs, RemoteMark.TRACKED)
            return {}
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                raise
            if len(refs) == 1:
                return {0: exc}
        refused: dict[int, SyncError] = {}
        for n, ref in enumerate(refs):
            try:
                await self._mark(session, ref, RemoteMark.TRACKED)
            except SyncError as exc:
                if exc.scope is not ErrorScope.ITEM:
                    raise
                refused[n] = exc
        return refused

    def _failed(
        self, ref: RemoteMessageRef, explanation: str, exc: SyncError, **fields: Any
    ) -> ItemOutcome:
        """This message failed alone; the error is kept for the report."""
        return self._outcome(
            ref,
            OutcomeKind.FAILED,
            explanation=explanation,
            error=ErrorRecord.from_exception(exc),
            **fields,
        )

    def _too_large(self, size: int | None) -> MessageTooLargeError | None:
        """The error for a message of ``size`` bytes over ``Limits.max_message_size``."""
        limit = self._ctx.settings.limits.max_message_size
        if limit is None or size is None or size <= limit:
            return None
        return MessageTooLargeError(
            f"the message is too large: {size} bytes, more than the {limit} allowed "
            "(Limits.max_message_size)",
            size=size,
            limit=limit,
            mailbox_id=self._mailbox.id,
        )

    def _before_cutoff(self, ref: RemoteMessageRef) -> ItemOutcome | None:
        if (
            self._cutoff is not None
            and ref.received_at is not None
            and ref.received_at < self._cutoff
        ):
            return self._outcome(
                ref, OutcomeKind.SKIPPED, explanation="received before Process Email From"
            )
        return None

    async def judge(
        self,
        headers: ParsedHeaders,
        message_id: MessageId,
        ref: RemoteMessageRef,
        plan: FolderPlan | None = None,
    ) -> Judgement:
        """The decision on a message, without side effects: Duplicate, or the rules' verdict
        (``TRACKED`` here means "would be tracked") with the trace of every rule consulted."""
        common = _common(headers, message_id)
        plan = plan or FolderPlan(folder=ref.folder)
        ctx = self._ctx
        ahead = self._ahead
        same_message = ahead.same_message(message_id) if ahead is not None else None
        if same_message is not None:
            # The lookup that would have refused to start this message once the lease was
            # lost or the engine stopping was made for the batch: check here instead.
            check_lease(ctx.repositories)
        else:
            same_message = tuple(
                await ctx.storage(
                    ctx.repositories.find_by_message_ids([message_id]), "looking up a Message-ID"
                )
            )
        existing = next((a.id for a in same_message if a.direction is plan.direction), None)
        if existing is not None:
            outcome = self._outcome(
                ref,
                OutcomeKind.DUPLICATE,
                reason=DecisionReason.DUPLICATE,
                rule="dedupe",
                explanation=f"already tracked as email {existing}",
                activity_id=existing,
                **common,
            )
            return Judgement(outcome=outcome)
        facts = await self._facts(headers, plan, same_message)
        decision = decide(ctx.rules, headers, facts)
        verdict = decision.verdict
        outcome = self._outcome(
            ref,
            OutcomeKind.NOT_RELEVANT if isinstance(verdict, Reject) else OutcomeKind.TRACKED,
            reason=verdict.reason,
            rule=verdict.rule,
            explanation=verdict.explanation,
            trace=decision.trace,
            **common,
        )
        return Judgement(outcome=outcome, decision=decision, facts=facts)

    async def _queue_already_tracked(self, outcome: ItemOutcome) -> None:
        """``SSSCreateAdditionalQueueItemsForAlreadyTrackedEmail``: a queue mailbox receiving
        an email another mailbox already created gets its queue item for that email."""
        owner = self._mailbox.owner
        ctx = self._ctx
        if (
            ctx.settings.organization.create_additional_queue_items_for_already_tracked_email
            and owner is not None
            and owner.entity == EntityName.QUEUE
            and outcome.activity_id is not None
        ):
            await ctx.storage(
                ctx.repositories.ensure_queue_item(owner, outcome.activity_id),
                "adding a queue item",
            )

    async def _with_sender_record(
        self,
        headers: ParsedHeaders,
        verdict: Track,
        facts: RelevanceFacts,
        message_id: MessageId,
    ) -> RelevanceFacts:
        """Create the contact or lead the accepting user's option asks for (G7), so that the
        email's sender resolves to it; the facts unchanged when none is due."""
        ctx = self._ctx
        creator = ctx.directory
        if not isinstance(creator, RecordCreator):
            return facts
        request = sender_record_to_create(headers, verdict, facts, message_id=message_id)
        if request is None:
            return facts
        record = await ctx.storage(
            creator.create_sender_record(request), "creating a record for an unknown sender"
        )
        if self._ahead is not None:
            self._ahead.add_record(request.email_address, record)
        logger.info(
            "mailbox %s: created %s for the unknown sender of %s",
            self._mailbox.id,
            record.ref,
            message_id,
        )
        return attrs.evolve(facts, records={**facts.records, request.email_address: (record,)})

    async def _facts(
        self,
        headers: ParsedHeaders,
        plan: FolderPlan,
        same_message: tuple[EmailActivity, ...],
    ) -> RelevanceFacts:
        ctx = self._ctx
        ahead = self._ahead
        now = ctx.clock.now()
        addresses = addresses_of(headers)
        records: Mapping[str, Sequence[CrmRecord]] | None = None
        if ahead is not None:
            records = ahead.records(addresses)
        if records is None:
            records = await ctx.storage(
                ctx.directory.find_by_addresses(sorted(addresses)), "resolving addresses"
            )
        query = correlation_query(headers, ctx.settings.organization, now=now)
        candidates: Sequence[EmailActivity] | None = ()
        if not query.is_empty:
            candidates = ahead.candidates(query) if ahead is not None else None
            if candidates is None:
                candidates = await ctx.storage(
                    ctx.repositories.find_correlation_candidates(query),
                    "looking up emails to correlate with",
                )
        guard = ctx.settings.organization.loop_guard
        recent: int | None = None
        if guard.enabled and headers.sender is not None:
            recent = await ctx.storage(
                ctx.repositories.count_recent_from(
                    headers.sender.address, since=now - guard.window
                ),
                "counting a sender's recent emails",
            )
        return RelevanceFacts(
            mailbox=self._mailbox,
            mailbox_owner=self._owner_record,
            folder=plan.folder,
            tracking_folder=plan.rule,
            direction=plan.direction,
            same_message=same_message,
            recent_from_sender=recent,
            records={normalize_address(k): tuple(v) for k, v in records.items()},
            candidates=tuple(candidates or ()),
            organization=ctx.settings.organization,
            now=now,
        )

    async def _mark(
        self, session: IncomingMailSession, ref: RemoteMessageRef, mark: RemoteMark
    ) -> None:
        await self._mark_refs(session, [ref], mark)

    async def _mark_refs(
        self, session: IncomingMailSession, refs: Sequence[RemoteMessageRef], mark: RemoteMark
    ) -> None:
        what = "tagging a message" if len(refs) == 1 else f"tagging {len(refs)} messages"
        await deadline(self._ctx.settings.timeouts.command, session.mark(refs, mark), what)
