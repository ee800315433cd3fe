"""What a test reads back from the server: items, folders, sent mail, requests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime

import attrs

from serversync.testing.ews._mime import addresses_in
from serversync.testing.ews._render import Shape, message_mime, render_item
from serversync.testing.ews._schema import MESSAGE
from serversync.testing.ews._store import Folder, Item, Mailbox
from serversync.testing.ews._xml import T, local_name, qname, serialize

__all__ = ["FolderView", "ItemView", "OutboxMessage", "RequestRecord"]


@attrs.frozen
class ItemView:
    """A snapshot of one stored item."""

    id: str
    changekey: str
    mailbox: str
    folder_id: str
    kind: str
    """The EWS element: ``Message``, ``CalendarItem``, ``Contact`` or ``Task``."""
    received: datetime
    properties: Mapping[str, str]
    """The text of every single-valued property, by element name (``Subject``, ``IsRead``,
    ``Start``, ``Status``, ...)."""
    categories: tuple[str, ...]
    addresses: Mapping[str, tuple[str, ...]]
    """The addresses of every mailbox-valued property (``From``, ``ToRecipients``,
    ``RequiredAttendees``, ...)."""
    xml: str
    """The item as GetItem returns it with every property."""
    mime: bytes | None
    """Messages: the MIME content GetItem would return."""

    @property
    def subject(self) -> str:
        """The Subject property ("" when there is none)."""
        return self.properties.get("Subject", "")

    @property
    def is_read(self) -> bool:
        """Whether IsRead is true (messages)."""
        return self.properties.get("IsRead") == "true"

    @property
    def message_id(self) -> str | None:
        """The InternetMessageId (messages)."""
        return self.properties.get("InternetMessageId")

    @classmethod
    def of(cls, item: Item, mailbox: Mailbox) -> ItemView:
        """The snapshot of a stored item."""
        rendered = render_item(item, mailbox, Shape(base="AllProperties"), summary=False)
        properties: dict[str, str] = {}
        addresses: dict[str, tuple[str, ...]] = {}
        for elem in rendered:
            name = local_name(elem.tag)
            if len(elem) == 0:
                properties[name] = elem.text or ""
            elif (found := addresses_in(elem)) and name not in ("ItemId", "ParentFolderId"):
                addresses[name] = tuple(address for _, address in found)
        categories = rendered.find(qname(T, "Categories"))
        return cls(
            id=item.id,
            changekey=item.changekey,
            mailbox=mailbox.address,
            folder_id=item.folder_id,
            kind=item.kind,
            received=item.received,
            properties=properties,
            categories=tuple(c.text or "" for c in categories) if categories is not None else (),
            addresses=addresses,
            xml=serialize(rendered).decode("utf-8"),
            mime=message_mime(item, mailbox) if item.kind == MESSAGE else None,
        )

    def element(self) -> ET.Element:
        """The item XML, parsed."""
        return ET.fromstring(self.xml)


@attrs.frozen
class FolderView:
    """A snapshot of one folder."""

    id: str
    mailbox: str
    name: str
    parent_id: str | None
    folder_class: str | None
    distinguished: str | None

    @classmethod
    def of(cls, folder: Folder, mailbox: Mailbox) -> FolderView:
        """The snapshot of a stored folder."""
        return cls(
            id=folder.id,
            mailbox=mailbox.address,
            name=folder.name,
            parent_id=folder.parent_id,
            folder_class=folder.folder_class,
            distinguished=folder.distinguished,
        )


@attrs.frozen
class OutboxMessage:
    """A message the server sent on a mailbox's behalf."""

    mailbox: str
    """The sending mailbox."""
    recipients: tuple[str, ...]
    """Every To, Cc and Bcc address (attendees for meeting mail)."""
    mime: bytes
    kind: str
    """``Message``, ``MeetingRequest`` or ``MeetingCancellation``."""
    disposition: str
    """How it was sent: ``SendOnly``, ``SendAndSaveCopy``, ``SendItem``, or the meeting
    mode (``SendToAllAndSaveCopy``, ...)."""
    saved_item_id: str | None
    """The copy kept in Sent Items, if one was kept."""
    message_id: str | None


@attrs.frozen
class RequestRecord:
    """One request the server answered."""

    operation: str
    """The SOAP operation, or ``token`` for the OAuth token endpoint."""
    login: str | None
    """Who authenticated; None when authentication failed."""
    impersonated: str | None
    """The mailbox named in the ExchangeImpersonation header."""
    field_uris: frozenset[str]
    """The FieldURIs of the requested shape (``item:MimeContent`` when MIME was asked for)."""
    status: int
    """The HTTP status answered (0 for a dropped connection)."""
    error: str | None
    """The SOAP fault code (or injected fault) answered, if any."""
