"""SyncFolderHierarchy: the folders created, changed (renamed, moved) and deleted below a
folder since a sync state."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._render import parse_shape, render_folder
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

OPERATION = "SyncFolderHierarchy"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    shape = parse_shape(child(request, "FolderShape"))
    try:
        target = child(request, "SyncFolderId")
        if target is not None and len(target):
            top = ctx.folder(target[0])
            mailbox = ctx.store.mailbox_of_folder(top)
        else:
            mailbox = ctx.mailbox_for(None)
            top = mailbox.folders[mailbox.root_id]
        token = text_of(child(request, "SyncState")).strip()
        since = (
            ctx.store.read_sync_token(token, folder_id=top.id, hierarchy=True).seq if token else 0
        )
    except EwsError as error:
        # As Exchange answers it: the error, an empty SyncState and "last in range".
        extra = [m("SyncState"), m("IncludesLastFolderInRange", "true")]
        return response(OPERATION, [error_message(OPERATION, error, extra)])
    scoped = [c for c in mailbox.hierarchy_log if top.id in c.scope]
    folded, _, _ = fold_changes(scoped, since, len(scoped) + 1)
    # All changes are answered at once, so the new state is the end of the log.
    position = max(since, mailbox.hierarchy_log[-1].seq if mailbox.hierarchy_log else 0)
    changes = []
    for kind, folder_id in folded:
        folder = mailbox.folders.get(folder_id)
        if kind is ChangeKind.DELETE or folder is None:
            changes.append(t("Delete", children=[t("FolderId", attrs={"Id": folder_id})]))
        else:
            changes.append(t(kind.value, children=[render_folder(folder, mailbox, shape)]))
    state = ctx.store.sync_token(SyncPosition(mailbox.address, top.id, True, position))
    return response(
        OPERATION,
        [
            success_message(
                OPERATION,
                [
                    m("SyncState", state),
                    m("IncludesLastFolderInRange", xml_bool(True)),
                    m("Changes", children=changes),
                ],
            )
        ],
    )
