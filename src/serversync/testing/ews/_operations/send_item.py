"""SendItem: send saved drafts, keeping a copy in Sent Items (or SavedItemFolderId) when
SaveItemToFolder is true."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._items import send_message
from serversync.testing.ews._operations._common import child, flag, response
from serversync.testing.ews._schema import MESSAGE
from serversync.testing.ews._xml import EwsError, error_message, success_message

OPERATION = "SendItem"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    save = flag(request.get("SaveItemToFolder"), default=True)
    saved = child(request, "SavedItemFolderId")
    ids = child(request, "ItemIds")
    messages = []
    for elem in ids if ids is not None else ():
        try:
            item = ctx.item(elem)
            if item.kind != MESSAGE:
                raise EwsError("ErrorInvalidItemForOperationSendItem", "Only messages can be sent.")
            mailbox = ctx.mailbox_of(item)
            folder = None
            if save:
                folder = (
                    ctx.folder(saved[0])
                    if saved is not None and len(saved)
                    else mailbox.folders[mailbox.distinguished["sentitems"]]
                )
            send_message(
                ctx, mailbox, item.props, item.mime, disposition="SendItem", save_in=folder
            )
            ctx.store.remove_item(item)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        messages.append(success_message(OPERATION))
    return response(OPERATION, messages)
