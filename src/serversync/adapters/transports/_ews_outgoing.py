"""Sending over EWS: the composed MIME handed to Exchange with SendAndSaveCopy, after a look
in Sent Items for a copy an earlier attempt may already have left there.

Exchange keeps the copy it sends in Sent Items with the message's Message-ID. Before each
send the session asks Sent Items for that Message-ID; when a copy is there, an earlier attempt
(cut off by a crash, a timeout or a lost answer) got through, and the email is reported sent
without sending it again. The engine's outbox policies rely on that:

- a send cut off before Exchange answered (its deadline, a dropped connection) raises a
  transient error, so the engine retries it later (``SendRetry``), and the retry finds the
  copy instead of sending twice; without the look into Sent Items it raises
  :class:`DeliveryUncertainError` instead, and the expired-claim policy decides;
- an email whose send claim expired while Sending (the engine stopped in mid-send) is marked
  uncertain by default (``ExpiredClaimPolicy.MARK_UNCERTAIN``); with EWS a host can choose
  ``ExpiredClaimPolicy.RESEND`` safely, because the resend finds the copy.

Exchange files the copy once the message is submitted, which can take a moment; retries come
minutes later (``RetryPolicy.send_retry_interval``, the claim's duration), long after that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any, Final, final

import attrs
from exchangelib import FolderCollection, Message, Q  # type: ignore[import-untyped]
from exchangelib.items import SHALLOW  # type: ignore[import-untyped]

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports._ews_connection import EwsConnection
from serversync.adapters.transports._ews_stats import EwsStats
from serversync.errors import (
    ConnectionFailedError,
    DeliveryUncertainError,
    MessageRejectedError,
    OperationTimeoutError,
)
from serversync.model import MessageId, OutgoingMessage
from serversync.model.messages import normalize_address
from serversync.model.outcomes import SendReceipt
from serversync.ports import OutgoingMailSession
from serversync.settings import Timeouts

__all__ = ["EwsOutgoingSession", "OutgoingOptions"]

# exchangelib sends Importance and Sensitivity with every new message, and they win over the
# MIME content's headers; they are set from those headers so that the message keeps them.
_IMPORTANCE: Final = {"high": "High", "low": "Low", "normal": "Normal"}
_PRIORITY: Final = {"1": "High", "2": "High", "3": "Normal", "4": "Low", "5": "Low"}
_COPY_FIELDS: Final = ("datetime_sent",)
_SENSITIVITY: Final = {
    "personal": "Personal",
    "private": "Private",
    "company-confidential": "Confidential",
}


@attrs.frozen(kw_only=True)
class OutgoingOptions:
    """How messages are sent."""

    timeouts: Timeouts
    reconcile_sent_items: bool
    now: Callable[[], datetime]


def _headers(data: bytes) -> EmailMessage:
    parsed = BytesHeaderParser(policy=default_policy).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _flags(headers: EmailMessage) -> dict[str, str]:
    """Importance and Sensitivity for exchangelib, from the message's own headers."""
    importance = _IMPORTANCE.get(str(headers.get("importance", "")).strip().lower())
    if importance is None:
        importance = _PRIORITY.get(str(headers.get("x-priority", "")).strip()[:1], "Normal")
    sensitivity = _SENSITIVITY.get(str(headers.get("sensitivity", "")).strip().lower(), "Normal")
    return {"importance": importance, "sensitivity": sensitivity}


def _bcc(message: OutgoingMessage, headers: EmailMessage) -> list[str]:
    """Envelope recipients the MIME content does not name: Exchange sends to the To, Cc and
    Bcc of the content, so these go as Bcc recipients of the item."""
    values = [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name) or ()]
    named = {normalize_address(address) for _, address in getaddresses(values)}
    bcc = dict.fromkeys(
        address for address in message.recipients if normalize_address(address) not in named
    )
    return list(bcc)


@final
@documented_by(OutgoingMailSession)
class EwsOutgoingSession:
    """An open EWS connection to one mailbox, for sending mail."""

    def __init__(
        self,
        connection: EwsConnection,
        *,
        options: OutgoingOptions,
        stats: EwsStats,
    ) -> None:
        self._connection = connection
        self._options = options
        self._stats = stats

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        mailbox_id = self._connection.mailbox_id
        if not message.recipients:
            raise MessageRejectedError("the message has no recipients", mailbox_id=mailbox_id)
        # One deadline for the look into Sent Items and the send together: the engine's own
        # deadline on send() is Timeouts.send (and a little), and must not fire first.
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._options.timeouts.send.total_seconds()

        def left(what: str) -> timedelta:
            remaining = ends - loop.time()
            if remaining <= 0:
                raise OperationTimeoutError(
                    f"{what}: no time left of the send timeout", mailbox_id=mailbox_id
                )
            return timedelta(seconds=remaining)

        if self._options.reconcile_sent_items:
            what = f"looking for {message.message_id} in Sent Items"
            earlier = await self._connection.call(
                what, lambda: self._sent_copy(message.message_id), limit=left(what)
            )
            if earlier is not None:
                return self._reconciled(message, earlier)
        what = f"sending {message.message_id}"
        try:
            await self._connection.call(
                what, lambda: self._send(message), limit=left(what), item=True
            )
        except (OperationTimeoutError, ConnectionFailedError) as exc:
            if self._options.reconcile_sent_items:
                raise  # the next attempt looks in Sent Items before sending
            raise DeliveryUncertainError(
                f"{what}: cut off before Exchange answered ({exc}); it may have sent the message",
                mailbox_id=mailbox_id,
            ) from exc
        self._stats._count("messages_sent")
        return SendReceipt(
            message_id=message.message_id,
            accepted_at=self._options.now(),
            server_reply="CreateItem SendAndSaveCopy: NoError",
        )

    def _reconciled(self, message: OutgoingMessage, copy: Any) -> SendReceipt:
        self._stats._count("sends_reconciled")
        sent = copy.datetime_sent
        return SendReceipt(
            message_id=message.message_id,
            accepted_at=(
                datetime.fromtimestamp(sent.timestamp(), tz=UTC)
                if sent is not None
                else self._options.now()
            ),
            server_reply="already in Sent Items from an earlier attempt; not sent again",
            remote_id=copy.id,
        )

    def _sent_copy(self, message_id: MessageId) -> Any:
        sent = self._connection.well_known.sent
        # FindItem alone: a QuerySet would add a GetItem (and a GetFolder) per answer.
        found = FolderCollection(account=self._connection.account, folders=[sent]).find_items(
            q=Q(message_id=str(message_id)),
            depth=SHALLOW,
            additional_fields=set(sent.normalize_fields(fields=_COPY_FIELDS)),
            max_items=1,
        )
        return next((item for item in found if not isinstance(item, Exception)), None)

    def _send(self, message: OutgoingMessage) -> None:
        sent = self._connection.well_known.sent
        headers = _headers(message.data)
        item = Message(
            account=self._connection.account,
            folder=sent,  # SendAndSaveCopy keeps the copy here
            mime_content=message.data,
            bcc_recipients=_bcc(message, headers) or None,
            is_read=True,
            **_flags(headers),
        )
        item.send_and_save()
