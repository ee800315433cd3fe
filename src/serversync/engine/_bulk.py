"""Fetching and storing several messages at once: through the optional ports when the
session or the repositories offer them, one message at a time otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from serversync.errors import ErrorScope, MalformedMessageError, StorageConflictError, SyncError
from serversync.model import AddResult, NewIncomingEmail, RawMessage, RemoteMessageRef
from serversync.ports import BatchIncomingRepository, BatchMessageSession, IncomingMailSession

from ._context import EngineContext, deadline
from ._optional import offered

__all__ = ["add_all", "fetch_all"]

# Bodies asked for in one call (EWS: one GetItem).
_FETCH_CHUNK = 100


async def fetch_all(
    ctx: EngineContext, session: IncomingMailSession, refs: Sequence[RemoteMessageRef]
) -> list[RawMessage | SyncError]:
    """The whole messages at ``refs`` or the errors that failed them, in order; once the
    session fails for the mailbox, that error stands for every message from there on."""
    limit = ctx.settings.timeouts.fetch
    several = offered(session, BatchMessageSession) if len(refs) > 1 else None
    out: list[RawMessage | SyncError] = []
    if several is None:
        for ref in refs:
            try:
                out.append(await deadline(limit, session.fetch_message(ref), "fetching a message"))
            except SyncError as exc:
                out.append(exc)
                if exc.scope is not ErrorScope.ITEM:
                    break
    else:
        for start in range(0, len(refs), _FETCH_CHUNK):
            chunk = refs[start : start + _FETCH_CHUNK]
            try:
                got = list(
                    await deadline(
                        limit, several.fetch_messages(chunk), f"fetching {len(chunk)} messages"
                    )
                )
            except SyncError as exc:
                got = [exc] * len(chunk)
            if len(got) != len(chunk):
                raise MalformedMessageError(
                    "the server returned a different number of messages than asked for",
                    reason="message count mismatch",
                )
            out += got
            if any(isinstance(m, SyncError) and m.scope is not ErrorScope.ITEM for m in got):
                break
    stop = next(
        (
            n
            for n, m in enumerate(out)
            if isinstance(m, SyncError) and m.scope is not ErrorScope.ITEM
        ),
        None,
    )
    if stop is not None:
        failure = out[stop]
        out = out[:stop] + [failure] * (len(refs) - stop)
    return out


async def add_all(
    ctx: EngineContext, emails: Sequence[NewIncomingEmail]
) -> list[AddResult | SyncError]:
    """Store ``emails``: one call when the repositories store several at once. Each
    entry is the result or the error of scope ``item`` that refused the email; an error
    of wider scope stands for the email it failed on and every later one."""
    if not emails:
        return []
    several = offered(ctx.repositories, BatchIncomingRepository)
    if several is not None and len(emails) > 1:
        results = list(
            await ctx.storage(several.add_incoming_batch(emails), "storing incoming emails")
        )
        if len(results) != len(emails):
            raise StorageConflictError(
                f"the store answered {len(results)} results for {len(emails)} emails"
            )
        return results
    out: list[AddResult | SyncError] = []
    for n, email in enumerate(emails):
        try:
            out.append(
                await ctx.storage(
                    ctx.repositories.add_incoming(email.activity, queues=email.queues),
                    "storing an incoming email",
                )
            )
        except SyncError as exc:
            if exc.scope is not ErrorScope.ITEM:
                return out + [exc] * (len(emails) - n)
            out.append(exc)
    return out
