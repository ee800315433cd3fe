"""Sending through Microsoft Graph: a draft that carries our Message-ID and an extended
property, then ``send`` with no automatic retry, reconciled in Sent Items and Drafts.

Graph gives no usable receipt: ``send`` answers 202, and a 429, 5xx or timeout can come back
although Exchange sends the message later. So each attempt:

1. looks in Sent Items for the message (by the extended property, then by Message-ID): found
   means an earlier attempt got through, and the email is reported sent without sending;
2. looks in Drafts: an earlier attempt's draft is sent instead of a new one (a draft that
   is sent leaves Drafts, so the same draft cannot go out twice);
3. looks in the Outbox: a message still there is being sent, and the attempt waits;
4. otherwise creates the draft from the composed MIME, tags it, and sends it once.

A message over about 3 MB of MIME (:data:`MIME_DRAFT_LIMIT`) cannot be one MIME request
(Graph refuses bodies over about 4 MB with 413). It goes as a JSON draft (our Message-ID,
the ``x-`` headers, subject, body, recipients), its attachments added one request each or,
from 3 MB, through an upload session; the extended property is set last, once the draft is
whole. So a draft found by our property is complete and is sent; one found by its
Message-ID alone was left half-built by a stop, and is deleted and built again, never sent.

When ``send`` fails in a way that leaves the outcome unknown, Sent Items is asked at once.
A copy there is a success; the draft still in Drafts means Exchange did not take it and
the error is raised as it is (the retry sends that draft); anything else cannot be decided
and raises :class:`~serversync.errors.DeliveryUncertainError`, for the engine's
expired-claim policy (``RESEND`` is safe here: the resend reconciles first).

The property's value is the Message-ID, which the engine fixes before an email's first
attempt and derives from the email's id: it names the email one to one without the port
carrying the activity id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any, Final, final
from urllib.parse import quote

import attrs

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports.graph._client import GraphClient, NotConnectedError
from serversync.adapters.transports.graph._headers import parse_graph_time
from serversync.adapters.transports.graph._json_draft import (
    MIME_DRAFT_LIMIT,
    SMALL_ATTACHMENT_LIMIT,
    DraftAttachment,
    json_draft,
    upload_ranges,
)
from serversync.errors import (
    DeliveryUncertainError,
    MessageRejectedError,
    OperationTimeoutError,
    ServerBusyError,
    SyncError,
    TransientError,
)
from serversync.model import Mailbox, MessageId, OutgoingMessage
from serversync.model.messages import normalize_address
from serversync.model.outcomes import SendReceipt
from serversync.ports import OutgoingMailSession
from serversync.settings import Timeouts

__all__ = ["MESSAGE_ID_PROPERTY", "MIME_DRAFT_LIMIT", "GraphOutgoingSession", "OutgoingOptions"]

MESSAGE_ID_PROPERTY: Final = (
    "String {6A4E3B9C-2F0D-4C47-9F3B-5E1D8C7A2B10} Name ServerSyncMessageId"
)
"""The named extended property serversync puts on every message it sends: the Message-ID."""
logger = logging.getLogger("serversync.adapters.transports.graph")

_LOOK: Final = "id,internetMessageId,isDraft,sentDateTime,parentFolderId"
_RECONCILE_RESERVE: Final = timedelta(seconds=10)


@attrs.frozen(kw_only=True)
class OutgoingOptions:
    """How messages are sent."""

    timeouts: Timeouts
    now: Callable[[], datetime]


@attrs.frozen
class _Found:
    id: str
    sent_at: datetime | None
    tagged: bool = True  # found by our property, so the PATCH after creating it happened


def _bcc(message: OutgoingMessage) -> list[str]:
    """Envelope recipients the MIME content does not name: Exchange sends to the To, Cc and
    Bcc of the content, so these become Bcc recipients of the draft."""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(message.data)
    values = [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name) or ()]
    named = {normalize_address(address) for _, address in getaddresses(values)}
    return list(dict.fromkeys(a for a in message.recipients if normalize_address(a) not in named))


def _next_expected(response: Any) -> int | None:
    """The first byte of an upload answer's ``nextExpectedRanges`` (``None``: not said)."""
    try:
        ranges = response.json().get("nextExpectedRanges") if response.content else None
        return int(str(ranges[0]).split("-")[0]) if ranges else None
    except (ValueError, AttributeError, IndexError, TypeError):
        return None


def _quoted(value: str) -> str:
    return value.replace("'", "''")


@final
@documented_by(OutgoingMailSession)
class GraphOutgoingSession:
    """One mailbox sending through Graph."""

    def __init__(self, client: GraphClient, *, mailbox: Mailbox, options: OutgoingOptions) -> None:
        self._client = client
        self._mailbox = mailbox
        self._options = options
        self._user = f"users/{quote(mailbox.email_address, safe='@')}"

    async def probe(self) -> None:
        """One cheap request that proves the token and the mailbox."""
        await self._client.request(
            "GET",
            f"{self._user}/mailFolders/sentitems",
            what="opening Sent Items",
            deadline=self._options.timeouts.connect,
            params={"$select": "id"},
            idempotent=True,
        )

    async def _find(self, folder: str, message_id: MessageId, left: timedelta) -> _Found | None:
        """The message in a well-known folder, by our property first, then by Message-ID
        (a draft whose property was never set: a stop between creating and tagging it)."""
        filters = (
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{MESSAGE_ID_PROPERTY}' "
            f"and ep/value eq '{_quoted(message_id)}')",
            f"internetMessageId eq '{_quoted(message_id)}'",
        )
        for n, condition in enumerate(filters):
            response = await self._client.request(
                "GET",
                f"{self._user}/mailFolders/{folder}/messages",
                what=f"looking for {message_id} in {folder}",
                deadline=left,
                params={"$filter": condition, "$select": _LOOK, "$top": "1"},
                idempotent=True,
            )
            body = response.json()
            for row in body.get("value") or () if isinstance(body, dict) else ():
                return _Found(
                    id=str(row["id"]),
                    sent_at=parse_graph_time(row.get("sentDateTime")),
                    tagged=n == 0,
                )
        return None

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        mailbox_id = self._mailbox.id
        if not message.recipients:
            raise MessageRejectedError("the message has no recipients", mailbox_id=mailbox_id)
        # One deadline for the look-ups and the send together: the engine's own deadline on
        # send() is Timeouts.send (and a little), and must not fire first.
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._options.timeouts.send.total_seconds()

        def left(what: str) -> timedelta:
            remaining = ends - loop.time()
            if remaining <= 0:
                raise OperationTimeoutError(
                    f"{what}: no time left of the send timeout", mailbox_id=mailbox_id
                )
            return timedelta(seconds=remaining)

        mid = message.message_id
        large = len(message.data) > MIME_DRAFT_LIMIT
        sent = await self._find("sentitems", mid, left("looking in Sent Items"))
        if sent is not None:
            return self._receipt(message, sent, reconciled=True)
        draft = await self._find("drafts", mid, left("looking in Drafts"))
        if draft is not None and not draft.tagged and large:
            # A stop while the draft was being built: its attachments may be missing, so it
            # is replaced (it was never sent: the property, set last, is missing).
            await self._discard(draft, left("deleting a half-built draft"))
            draft = None
        if draft is not None:
            self._client.stats._count("drafts_reused")
            if not draft.tagged:
                # An earlier attempt stopped between creating the draft and tagging it: its
                # property and Bcc recipients are still missing.
                await self._tag_draft(message, draft, left("tagging the draft"))
        else:
            if await self._find("outbox", mid, left("looking in the Outbox")) is not None:
                raise ServerBusyError(
                    f"{mid} is in the Outbox from an earlier attempt; Exchange is still sending it",
                    mailbox_id=mailbox_id,
                )
            if large:
                draft = await self._create_large_draft(message, left)
            else:
                draft = await self._create_draft(message, left("creating the draft"))
        what = f"sending {mid}"
        # Part of the deadline is kept back for asking Sent Items when the send's outcome is
        # unknown; without it a send that timed out could never be reconciled at once.
        reserve = min(_RECONCILE_RESERVE, self._options.timeouts.send / 4)
        budget = left(what) - reserve
        if budget <= timedelta(0):
            raise OperationTimeoutError(
                f"{what}: no time left of the send timeout", mailbox_id=mailbox_id
            )
        try:
            await self._client.request(
                "POST",
                f"{self._user}/messages/{quote(draft.id, safe='')}/send",
                what=what,
                deadline=budget,
                content=b"",
                idempotent=False,
                item=True,
            )
        except NotConnectedError:
            raise  # the request never left: nothing was sent
        except TransientError as exc:
            return await self._after_unknown(message, draft, exc, left)
        self._client.stats._count("messages_sent")
        return self._receipt(message, draft, reconciled=False)

    async def _after_unknown(
        self,
        message: OutgoingMessage,
        draft: _Found,
        exc: TransientError,
        left: Callable[[str], timedelta],
    ) -> SendReceipt:
        """``send`` failed in a way that may have sent the message: ask Exchange."""
        mid = message.message_id
        try:
            sent = await self._find("sentitems", mid, left("reconciling in Sent Items"))
            if sent is not None:
                return self._receipt(message, sent, reconciled=True)
            still = await self._find("drafts", mid, left("reconciling in Drafts"))
        except SyncError as lookup:
            raise DeliveryUncertainError(
                f"sending {mid}: {exc}; looking for it afterwards failed too ({lookup}); "
                "Exchange may have sent it",
                mailbox_id=self._mailbox.id,
            ) from exc
        if still is not None and still.id == draft.id:
            raise exc  # Exchange did not take the draft: the next attempt sends it
        raise DeliveryUncertainError(
            f"sending {mid}: {exc}; the draft left Drafts but no copy is in Sent Items yet: "
            "Exchange may have sent it (the next attempt looks in Sent Items first)",
            mailbox_id=self._mailbox.id,
        ) from exc

    async def _create_draft(self, message: OutgoingMessage, left: timedelta) -> _Found:
        response = await self._client.request(
            "POST",
            f"{self._user}/messages",
            what=f"creating the draft of {message.message_id}",
            deadline=left,
            content=base64.b64encode(message.data),
            content_type="text/plain",
            idempotent=False,
            item=True,
        )
        created: dict[str, Any] = response.json()
        draft = _Found(id=str(created["id"]), sent_at=None)
        await self._tag_draft(message, draft, left)
        return draft

    async def _create_large_draft(
        self, message: OutgoingMessage, left: Callable[[str], timedelta]
    ) -> _Found:
        """A JSON draft, its attachments, then our property: the draft is whole once it
        carries the property. On failure the half-built draft is deleted when Graph lets
        us; otherwise the next attempt finds it by its Message-ID and replaces it."""
        mid = message.message_id
        plan = json_draft(message)
        response = await self._client.request(
            "POST",
            f"{self._user}/messages",
            what=f"creating the draft of {mid}",
            deadline=left("creating the draft"),
            json=plan.message,
            idempotent=False,
            item=True,
        )
        created: dict[str, Any] = response.json()
        draft = _Found(id=str(created["id"]), sent_at=None)
        try:
            for attachment in plan.attachments:
                await self._attach(draft, attachment, mid, left)
            await self._tag_draft(message, draft, left("tagging the draft"), bcc=False)
        except SyncError:
            try:
                await self._discard(draft, left("deleting a half-built draft"))
            except SyncError as cleanup:
                logger.info(
                    "mailbox %s: a half-built draft of %s stays in Drafts (%s); the next "
                    "attempt replaces it",
                    self._mailbox.id,
                    mid,
                    cleanup,
                )
            raise
        self._client.stats._count("large_drafts")
        return draft

    async def _attach(
        self,
        draft: _Found,
        attachment: DraftAttachment,
        mid: MessageId,
        left: Callable[[str], timedelta],
    ) -> None:
        path = f"{self._user}/messages/{quote(draft.id, safe='')}/attachments"
        what = f"attaching {attachment.name!r} to the draft of {mid}"
        if len(attachment.data) < SMALL_ATTACHMENT_LIMIT:
            await self._client.request(
                "POST",
                path,
                what=what,
                deadline=left(what),
                json=attachment.file_attachment(),
                idempotent=False,
                item=True,
            )
            return
        response = await self._client.request(
            "POST",
            f"{path}/createUploadSession",
            what=f"opening an upload session for {attachment.name!r}",
            deadline=left(what),
            json={"AttachmentItem": attachment.item()},
            idempotent=False,
            item=True,
        )
        session = response.json()
        url = str(session.get("uploadUrl") or "") if isinstance(session, dict) else ""
        if not url:
            raise TransientError(
                f"{what}: Graph opened an upload session without an uploadUrl",
                mailbox_id=self._mailbox.id,
            )
        total = len(attachment.data)
        for first, last in upload_ranges(total):
            answer = await self._client.upload(
                url,
                attachment.data[first : last + 1],
                first=first,
                total=total,
                what=f"{what} (bytes {first}-{last} of {total})",
                deadline=left(what),
            )
            self._client.stats._count("bytes_uploaded", last - first + 1)
            expected = _next_expected(answer)
            if last + 1 < total and expected is not None and expected != last + 1:
                raise TransientError(
                    f"{what}: Graph expects byte {expected} next, not {last + 1}",
                    mailbox_id=self._mailbox.id,
                )
            if last + 1 == total and answer.status_code != 201:
                raise TransientError(
                    f"{what}: the last range was answered {answer.status_code}, not 201",
                    mailbox_id=self._mailbox.id,
                )

    async def _discard(self, draft: _Found, left: timedelta) -> None:
        """Delete a draft that was never sent (to Deleted Items, as Graph's DELETE does)."""
        with contextlib.suppress(MessageRejectedError):  # gone already
            await self._client.request(
                "DELETE",
                f"{self._user}/messages/{quote(draft.id, safe='')}",
                what="deleting a half-built draft",
                deadline=left,
                idempotent=True,
                item=True,
            )
        self._client.stats._count("drafts_replaced")

    async def _tag_draft(
        self, message: OutgoingMessage, draft: _Found, left: timedelta, *, bcc: bool = True
    ) -> None:
        """A MIME draft cannot carry extended properties or envelope-only recipients: one
        PATCH adds them. A stop before it leaves a draft found by its Message-ID, tagged
        by the next attempt. (A JSON draft has its Bcc already: ``bcc=False``.)"""
        patch: dict[str, Any] = {
            "singleValueExtendedProperties": [
                {"id": MESSAGE_ID_PROPERTY, "value": str(message.message_id)}
            ]
        }
        recipients = _bcc(message) if bcc else []
        if recipients:
            patch["bccRecipients"] = [{"emailAddress": {"address": a}} for a in recipients]
        await self._client.request(
            "PATCH",
            f"{self._user}/messages/{quote(draft.id, safe='')}",
            what=f"tagging the draft of {message.message_id}",
            deadline=left,
            json=patch,
            idempotent=True,
            item=True,
        )

    def _receipt(self, message: OutgoingMessage, found: _Found, *, reconciled: bool) -> SendReceipt:
        if reconciled:
            self._client.stats._count("sends_reconciled")
        return SendReceipt(
            message_id=message.message_id,
            accepted_at=found.sent_at if reconciled and found.sent_at else self._options.now(),
            server_reply=(
                "already in Sent Items from an earlier attempt; not sent again"
                if reconciled
                else "202 Accepted (draft sent)"
            ),
            remote_id=found.id,
        )
