"""DeleteItem: HardDelete, SoftDelete, or MoveToDeletedItems (the item moves to Deleted
Items under a new id); an organizer's deleted meeting can send cancellations. Deleting an
occurrence of a series removes it from the series."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._invitations import send_meeting_mail
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._schema import CALENDAR
from serversync.testing.ews._xml import EwsError, error_message, success_message

OPERATION = "DeleteItem"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    how = request.get("DeleteType", "HardDelete")
    cancellations = request.get("SendMeetingCancellations", "SendToNone")
    ids = child(request, "ItemIds")
    messages = []
    for elem in ids if ids is not None else ():
        try:
            item = ctx.item(elem)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        if item.kind == CALENDAR:
            send_meeting_mail(ctx, item, cancellations, cancel=True)
        mailbox = ctx.mailbox_of(item)
        trash = mailbox.folders[mailbox.distinguished["deleteditems"]]
        if item.master_id is not None:
            # An occurrence leaves its series (DeletedOccurrences); nothing moves.
            ctx.store.remove_item(item)
        elif how == "MoveToDeletedItems" and item.folder_id != trash.id:
            ctx.store.move_item(item, trash)
        else:
            ctx.store.remove_item(item)
        messages.append(success_message(OPERATION))
    return response(OPERATION, messages)
