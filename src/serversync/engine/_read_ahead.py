"""The store and directory lookups of a whole header batch, asked once for the batch.

Judging a message looks up its Message-ID (dedupe), the records of its addresses and the
emails it answers. Asked per message that was two or three round trips to the store a
message, most of the incoming pipeline's time on SQL stores; asked for the batch it is two.

Only answers that a per-message lookup would give are served: a Message-ID or an address
the batch lookup did not cover goes to the store. The emails the batch itself stores are
added as they are stored, so a later duplicate in the same batch is still seen; a Message-ID
another writer stored meanwhile is caught by ``add_incoming``'s dedupe key, as it was when
that happened between a message's lookup and its storing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from serversync.errors import MalformedMessageError
from serversync.mime import ensure_message_id, parse_headers
from serversync.model import (
    CorrelationQuery,
    CrmRecord,
    EmailActivity,
    MessageId,
    ParsedHeaders,
    RawHeaders,
)
from serversync.model.messages import normalize_address

from ._context import EngineContext

__all__ = ["ReadAhead", "addresses_of"]


def addresses_of(headers: ParsedHeaders) -> set[str]:
    """The addresses whose records relevance needs: the sender and every recipient."""
    addresses = {a.address for a in headers.recipients}
    if headers.sender is not None:
        addresses.add(headers.sender.address)
    return addresses


class ReadAhead:
    """The answers for one header batch; build it with :meth:`load`."""

    def __init__(self) -> None:
        self._headers: dict[str, tuple[ParsedHeaders, MessageId]] = {}
        self._looked_up: set[MessageId] = set()
        self._by_message_id: dict[MessageId, list[EmailActivity]] = {}
        self._addresses: set[str] = set()
        self._records: dict[str, tuple[CrmRecord, ...]] = {}

    @classmethod
    async def load(cls, ctx: EngineContext, batch: Sequence[RawHeaders]) -> ReadAhead:
        """Parse the batch's headers and look up what judging them needs, in two calls."""
        ahead = cls()
        wanted: set[MessageId] = set()
        addresses: set[str] = set()
        for raw in batch:
            try:
                headers, message_id = ensure_message_id(parse_headers(raw.data))
            except MalformedMessageError:
                continue  # reported when the message itself is processed
            ahead._headers[raw.ref.remote_id] = (headers, message_id)
            wanted.add(message_id)
            wanted.update(headers.thread_ids)
            addresses |= addresses_of(headers)
        if wanted:
            found = await ctx.storage(
                ctx.repositories.find_by_message_ids(sorted(wanted)), "looking up Message-IDs"
            )
            ahead._looked_up = wanted
            for activity in found:
                if activity.message_id is not None:
                    ahead._by_message_id.setdefault(activity.message_id, []).append(activity)
        if addresses:
            records = await ctx.storage(
                ctx.directory.find_by_addresses(sorted(addresses)), "resolving addresses"
            )
            ahead._addresses = {normalize_address(a) for a in addresses}
            ahead._records = {normalize_address(k): tuple(v) for k, v in records.items()}
        return ahead

    def headers(self, raw: RawHeaders) -> tuple[ParsedHeaders, MessageId] | None:
        """The parsed headers of a batch message (``None``: unreadable, or not in it)."""
        return self._headers.get(raw.ref.remote_id)

    def same_message(self, message_id: MessageId) -> tuple[EmailActivity, ...] | None:
        """The stored emails with ``message_id``; ``None`` when not looked up."""
        if message_id not in self._looked_up:
            return None
        return tuple(self._by_message_id.get(message_id, ()))

    def records(self, addresses: Iterable[str]) -> Mapping[str, tuple[CrmRecord, ...]] | None:
        """The records of ``addresses`` by normalised address; ``None`` when not looked up."""
        normalized = {normalize_address(a) for a in addresses}
        if not normalized <= self._addresses:
            return None
        return {a: self._records[a] for a in sorted(normalized) if a in self._records}

    def candidates(self, query: CorrelationQuery) -> Sequence[EmailActivity] | None:
        """The answer to a correlation query that names Message-IDs only, all looked up;
        ``None`` for any other query."""
        if (
            query.tracking_tokens
            or query.conversation_index_hash is not None
            or query.participants
            or not set(query.message_ids) <= self._looked_up
        ):
            return None
        found: dict[str, EmailActivity] = {}
        for message_id in query.message_ids:
            for activity in self._by_message_id.get(message_id, ()):
                found.setdefault(activity.id, activity)
        return list(found.values())

    def stored(self, activity: EmailActivity) -> None:
        """An email the batch stored: later lookups of its Message-ID see it."""
        if activity.message_id is not None:
            self._by_message_id.setdefault(activity.message_id, []).append(activity)

    def forget(self, message_id: MessageId) -> None:
        """Send lookups of ``message_id`` to the store again (another writer stored it)."""
        self._looked_up.discard(message_id)
