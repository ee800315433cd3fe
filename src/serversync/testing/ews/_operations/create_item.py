"""CreateItem: messages (SaveOnly, SendOnly, SendAndSaveCopy), calendar items (with meeting
requests to attendees when asked), contacts and tasks."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._invitations import send_meeting_mail
from serversync.testing.ews._items import assign_attachment_ids, new_item, send_message
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._schema import CALENDAR, DEFAULT_FOLDER_FOR_KIND, ITEM_KINDS, MESSAGE
from serversync.testing.ews._store import Folder, Item
from serversync.testing.ews._xml import (
    EwsError,
    T,
    error_message,
    local_name,
    m,
    qname,
    success_message,
    t,
)

OPERATION = "CreateItem"


def _created(item: Item) -> ET.Element:
    """The new item's id, and its attachments' ids, as CreateItem answers them."""
    children = [t("ItemId", attrs={"Id": item.id, "ChangeKey": item.changekey})]
    attachments = item.props.get("Attachments")
    if attachments is not None:
        children.append(
            t(
                "Attachments",
                children=[
                    t(local_name(a.tag), children=[a.find(qname(T, "AttachmentId"))])  # type: ignore[list-item]
                    for a in attachments
                ],
            )
        )
    return m("Items", children=[t(item.kind, children=children)])


def _create_one(
    elem: ET.Element, saved_folder: Folder | None, request: ET.Element, ctx: OperationContext
) -> ET.Element:
    kind = local_name(elem.tag)
    if kind not in ITEM_KINDS:
        raise EwsError(
            "ErrorInvalidOperation", f"The EWS test server does not create {kind} items."
        )
    disposition = request.get("MessageDisposition", "SaveOnly") if kind == MESSAGE else "SaveOnly"
    if saved_folder is not None:
        mailbox = ctx.store.mailbox_of_folder(saved_folder)
    else:
        mailbox = ctx.mailbox_for(None)
        default = "sentitems" if disposition == "SendAndSaveCopy" else DEFAULT_FOLDER_FOR_KIND[kind]
        saved_folder = mailbox.folders[mailbox.distinguished[default]]
    if disposition == "SendOnly":
        props, mime = new_item(ctx, saved_folder, elem, draft=False)
        send_message(ctx, mailbox, props, mime, disposition=disposition, save_in=None)
        return m("Items")
    props, mime = new_item(ctx, saved_folder, elem, draft=disposition == "SaveOnly")
    if kind == MESSAGE and disposition == "SendAndSaveCopy":
        send_message(ctx, mailbox, props, mime, disposition=disposition, save_in=saved_folder)
        return m("Items")
    item = ctx.store.add_item(saved_folder, kind, props, mime=mime)
    assign_attachment_ids(item)
    if kind == CALENDAR:
        send_meeting_mail(
            ctx, item, request.get("SendMeetingInvitations", "SendToNone"), cancel=False
        )
    return _created(item)


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    saved = child(request, "SavedItemFolderId")
    items = child(request, "Items")
    messages = []
    try:
        saved_folder = ctx.folder(saved[0]) if saved is not None and len(saved) else None
    except EwsError as error:
        count = len(items) if items is not None else 0
        return response(OPERATION, [error_message(OPERATION, error)] * max(count, 1))
    for elem in items if items is not None else ():
        try:
            messages.append(
                success_message(OPERATION, [_create_one(elem, saved_folder, request, ctx)])
            )
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
    return response(OPERATION, messages)
