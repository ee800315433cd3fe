"""Incoming cursors, one per mailbox folder, and the batches transports list against them.

A cursor is the truth about what was processed; push notifications are only hints. The
engine saves a cursor only after every message before it was stored.
"""

from __future__ import annotations

import attrs

from serversync.model.messages import RemoteMessageRef

__all__ = [
    "Checkpoint",
    "EwsCheckpoint",
    "GraphCheckpoint",
    "ImapCheckpoint",
    "IncomingBatch",
    "Pop3Checkpoint",
]


@attrs.frozen(kw_only=True)
class ImapCheckpoint:
    """IMAP folder cursor: UIDVALIDITY, the last processed UID and HIGHESTMODSEQ if offered."""

    uidvalidity: int
    last_uid: int
    highest_modseq: int | None = None


@attrs.frozen(kw_only=True)
class Pop3Checkpoint:
    """POP3 cursor: the UIDLs already processed, pruned to those still on the server."""

    seen_uidls: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class EwsCheckpoint:
    """EWS cursor: the SyncFolderItems sync state."""

    sync_state: str


@attrs.frozen(kw_only=True)
class GraphCheckpoint:
    """Microsoft Graph cursor: the whole URL a folder's message delta resumes from.

    ``resume_url`` is an ``@odata.nextLink`` (a round under way) or an ``@odata.deltaLink``
    (``round_complete``); Graph bakes the query into its tokens, so the URL is kept as Graph
    gave it. ``done`` holds the ids of messages of that URL's page already processed, so that
    a cursor can stand between two messages of one page. ``query`` names the query the round
    was started with; a cursor of another query starts a new round.
    """

    resume_url: str
    done: frozenset[str] = frozenset()
    round_complete: bool = False
    query: str = ""


Checkpoint = ImapCheckpoint | Pop3Checkpoint | EwsCheckpoint | GraphCheckpoint
"""Any transport's cursor."""


def _same_length(instance: IncomingBatch, attribute: object, value: tuple[Checkpoint, ...]) -> None:
    if len(value) != len(instance.refs):
        raise ValueError("an IncomingBatch needs one checkpoint per message reference")


@attrs.frozen(kw_only=True)
class IncomingBatch:
    """New messages in one folder, oldest first, with the cursor after each of them.

    ``checkpoints[i]`` is the cursor to save once ``refs[0..i]`` are stored; ``end`` is the
    cursor once the whole batch is done (it may move even when ``refs`` is empty). ``reset``
    says the server invalidated the old cursor (a UIDVALIDITY change): the folder is listed
    again from the start and dedupe keeps it free of duplicates. ``more`` says another batch
    is waiting.
    """

    folder: str
    refs: tuple[RemoteMessageRef, ...]
    checkpoints: tuple[Checkpoint, ...] = attrs.field(validator=_same_length)
    end: Checkpoint | None
    reset: bool = False
    more: bool = False
