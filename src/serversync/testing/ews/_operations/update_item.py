"""UpdateItem: SetItemField, AppendToItemField and DeleteItemField, with change-key
conflict detection per ConflictResolution, and sending a draft or a meeting update.

A conflict is an update from a stale change key (the item changed since the client read
it). MS-OXWSCORE 3.1.4.9.4.1: NeverOverwrite fails with ErrorIrresolvableConflict;
AutoResolve "will in most cases overwrite the existing value", so here it always does;
AlwaysOverwrite overwrites. ConflictResults counts the properties overwritten although they
had changed on the server since the client's change key.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._invitations import SENDING_MODES, send_meeting_mail
from serversync.testing.ews._items import (
    after_update,
    apply_update,
    assign_attachment_ids,
    send_message,
)
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._schema import CALENDAR, MESSAGE, element_for_field_uri
from serversync.testing.ews._store import Item, changekey_version
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

OPERATION = "UpdateItem"
_PATHS = ("FieldURI", "IndexedFieldURI", "ExtendedFieldURI")


def _field_name(update: ET.Element) -> str:
    path = next((c for c in update if local_name(c.tag) in _PATHS), None)
    return element_for_field_uri(path.get("FieldURI", "")) if path is not None else ""


def _client_version(item: Item, id_elem: ET.Element) -> int | None:
    """The item version the client last saw, from its change key; None without one."""
    changekey = id_elem.get("ChangeKey")
    if not changekey:
        return None
    if local_name(id_elem.tag) == "OccurrenceItemId":
        # The change key is the master's: it guards the series, not the occurrence.
        return None
    version = changekey_version(item.id, changekey)
    if version is None or version > item.version:
        raise EwsError("ErrorInvalidChangeKey", "The change key is invalid.")
    return version


def _update_one(
    change: ET.Element, request: ET.Element, ctx: OperationContext
) -> tuple[ET.Element, int]:
    """The updated item's new id element and the number of conflicting properties."""
    id_elem = next((c for c in change if local_name(c.tag).endswith("ItemId")), None)
    if id_elem is None:
        raise EwsError("ErrorInvalidIdEmpty", "The item change names no item.")
    item = ctx.item(id_elem)
    seen = _client_version(item, id_elem)
    resolution = request.get("ConflictResolution", "AutoResolve")
    stale = seen is not None and seen < item.version
    if stale and resolution == "NeverOverwrite":
        raise EwsError(
            "ErrorIrresolvableConflict",
            "The operation can't be performed because the item has been changed "
            "since it was last read.",
        )
    updates = change.find(qname(T, "Updates"))
    changed: set[str] = set()
    conflicts = 0
    for update in updates if updates is not None else ():
        if stale and seen is not None and item.prop_versions.get(_field_name(update), 0) > seen:
            conflicts += 1
        changed.add(apply_update(item, update))
    mailbox = ctx.mailbox_of(item)
    if changed:
        after_update(item, changed, ctx.store.now())
        if item.master_id is not None:
            # Changed on its own, an occurrence no longer follows its master.
            item.props["CalendarItemType"] = t("CalendarItemType", "Exception")
        elif changed & {"Recurrence", "Start", "StartTimeZone"} and ctx.store.has_series(item):
            ctx.store.reset_series(item)
        ctx.store.touch_item(item, changed)
        if "Attachments" in changed:
            assign_attachment_ids(item)
    disposition = request.get("MessageDisposition", "SaveOnly")
    if item.kind == MESSAGE and disposition in ("SendOnly", "SendAndSaveCopy"):
        saved = child(request, "SavedItemFolderId")
        folder = ctx.folder(saved[0]) if saved is not None and len(saved) else None
        if folder is None and disposition == "SendAndSaveCopy":
            folder = mailbox.folders[mailbox.distinguished["sentitems"]]
        send_message(ctx, mailbox, item.props, item.mime, disposition=disposition, save_in=folder)
        ctx.store.remove_item(item)
        return m("Items"), conflicts
    if item.kind == CALENDAR and changed:
        mode = request.get("SendMeetingInvitationsOrCancellations", "SendToNone")
        if mode in SENDING_MODES:
            sequence = int(item.text("AppointmentSequenceNumber", "0")) + 1
            item.props["AppointmentSequenceNumber"] = t("AppointmentSequenceNumber", str(sequence))
            send_meeting_mail(ctx, item, mode, cancel=False)
    return m(
        "Items",
        children=[
            t(item.kind, children=[t("ItemId", attrs={"Id": item.id, "ChangeKey": item.changekey})])
        ],
    ), conflicts


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    changes = child(request, "ItemChanges")
    messages = []
    for change in changes if changes is not None else ():
        try:
            items, conflicts = _update_one(change, request, ctx)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        results = m("ConflictResults", children=[t("Count", str(conflicts))])
        messages.append(success_message(OPERATION, [items, results]))
    return response(OPERATION, messages)
