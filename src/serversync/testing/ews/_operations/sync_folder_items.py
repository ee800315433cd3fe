"""SyncFolderItems: the changes to a folder's items since a sync state, as summaries, at
most MaxChangesReturned (and never more than 512) per call."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, int_text, response
from serversync.testing.ews._render import parse_shape, render_item
from serversync.testing.ews._store import ChangeKind, SyncPosition, fold_changes
from serversync.testing.ews._xml import (
    EwsError,
    error_message,
    m,
    success_message,
    t,
    text_of,
    xml_bool,
)

OPERATION = "SyncFolderItems"
MAX_CHANGES = 512


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    shape = parse_shape(child(request, "ItemShape"))
    try:
        target = child(request, "SyncFolderId")
        if target is None or not len(target):
            raise EwsError("ErrorInvalidRequest", "SyncFolderItems needs a SyncFolderId.")
        folder = ctx.folder(target[0])
        mailbox = ctx.store.mailbox_of_folder(folder)
        token = text_of(child(request, "SyncState")).strip()
        since = (
            ctx.store.read_sync_token(token, folder_id=folder.id, hierarchy=False).seq
            if token
            else 0
        )
    except EwsError as error:
        # As Exchange answers it: the error, an empty SyncState and "last in range".
        extra = [m("SyncState"), m("IncludesLastItemInRange", "true")]
        return response(OPERATION, [error_message(OPERATION, error, extra)])
    limit = min(max(int_text(request, "MaxChangesReturned", MAX_CHANGES), 1), MAX_CHANGES)
    ignore_elem = child(request, "Ignore")
    ignore = (
        frozenset(e.get("Id", "") for e in ignore_elem) if ignore_elem is not None else frozenset()
    )
    folded, position, complete = fold_changes(folder.log, since, limit, ignore)
    changes = []
    for kind, item_id in folded:
        item = mailbox.items.get(item_id)
        if kind is ChangeKind.DELETE or item is None:
            changes.append(t("Delete", children=[t("ItemId", attrs={"Id": item_id})]))
        elif kind is ChangeKind.READ_FLAG:
            changes.append(
                t(
                    "ReadFlagChange",
                    children=[
                        t("ItemId", attrs={"Id": item.id, "ChangeKey": item.changekey}),
                        t("IsRead", item.text("IsRead", "false")),
                    ],
                )
            )
        else:
            rendered = render_item(item, mailbox, shape, summary=True)
            changes.append(t(kind.value, children=[rendered]))
    state = ctx.store.sync_token(SyncPosition(mailbox.address, folder.id, False, position))
    return response(
        OPERATION,
        [
            success_message(
                OPERATION,
                [
                    m("SyncState", state),
                    m("IncludesLastItemInRange", xml_bool(complete)),
                    m("Changes", children=changes),
                ],
            )
        ],
    )
