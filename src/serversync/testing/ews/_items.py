"""Items as CreateItem and UpdateItem change them: properties from request elements, the
defaults Exchange fills in, field updates, values for restrictions, and sending."""

from __future__ import annotations

import base64
import copy
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._mime import (
    addresses_in,
    mailbox_element,
    props_from_mime,
    recipients_of,
)
from serversync.testing.ews._render import Shape, message_mime, render_item
from serversync.testing.ews._schema import (
    CALENDAR,
    CONTACT,
    ITEM_CLASS_FOR_KIND,
    MESSAGE,
    TASK,
    element_for_field_uri,
)
from serversync.testing.ews._store import Folder, Item, Mailbox
from serversync.testing.ews._xml import (
    EwsError,
    T,
    local_name,
    parse_datetime,
    qname,
    t,
    text_of,
    xml_bool,
    xml_datetime,
)

__all__ = [
    "MIME_PROPERTIES",
    "after_update",
    "apply_update",
    "assign_attachment_ids",
    "item_values",
    "new_item",
    "normalize",
    "send_message",
]

_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")
# Changing one of these makes Exchange produce new MIME content for the message.
MIME_PROPERTIES = frozenset(
    {
        "Subject",
        "Body",
        "ToRecipients",
        "CcRecipients",
        "BccRecipients",
        "From",
        "Sender",
        "ReplyTo",
        "Importance",
        "InternetMessageId",
        "InReplyTo",
        "References",
        "Attachments",
    }
)
_TEXT_ELEMENTS = frozenset({"Subject", "Body", "UniqueBody", "TextBody", "Location", "Notes"})
_BOOLEAN_NAMES = re.compile(
    r"^(Is|Has)[A-Z]|^(ReminderIsSet|MeetingRequestWasSent|AllowNewTimeProposal)$"
)


def normalize(elem: ET.Element) -> ET.Element:
    """A copy in the canonical form Exchange stores and returns: xs:dateTime leaves in UTC,
    xs:boolean leaves as ``true``/``false`` (clients may send ``1``/``0``)."""
    out = copy.deepcopy(elem)
    for node in out.iter():
        name = local_name(node.tag)
        if name in _TEXT_ELEMENTS or len(node) or not node.text:
            continue
        if node.text in ("1", "0") and _BOOLEAN_NAMES.match(name):
            node.text = "true" if node.text == "1" else "false"
        elif _DATETIME.match(node.text.strip()):
            moment = parse_datetime(node.text)
            if moment is not None:
                node.text = xml_datetime(moment)
    return out


def _owner_mailbox(mailbox: Mailbox) -> ET.Element:
    return mailbox_element(mailbox.display_name, mailbox.address, local=True)


def assign_attachment_ids(item: Item) -> None:
    """Give every attachment without one an AttachmentId under this item."""
    attachments = item.props.get("Attachments")
    if attachments is None:
        return
    for attachment in attachments:
        if attachment.find(qname(T, "AttachmentId")) is None:
            attachment.insert(
                0,
                t(
                    "AttachmentId",
                    attrs={
                        "Id": base64.b64encode(b"SSA" + secrets.token_bytes(24)).decode(),
                        "RootItemId": item.id,
                        "RootItemChangeKey": item.changekey,
                    },
                ),
            )


def _has_attachments(props: dict[str, ET.Element]) -> bool:
    attachments = props.get("Attachments")
    if attachments is None:
        return False
    return any(text_of(a.find(qname(T, "IsInline"))) != "true" for a in attachments)


def _fill_defaults(kind: str, props: dict[str, ET.Element], mailbox: Mailbox) -> None:
    def default(name: str, value: str) -> None:
        if name not in props:
            props[name] = t(name, value)

    default("ItemClass", ITEM_CLASS_FOR_KIND[kind])
    default("Subject", "")
    default("Sensitivity", "Normal")
    default("Importance", "Normal")
    props.setdefault("HasAttachments", t("HasAttachments", xml_bool(_has_attachments(props))))
    if kind == MESSAGE:
        props.setdefault("From", t("From", children=[_owner_mailbox(mailbox)]))
        props.setdefault("Sender", t("Sender", children=[copy.deepcopy(props["From"][0])]))
        domain = mailbox.address.rpartition("@")[2] or "localhost"
        default("InternetMessageId", f"<{uuid.uuid4().hex}@{domain}>")
        default("IsRead", "true")
    elif kind == CALENDAR:
        attendees = any(n in props for n in ("RequiredAttendees", "OptionalAttendees", "Resources"))
        default("UID", uuid.uuid4().hex.upper())
        default("IsAllDayEvent", "false")
        default("LegacyFreeBusyStatus", "Busy")
        default("IsMeeting", xml_bool(attendees))
        default("IsCancelled", "false")
        default("IsRecurring", "false")
        default("CalendarItemType", "RecurringMaster" if "Recurrence" in props else "Single")
        default("MyResponseType", "Organizer")
        props.setdefault("Organizer", t("Organizer", children=[_owner_mailbox(mailbox)]))
        default("AppointmentSequenceNumber", "0")
        default("AppointmentState", "1" if attendees else "0")
    elif kind == CONTACT:
        given, surname = text_of(props.get("GivenName")), text_of(props.get("Surname"))
        emails = props.get("EmailAddresses")
        first_email = text_of(emails[0]) if emails is not None and len(emails) else ""
        display = (
            " ".join(p for p in (given, surname) if p)
            or text_of(props.get("CompanyName"))
            or first_email
        )
        default("DisplayName", display)
        default("FileAs", ", ".join(p for p in (surname, given) if p) or display)
    elif kind == TASK:
        default("Status", "NotStarted")
        default("PercentComplete", "0")
        default("IsComplete", "false")
        default("ChangeCount", "1")
        default("DelegationState", "NoMatch")


def new_item(
    ctx: OperationContext, folder: Folder, elem: ET.Element, *, draft: bool
) -> tuple[dict[str, ET.Element], bytes | None]:
    """Properties (and MIME content, when the client sent some) for an item to create
    from a request's item element."""
    kind = local_name(elem.tag)
    mailbox = ctx.store.mailbox_of_folder(folder)
    props: dict[str, ET.Element] = {}
    mime: bytes | None = None
    for child in elem:
        name = local_name(child.tag)
        if name == "MimeContent":
            mime = base64.b64decode(text_of(child))
            continue
        props[name] = normalize(child)
    if mime is not None and kind == MESSAGE:
        derived = props_from_mime(mime, is_local=ctx.is_local, is_read=True)
        derived.update(props)
        props = derived
    if kind == MESSAGE:
        props["IsDraft"] = t("IsDraft", xml_bool(draft))
    _fill_defaults(kind, props, mailbox)
    if mime is not None and kind == MESSAGE and not _has_message_id(mime):
        # Exchange gives MIME content without a Message-ID the one it assigns.
        mime = f"Message-ID: {text_of(props['InternetMessageId'])}\r\n".encode() + mime
    return props, mime


def _has_message_id(mime: bytes) -> bool:
    head = mime.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return re.search(rb"(?im)^message-id:", head) is not None


def _set_indexed(props: dict[str, ET.Element], name: str, uri: str, value: ET.Element) -> None:
    key_entry = value.find(qname(T, "Entry"))
    if key_entry is None:
        raise EwsError("ErrorInvalidPropertySet", f"SetItemField for {uri} has no entry.")
    key = key_entry.get("Key")
    container = props.setdefault(name, t(name))
    existing = next((e for e in container if e.get("Key") == key), None)
    if uri.count(":") == 2 and existing is not None:
        # A part of an address entry (contacts:PhysicalAddress:Street): replace that part.
        for part in key_entry:
            old = existing.find(part.tag)
            if old is not None:
                existing.remove(old)
            existing.append(copy.deepcopy(part))
        return
    if existing is not None:
        container.remove(existing)
    container.append(normalize(key_entry))


def _delete_indexed(props: dict[str, ET.Element], name: str, uri: str, index: str) -> None:
    container = props.get(name)
    if container is None:
        return
    entry = next((e for e in container if e.get("Key") == index), None)
    if entry is None:
        return
    if uri.count(":") == 2:
        part = entry.find(qname(T, uri.split(":")[2]))
        if part is not None:
            entry.remove(part)
        if len(entry):
            return
    container.remove(entry)
    if not len(container):
        del props[name]


def apply_update(item: Item, update: ET.Element) -> str:
    """Apply one SetItemField / AppendToItemField / DeleteItemField; the property it changed."""
    action = local_name(update.tag)
    path = next((c for c in update if local_name(c.tag) in ("FieldURI", "IndexedFieldURI")), None)
    if path is None:
        raise EwsError(
            "ErrorInvalidPropertyRequest", "The EWS test server stores no extended properties."
        )
    uri = path.get("FieldURI", "")
    name = element_for_field_uri(uri)
    indexed = local_name(path.tag) == "IndexedFieldURI"
    if action == "DeleteItemField":
        if indexed:
            _delete_indexed(item.props, name, uri, path.get("FieldIndex", ""))
        else:
            item.props.pop(name, None)
        return name
    holder = next(
        (c for c in update if local_name(c.tag) not in ("FieldURI", "IndexedFieldURI")), None
    )
    value = holder.find(qname(T, name)) if holder is not None else None
    if value is None:
        raise EwsError("ErrorInvalidPropertySet", f"{action} for {uri} carries no {name} element.")
    if indexed:
        _set_indexed(item.props, name, uri, value)
    elif action == "AppendToItemField" and name in item.props:
        current = item.props[name]
        if len(value):
            current.extend(copy.deepcopy(list(value)))
        else:
            current.text = (current.text or "") + (value.text or "")
    else:
        item.props[name] = normalize(value)
    return name


def after_update(item: Item, changed: set[str], now: datetime) -> None:
    """The properties Exchange keeps consistent with the ones a client changed."""
    if item.kind == MESSAGE and changed & MIME_PROPERTIES:
        item.mime = None
    if item.kind == TASK:
        if "Status" in changed:
            done = item.text("Status") == "Completed"
            item.props["IsComplete"] = t("IsComplete", xml_bool(done))
            if done:
                item.props["PercentComplete"] = t("PercentComplete", "100")
                item.props.setdefault("CompleteDate", t("CompleteDate", xml_datetime(now)))
        elif "PercentComplete" in changed and item.text("PercentComplete") in ("100", "100.0"):
            item.props["Status"] = t("Status", "Completed")
            item.props["IsComplete"] = t("IsComplete", "true")
    if item.kind == CALENDAR:
        if "Recurrence" in changed:
            recurring = "Recurrence" in item.props
            item.props["CalendarItemType"] = t(
                "CalendarItemType", "RecurringMaster" if recurring else "Single"
            )
        attendees = any(
            n in item.props for n in ("RequiredAttendees", "OptionalAttendees", "Resources")
        )
        item.props["IsMeeting"] = t("IsMeeting", xml_bool(attendees))
    if "Attachments" in changed:
        item.props["HasAttachments"] = t("HasAttachments", xml_bool(_has_attachments(item.props)))


def item_values(item: Item, mailbox: Mailbox, path: ET.Element) -> list[str]:
    """The values of one property of an item, for restrictions and sorting."""
    uri = path.get("FieldURI", "")
    if not uri:
        return []
    name = element_for_field_uri(uri)
    rendered = render_item(item, mailbox, Shape(), summary=False, wanted=lambda n: n == name)
    elem = rendered.find(qname(T, name))
    if elem is None:
        return []
    if local_name(path.tag) == "IndexedFieldURI":
        index = path.get("FieldIndex")
        return [text_of(e) for e in elem if e.get("Key") == index and e.text]
    if len(elem) == 0:
        return [elem.text or ""]
    mailboxes = addresses_in(elem)
    if mailboxes:
        return [value for pair in mailboxes for value in pair if value]
    return [text_of(child) for child in elem.iter() if child is not elem and child.text]


def send_message(
    ctx: OperationContext,
    mailbox: Mailbox,
    props: dict[str, ET.Element],
    mime: bytes | None,
    *,
    disposition: str,
    save_in: Folder | None,
) -> Item | None:
    """Send a message: record it in the outbox (and deliver it to local mailboxes) and,
    with ``save_in``, keep the copy Exchange keeps in Sent Items."""
    recipients = recipients_of(props, ("ToRecipients", "CcRecipients", "BccRecipients"))
    if not recipients:
        raise EwsError("ErrorInvalidRecipients", "At least one recipient is required.")
    now = ctx.store.now()
    props["IsDraft"] = t("IsDraft", "false")
    props["IsRead"] = t("IsRead", "true")
    props["DateTimeSent"] = t("DateTimeSent", xml_datetime(now))
    saved: Item | None = None
    if save_in is not None:
        saved = ctx.store.add_item(save_in, MESSAGE, props, mime=mime)
        assign_attachment_ids(saved)
        content = message_mime(saved, mailbox)
        saved.mime = content
    else:
        probe = Item(
            id="",
            mailbox=mailbox.address.lower(),
            folder_id="",
            kind=MESSAGE,
            props=props,
            created=now,
            received=now,
            modified=now,
            mime=mime,
        )
        content = message_mime(probe, mailbox)
    ctx.outbox.send(
        mailbox,
        content,
        recipients,
        kind="Message",
        disposition=disposition,
        saved_item_id=saved.id if saved is not None else None,
    )
    return saved
