"""Reading a mailbox through Microsoft Graph: folders, per-folder message delta with the
resume URL as the cursor, headers first, MIME (``$value``) for the messages the engine
tracks, and categories (and a move) for the ones processed.

The delta asks for created messages only (``changeType=created``): our own categories,
read flags and deletions update messages, and none of them is new mail. Graph may replay a
message in a later round, and a round that starts again after a lost token lists the folder
from the start; the engine's dedupe by Message-ID makes both harmless.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, final
from urllib.parse import quote

import attrs

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports.graph._batch import BatchItem, inner_url
from serversync.adapters.transports.graph._client import IMMUTABLE_IDS, GraphClient
from serversync.adapters.transports.graph._errors import SyncStateLostError
from serversync.adapters.transports.graph._headers import (
    HEADER_SELECT,
    MAPI_HEADER_PROPERTIES,
    header_block,
    parse_graph_time,
)
from serversync.adapters.transports.graph._limits import restart_delay
from serversync.errors import (
    ConfigurationError,
    MessageRejectedError,
    SyncError,
    TransientError,
)
from serversync.model import (
    INBOX,
    Checkpoint,
    GraphCheckpoint,
    IncomingBatch,
    Mailbox,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
)
from serversync.ports import IncomingMailSession
from serversync.settings import Timeouts

__all__ = ["DELTA_QUERY", "MARK_PROPERTY", "GraphIncomingSession", "IncomingOptions"]

logger = logging.getLogger("serversync.adapters.transports.graph")

MARK_PROPERTY: Final = "String {6A4E3B9C-2F0D-4C47-9F3B-5E1D8C7A2B10} Name ServerSyncMark"
"""The named extended property on each processed message: ``tracked`` or ``undeliverable``."""
DELTA_QUERY: Final = "messages-created-v1"
"""Names the delta query below; a cursor of another query starts a new round."""
# Delta pages read per listing, at most.
_MAX_PAGES: Final = 20
_SPECIAL: Final = {
    "sentitems": "\\Sent",
    "drafts": "\\Drafts",
    "deleteditems": "\\Trash",
    "junkemail": "\\Junk",
    "archive": "\\Archive",
}
_FOLDER_SELECT: Final = "id,displayName,parentFolderId,childFolderCount"


@attrs.frozen(kw_only=True)
class IncomingOptions:
    """How processed messages are tagged and where undeliverable ones go."""

    timeouts: Timeouts
    tracked_category: str
    undeliverable_category: str
    undeliverable_folder_name: str
    move_undeliverable: bool
    restart_jitter: timedelta = timedelta(seconds=10)
    random: Callable[[], float] = random.random


@attrs.frozen
class _Taken:
    row: dict[str, Any]
    after: GraphCheckpoint


def _received(row: dict[str, Any]) -> datetime:
    return parse_graph_time(row.get("receivedDateTime")) or datetime.min.replace(tzinfo=UTC)


@final
@documented_by(IncomingMailSession)
class GraphIncomingSession:
    """One mailbox read through Graph."""

    def __init__(self, client: GraphClient, *, mailbox: Mailbox, options: IncomingOptions) -> None:
        self._client = client
        self._mailbox = mailbox
        self._options = options
        self._user = f"users/{quote(mailbox.email_address, safe='@')}"
        # Rows listed in this session, by id: fetch_headers uses them instead of asking again.
        self._rows: dict[str, dict[str, Any]] = {}
        self._undeliverable: str | None = None
        self._inbox_id: str | None = None

    def _folder_path(self, folder: str) -> str:
        return f"{self._user}/mailFolders/{'inbox' if folder == INBOX else quote(folder, safe='')}"

    async def _json(
        self, method: str, path: str, *, what: str, item: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self._client.request(
            method,
            path,
            what=what,
            deadline=self._options.timeouts.command,
            # Reads, and PATCHes that set the same categories again, are safe to repeat.
            idempotent=method in ("GET", "PATCH"),
            item=item,
            **kwargs,
        )
        body = response.json() if response.content else {}
        return body if isinstance(body, dict) else {}

    async def probe(self) -> None:
        """One cheap request that proves the token and the mailbox (403/404 say why not)."""
        inbox = await self._json(
            "GET",
            f"{self._user}/mailFolders/inbox",
            what="opening the Inbox",
            params={"$select": "id"},
        )
        self._inbox_id = str(inbox.get("id") or "") or None

    # -- folders ------------------------------------------------------------------------------

    async def list_folders(self) -> Sequence[RemoteFolder]:
        special = await self._special_folders()
        if self._inbox_id is None:
            await self.probe()
        inbox_id = self._inbox_id
        rows = await self._folder_tree()
        listed = {str(r["id"]) for r in rows}
        folders: list[RemoteFolder] = []
        for f in rows:
            folder_id = str(f["id"])
            parent = str(f.get("parentFolderId") or "") or None
            if parent not in listed:
                parent = None  # under the top of the mailbox, which is not listed
            folders.append(
                RemoteFolder(
                    id=INBOX if folder_id == inbox_id else folder_id,
                    name=str(f.get("displayName") or ""),
                    parent_id=INBOX if parent == inbox_id else parent,
                    special_use=special.get(folder_id),
                )
            )
        if not any(f.id == INBOX for f in folders):
            folders.insert(0, RemoteFolder(id=INBOX, name="Inbox"))
        return folders

    async def _special_folders(self) -> dict[str, str]:
        """The ids of the well-known folders with a special use, read in one batch (a
        mailbox may lack one: no archive)."""
        names = list(_SPECIAL)
        answers = await self._client.batch(
            [
                BatchItem(
                    id=name,
                    method="GET",
                    url=inner_url(f"{self._user}/mailFolders/{name}", {"$select": "id"}),
                )
                for name in names
            ],
            what="finding the well-known folders",
            deadline=self._options.timeouts.command,
            item=False,
        )
        special: dict[str, str] = {}
        for name in names:
            answer = answers[name]
            if isinstance(answer, MessageRejectedError | ConfigurationError):
                continue  # that folder does not exist here
            if isinstance(answer, SyncError):
                raise answer
            if isinstance(answer.body, dict) and answer.body.get("id"):
                special[str(answer.body["id"])] = _SPECIAL[name]
        return special

    async def _folder_tree(self) -> list[dict[str, Any]]:
        """Every folder under the top of the mailbox: one folder delta round (folder ids
        never change, so tracking rules key on them), then the children of any folder
        whose children the round did not list (a round of top-level folders only, which
        some tenants are reported to give)."""
        rows: dict[str, dict[str, Any]] = {}
        url: str | None = self._client.url(
            f"{self._user}/mailFolders/delta?$select={_FOLDER_SELECT}"
        )
        while url is not None:
            response = await self._client.request(
                "GET",
                url,
                what="reading the folder tree",
                deadline=self._options.timeouts.command,
                prefer=(f"odata.maxpagesize={self._client.options.page_size}",),
                idempotent=True,
            )
            page = response.json()
            page = page if isinstance(page, dict) else {}
            for f in page.get("value") or ():
                if isinstance(f, dict) and f.get("id") and "@removed" not in f:
                    rows[str(f["id"])] = f
            link = page.get("@odata.nextLink")
            url = self._client.url(str(link)) if link else None
        pending = [f for f in rows.values() if self._children_missing(f, rows)]
        while pending:
            parent = pending.pop(0)
            children_url: str | None = f"{self._user}/mailFolders/{parent['id']}/childFolders"
            first = True
            while children_url is not None:
                page = await self._json(
                    "GET",
                    children_url,
                    what="listing folders",
                    params={"$select": _FOLDER_SELECT, "$top": "100"} if first else None,
                )
                first = False
                for f in page.get("value") or ():
                    if isinstance(f, dict) and f.get("id") and str(f["id"]) not in rows:
                        rows[str(f["id"])] = f
                        if int(f.get("childFolderCount") or 0) > 0:
                            pending.append(f)
                link = page.get("@odata.nextLink")
                children_url = str(link) if link else None
        return list(rows.values())

    @staticmethod
    def _children_missing(folder: dict[str, Any], rows: dict[str, dict[str, Any]]) -> bool:
        listed = sum(1 for f in rows.values() if f.get("parentFolderId") == folder["id"])
        return int(folder.get("childFolderCount") or 0) > listed

    # -- listing ------------------------------------------------------------------------------

    def _first_url(self, folder: str) -> str:
        query = "&".join(
            (
                "$select=" + ",".join(HEADER_SELECT),
                "changeType=created",
            )
        )
        return self._client.url(f"{self._folder_path(folder)}/messages/delta?{query}")

    async def _page(self, url: str, folder: str) -> dict[str, Any]:
        response = await self._client.request(
            "GET",
            url,
            what=f"reading the message delta of folder {folder}",
            deadline=self._options.timeouts.command,
            prefer=(f"odata.maxpagesize={self._client.options.page_size}", 'IdType="ImmutableId"'),
            idempotent=True,
        )
        body = response.json()
        return body if isinstance(body, dict) else {}

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        if checkpoint is not None and not isinstance(checkpoint, GraphCheckpoint):
            raise ConfigurationError(
                f"a Graph folder needs a Graph cursor, not {type(checkpoint).__name__}",
                mailbox_id=self._mailbox.id,
            )
        reset = False
        if checkpoint is None or checkpoint.query != DELTA_QUERY:
            reset = checkpoint is not None  # a new query: a new round, said as a reset
            cursor = GraphCheckpoint(resume_url=self._first_url(folder), query=DELTA_QUERY)
        else:
            cursor = checkpoint
        taken: list[_Taken] = []
        complete = False
        end = cursor
        for _ in range(_MAX_PAGES):
            try:
                page = await self._page(cursor.resume_url, folder)
            except SyncStateLostError:
                if taken:
                    break  # keep what was listed; the next listing meets the loss
                if reset:
                    raise
                # Graph forgot the round (410, syncStateNotFound): list the folder again from
                # the start; dedupe by Message-ID keeps the replay free of duplicates.
                logger.info(
                    "mailbox %s folder %s: Graph lost the delta state; starting a new round",
                    self._mailbox.id,
                    folder,
                )
                self._client.stats._count("rounds_restarted")
                await self._before_restart()
                cursor = GraphCheckpoint(resume_url=self._first_url(folder), query=DELTA_QUERY)
                end, reset = cursor, True
                continue
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            link = str(next_link or delta_link or "")
            if not link:
                raise TransientError(
                    f"folder {folder}: a delta page without nextLink or deltaLink",
                    mailbox_id=self._mailbox.id,
                )
            self._client.url(link)  # refuses a link to another host before anything is kept
            after_page = GraphCheckpoint(
                resume_url=link,
                round_complete=bool(delta_link) and not next_link,
                query=DELTA_QUERY,
            )
            rows = [
                r
                for r in page.get("value") or ()
                if isinstance(r, dict)
                and "@removed" not in r
                and r.get("id")
                and str(r["id"]) not in cursor.done
                and not r.get("isDraft")
            ]
            rows.sort(key=_received)
            room = limit - len(taken)
            done = set(cursor.done)
            for n, row in enumerate(rows[:room]):
                done.add(str(row["id"]))
                last = n == len(rows) - 1
                after = after_page if last else attrs.evolve(cursor, done=frozenset(done))
                taken.append(_Taken(row, after))
            if len(rows) > room:
                end = taken[-1].after if taken else cursor
                break
            end = cursor = after_page
            if after_page.round_complete:
                complete = True
                break
            if len(taken) >= limit:
                break
        for t in taken:
            self._rows[str(t.row["id"])] = t.row
        refs = tuple(
            RemoteMessageRef(
                folder=folder,
                remote_id=str(t.row["id"]),
                received_at=parse_graph_time(t.row.get("receivedDateTime")),
            )
            for t in taken
        )
        return IncomingBatch(
            folder=folder,
            refs=refs,
            checkpoints=tuple(t.after for t in taken),
            end=end,
            reset=reset,
            more=not complete,
        )

    async def _before_restart(self) -> None:
        """Wait a random part of the restart window before listing a folder from the start,
        so that mailboxes whose tokens Graph dropped together spread their full listings
        (Microsoft's advice); at most a quarter of the listing's deadline."""
        window = min(self._options.restart_jitter, self._options.timeouts.command / 4)
        wait = restart_delay(window, random=self._options.random)
        if wait > timedelta(0):
            await asyncio.sleep(wait.total_seconds())

    # -- fetching -----------------------------------------------------------------------------

    def _message_path(self, remote_id: str) -> str:
        return f"{self._user}/messages/{quote(remote_id, safe='')}"

    def _header_params(self) -> dict[str, str]:
        expand = " or ".join(f"id eq '{p}'" for p in MAPI_HEADER_PROPERTIES)
        return {
            "$select": ",".join(HEADER_SELECT),
            "$expand": f"singleValueExtendedProperties($filter={expand})",
        }

    async def _batch_rows(
        self,
        remote_ids: Sequence[str],
        *,
        what: str,
        params: dict[str, str] | None = None,
        method: str = "GET",
        bodies: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Any] | None]:
        """One request per message in ``$batch``es: each message's answer (``None`` when
        it is gone); any other failure is raised."""
        items = [
            BatchItem(
                id=str(n),
                method=method,
                url=inner_url(self._message_path(remote_id), params),
                body=(bodies or {}).get(remote_id),
                headers={"Prefer": IMMUTABLE_IDS},
            )
            for n, remote_id in enumerate(remote_ids)
        ]
        answers = await self._client.batch(
            items, what=what, deadline=self._options.timeouts.command
        )
        out: dict[str, dict[str, Any] | None] = {}
        for item, remote_id in zip(items, remote_ids, strict=True):
            answer = answers[item.id]
            if isinstance(answer, MessageRejectedError):
                out[remote_id] = None
            elif isinstance(answer, SyncError):
                raise answer
            else:
                out[remote_id] = answer.body if isinstance(answer.body, dict) else {}
        return out

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        # Rows listed with their transport headers need nothing more. The others (not
        # listed in this session, partial, or without transport headers: a Sent Items
        # copy) are read again with the MAPI threading headers, batched.
        missing = list(
            dict.fromkeys(
                r.remote_id
                for r in refs
                if not (self._rows.get(r.remote_id) or {}).get("internetMessageHeaders")
            )
        )
        read: dict[str, dict[str, Any] | None] = {}
        if missing:
            read = await self._batch_rows(
                missing,
                what=f"reading the headers of {len(missing)} messages",
                params=self._header_params(),
            )
        out = []
        for ref in refs:
            row = read[ref.remote_id] if ref.remote_id in read else self._rows[ref.remote_id]
            # A message gone since it was listed: an empty block, recorded as unreadable.
            out.append(RawHeaders(ref=ref, data=b"" if row is None else header_block(row)))
        self._client.stats._count("headers_fetched", sum(1 for h in out if h.data))
        return out

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        response = await self._client.request(
            "GET",
            f"{self._message_path(ref.remote_id)}/$value",
            what=f"fetching message {ref.remote_id}",
            deadline=self._options.timeouts.fetch,
            idempotent=True,
            item=True,
        )
        if not response.content:
            raise MessageRejectedError(
                f"fetching message {ref.remote_id}: Graph returned no MIME content",
                mailbox_id=self._mailbox.id,
            )
        self._client.stats._count("messages_fetched")
        return RawMessage(ref=ref, data=response.content)

    # -- marking ------------------------------------------------------------------------------

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        options = self._options
        category = (
            options.tracked_category
            if mark is RemoteMark.TRACKED
            else options.undeliverable_category
        )
        move = mark is RemoteMark.UNDELIVERABLE and options.move_undeliverable
        remote_ids = list(dict.fromkeys(r.remote_id for r in refs))
        unknown = [i for i in remote_ids if "categories" not in (self._rows.get(i) or {})]
        current: dict[str, dict[str, Any] | None] = {
            i: self._rows[i] for i in remote_ids if i not in unknown
        }
        if unknown:
            current |= await self._batch_rows(
                unknown,
                what=f"reading the categories of {len(unknown)} messages",
                params={"$select": "id,categories"},
            )
        # Categories are one list: each message keeps the ones it had. The extended property
        # says the same by a name no user renames (categories are display names).
        patches: dict[str, Any] = {}
        for remote_id in remote_ids:
            row = current.get(remote_id)
            if row is None:
                # Moved or deleted meanwhile. The cursor, not the tag, keeps a message from
                # being imported again, so the others go on.
                logger.info(
                    "mailbox %s: message %s is gone; not marked", self._mailbox.id, remote_id
                )
                continue
            categories = [str(c) for c in row.get("categories") or ()]
            if category not in categories:
                patches[remote_id] = {
                    "categories": [*categories, category],
                    "singleValueExtendedProperties": [{"id": MARK_PROPERTY, "value": str(mark)}],
                }
        if patches:
            done = await self._batch_rows(
                list(patches),
                what=f"tagging {len(patches)} messages {category!r}",
                method="PATCH",
                bodies=patches,
            )
            for remote_id, body in patches.items():
                if done.get(remote_id) is None:
                    logger.info(
                        "mailbox %s: message %s is gone; not marked", self._mailbox.id, remote_id
                    )
                    current[remote_id] = None
                elif remote_id in self._rows:
                    self._rows[remote_id] = {
                        **self._rows[remote_id],
                        "categories": body["categories"],
                    }
        if not move:
            return
        for remote_id in remote_ids:
            if current.get(remote_id) is None:
                continue
            try:
                target = await self._undeliverable_folder()
                await self._json(
                    "POST",
                    f"{self._message_path(remote_id)}/move",
                    what=f"moving message {remote_id} to the undeliverable folder",
                    item=True,
                    json={"destinationId": target},
                )
            except MessageRejectedError as exc:
                logger.info("mailbox %s: could not move a message: %s", self._mailbox.id, exc)

    async def _undeliverable_folder(self) -> str:
        """The mailbox's Undeliverable folder: its recorded id, else the folder of that name
        under the Inbox, created when missing."""
        if self._undeliverable is not None:
            return self._undeliverable
        if self._mailbox.undeliverable_folder:
            self._undeliverable = self._mailbox.undeliverable_folder
            return self._undeliverable
        name = self._options.undeliverable_folder_name
        children = f"{self._user}/mailFolders/inbox/childFolders"
        found = await self._find_child(children, name)
        if found is None:
            try:
                created = await self._json(
                    "POST", children, what=f"creating folder {name!r}", json={"displayName": name}
                )
                found = str(created["id"])
            except ConfigurationError:
                found = await self._find_child(children, name)  # created meanwhile (409)
                if found is None:
                    raise
        self._undeliverable = found
        return found

    async def _find_child(self, children: str, name: str) -> str | None:
        escaped = name.replace("'", "''")
        page = await self._json(
            "GET",
            children,
            what=f"finding folder {name!r}",
            params={"$filter": f"displayName eq '{escaped}'", "$select": "id,displayName"},
        )
        for f in page.get("value") or ():
            return str(f["id"])
        return None
