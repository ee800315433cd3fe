"""MoveItem: items to another folder of the same mailbox, each under a new id."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._xml import EwsError, error_message, m, success_message, t

OPERATION = "MoveItem"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    ids = child(request, "ItemIds")
    targets = ctx.folders(child(request, "ToFolderId"))
    count = len(ids) if ids is not None else 0
    if len(targets) != 1:
        error = EwsError("ErrorInvalidRequest", "MoveItem needs exactly one ToFolderId.")
        return response(OPERATION, [error_message(OPERATION, error)] * max(count, 1))
    destination = targets[0]
    messages = []
    for elem in ids if ids is not None else ():
        try:
            if isinstance(destination, EwsError):
                raise destination
            item = ctx.item(elem)
            if item.mailbox != destination.mailbox:
                raise EwsError(
                    "ErrorMoveCopyFailed", "The EWS test server moves items within a mailbox only."
                )
            moved = ctx.store.move_item(item, destination)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        new_id = t("ItemId", attrs={"Id": moved.id, "ChangeKey": moved.changekey})
        messages.append(
            success_message(OPERATION, [m("Items", children=[t(moved.kind, children=[new_id])])])
        )
    return response(OPERATION, messages)
