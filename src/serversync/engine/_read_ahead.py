"""The store and directory lookups of a whole header batch, asked once for the batch.

Judging a message looks up its Message-ID (dedupe), the records of its addresses and the
emails it answers or shares a conversation index or tracking token with. Asked per message
that was two or three round trips to the store a message, most of the incoming pipeline's
time on SQL stores; asked for the batch it is two, and a third when a message carries a
conversation index or a token and the repositories offer :class:`CorrelationKeyLookup`.

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
from serversync.ports import CorrelationKeyLookup
from serversync.relevance.correlation import correlation_query

from ._context import EngineContext
from ._optional import offered

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
        self._hashes: set[int] = set()
        self._tokens: set[str] = set()
        self._by_hash: dict[int, list[EmailActivity]] = {}
        self._by_token: dict[str, list[EmailActivity]] = {}

    @classmethod
    async def load(cls, ctx: EngineContext, batch: Sequence[RawHeaders]) -> ReadAhead:
        """Parse the batch's headers and look up what judging them needs, in two or three
        calls."""
        ahead = cls()
        wanted: set[MessageId] = set()
        addresses: set[str] = set()
        hashes: set[int] = set()
        tokens: set[str] = set()
        org = ctx.settings.organization
        for raw in batch:
            try:
                headers, message_id = ensure_message_id(parse_headers(raw.data))
            except MalformedMessageError:
                continue  # reported when the message itself is processed
            ahead._headers[raw.ref.remote_id] = (headers, message_id)
            wanted.add(message_id)
            wanted.update(headers.thread_ids)
            addresses |= addresses_of(headers)
            query = correlation_query(headers, org, now=None)
            if query.conversation_index_hash is not None:
                hashes.add(query.conversation_index_hash)
            tokens.update(query.tracking_tokens)
        lookup = offered(ctx.repositories, CorrelationKeyLookup)
        if lookup is not None and (hashes or tokens):
            found = await ctx.storage(
                lookup.find_by_correlation_keys(
                    conversation_index_hashes=sorted(hashes), tracking_tokens=sorted(tokens)
                ),
                "looking up conversation indexes and tracking tokens",
            )
            ahead._hashes, ahead._tokens = hashes, tokens
            for activity in found:
                ahead._index(activity, message_id=False)
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
        """The answer to a correlation query whose Message-IDs, conversation index and
        tracking tokens were all looked up; ``None`` for any other query (smart matching's
        participants among them)."""
        index = query.conversation_index_hash
        if (
            query.participants
            or not set(query.message_ids) <= self._looked_up
            or not set(query.tracking_tokens) <= self._tokens
            or (index is not None and index not in self._hashes)
        ):
            return None
        found: dict[str, EmailActivity] = {}
        matches = [self._by_message_id.get(m, ()) for m in query.message_ids]
        matches += [self._by_token.get(t, ()) for t in query.tracking_tokens]
        if index is not None:
            matches.append(self._by_hash.get(index, ()))
        for activities in matches:
            for activity in activities:
                found.setdefault(activity.id, activity)
        return list(found.values())

    def stored(self, activity: EmailActivity) -> None:
        """An email the batch stored: later lookups of its Message-ID, conversation index
        and tracking token see it."""
        self._index(activity, message_id=True)

    def _index(self, activity: EmailActivity, *, message_id: bool) -> None:
        if message_id and activity.message_id is not None:
            self._by_message_id.setdefault(activity.message_id, []).append(activity)
        index = activity.base_conversation_index_hash
        if index is not None and index in self._hashes:
            self._by_hash.setdefault(index, []).append(activity)
        token = activity.tracking_token
        if token is not None and token in self._tokens:
            self._by_token.setdefault(token, []).append(activity)

    def add_record(self, address: str, record: CrmRecord) -> None:
        """A record created for ``address`` while the batch was judged (an unknown sender's
        contact or lead): later messages of the batch resolve the address to it."""
        key = normalize_address(address)
        if key in self._addresses:
            self._records[key] = (*self._records.get(key, ()), record)

    def forget(self, message_id: MessageId) -> None:
        """Send lookups of ``message_id`` to the store again (another writer stored it)."""
        self._looked_up.discard(message_id)
