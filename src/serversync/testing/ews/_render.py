"""Response shapes (ItemShape, FolderShape) and the XML of items and folders in a shape."""

from __future__ import annotations

import base64
import copy
import xml.etree.ElementTree as ET
from collections.abc import Callable

import attrs

from serversync.testing.ews._mime import addresses_in, mime_from_props
from serversync.testing.ews._recurrence import occurrence
from serversync.testing.ews._schema import (
    CALENDAR,
    FOLDER_ELEMENT_FOR_CLASS,
    INDEXED_CONTAINERS,
    ITEM_CLASS_FOR_KIND,
    MESSAGE,
    NAME_ONLY_IN_SUMMARY,
    NOT_IN_SUMMARY,
    element_for_field_uri,
    order_key,
)
from serversync.testing.ews._store import Folder, Item, Mailbox
from serversync.testing.ews._xml import T, local_name, qname, t, text_of, xml_datetime

__all__ = ["Shape", "message_mime", "parse_shape", "render_folder", "render_item"]

_RIGHTS = ("CreateAssociated", "CreateContents", "CreateHierarchy", "Delete", "Modify", "Read")
_FOLDER_DEFAULT = frozenset({"DisplayName", "TotalCount", "ChildFolderCount", "UnreadCount"})
_FOLDER_ORDER = (
    "FolderId",
    "ParentFolderId",
    "FolderClass",
    "DisplayName",
    "TotalCount",
    "ChildFolderCount",
    "EffectiveRights",
    "DistinguishedFolderId",
    "UnreadCount",
)


@attrs.frozen
class Shape:
    """What a request asked to get back."""

    base: str = "IdOnly"
    names: frozenset[str] = frozenset()
    """Element names from the FieldURIs and IndexedFieldURIs."""
    indexed_keys: frozenset[tuple[str, str]] = frozenset()
    """(container element, entry key) pairs from IndexedFieldURIs."""
    field_uris: frozenset[str] = frozenset()
    include_mime: bool = False

    @property
    def wants_mime(self) -> bool:
        return self.include_mime or "MimeContent" in self.names


def parse_shape(elem: ET.Element | None) -> Shape:
    """Read an ``m:ItemShape`` or ``m:FolderShape``."""
    if elem is None:
        return Shape()
    names: set[str] = set()
    keys: set[tuple[str, str]] = set()
    uris: set[str] = set()
    properties = elem.find(qname(T, "AdditionalProperties"))
    for path in properties if properties is not None else ():
        uri = path.get("FieldURI")
        if uri is None:
            continue  # ExtendedFieldURI: no extended properties are stored
        uris.add(uri)
        name = element_for_field_uri(uri)
        names.add(name)
        if local_name(path.tag) == "IndexedFieldURI":
            keys.add((name, path.get("FieldIndex", "")))
    include_mime = text_of(elem.find(qname(T, "IncludeMimeContent"))) == "true"
    if include_mime:
        uris.add("item:MimeContent")
    return Shape(
        base=text_of(elem.find(qname(T, "BaseShape")), "IdOnly"),
        names=frozenset(names),
        indexed_keys=frozenset(keys),
        field_uris=frozenset(uris),
        include_mime=include_mime,
    )


def message_mime(item: Item, mailbox: Mailbox) -> bytes:
    """The item's MIME content: as delivered, or generated from its properties."""
    if item.mime is not None:
        return item.mime
    return mime_from_props(
        item.props, author=(mailbox.display_name, mailbox.address), sent=item.created
    )


def _without_addresses(elem: ET.Element) -> ET.Element:
    for mailbox in elem.iter(qname(T, "Mailbox")):
        for child in list(mailbox):
            if local_name(child.tag) != "Name":
                mailbox.remove(child)
    return elem


def _only_keys(elem: ET.Element, keys: set[str]) -> ET.Element:
    for entry in list(elem):
        if entry.get("Key") not in keys:
            elem.remove(entry)
    return elem


def _attachments(elem: ET.Element) -> ET.Element:
    # GetItem returns attachment metadata; the content comes through GetAttachment.
    for attachment in elem:
        content = attachment.find(qname(T, "Content"))
        if content is not None:
            attachment.remove(content)
            if attachment.find(qname(T, "Size")) is None:
                size = len(base64.b64decode(text_of(content)))
                attachment.append(t("Size", str(size)))
    return elem


def _display(props: dict[str, ET.Element], name: str) -> str:
    return "; ".join(n or a for n, a in addresses_in(props.get(name)))


def render_item(
    item: Item,
    mailbox: Mailbox,
    shape: Shape,
    *,
    summary: bool,
    wanted: Callable[[str], bool] | None = None,
) -> ET.Element:
    """The item's element (``t:Message``, ``t:CalendarItem``, ...) with what ``shape`` asks
    for. ``summary`` gives the FindItem/SyncFolderItems view."""
    everything = shape.base in ("Default", "AllProperties")

    def want(name: str) -> bool:
        if summary and name in NOT_IN_SUMMARY:
            return False
        if wanted is not None:
            return wanted(name)
        return everything or name in shape.names

    out: list[ET.Element] = [t("ItemId", attrs={"Id": item.id, "ChangeKey": item.changekey})]
    computed: dict[str, Callable[[], ET.Element]] = {
        "ParentFolderId": lambda: t(
            "ParentFolderId",
            attrs={"Id": item.folder_id, "ChangeKey": mailbox.folders[item.folder_id].changekey},
        ),
        "ItemClass": lambda: t("ItemClass", ITEM_CLASS_FOR_KIND.get(item.kind, "IPM.Note")),
        "DateTimeReceived": lambda: t("DateTimeReceived", xml_datetime(item.received)),
        "DateTimeCreated": lambda: t("DateTimeCreated", xml_datetime(item.created)),
        "LastModifiedTime": lambda: t("LastModifiedTime", xml_datetime(item.modified)),
        "LastModifiedName": lambda: t("LastModifiedName", mailbox.display_name),
        "DisplayTo": lambda: t("DisplayTo", _display(item.props, "ToRecipients")),
        "DisplayCc": lambda: t("DisplayCc", _display(item.props, "CcRecipients")),
        "IsAssociated": lambda: t("IsAssociated", "false"),
        "EffectiveRights": lambda: t(
            "EffectiveRights", children=[t(r, "true") for r in (*_RIGHTS, "ViewPrivateItems")]
        ),
    }
    if item.kind == MESSAGE:
        computed["MimeContent"] = lambda: t(
            "MimeContent",
            base64.b64encode(message_mime(item, mailbox)).decode("ascii"),
            {"CharacterSet": "UTF-8"},
        )
        computed["Size"] = lambda: t("Size", str(len(message_mime(item, mailbox))))
        computed["IsRead"] = lambda: t("IsRead", "false")
    else:
        computed["Size"] = lambda: t(
            "Size", str(sum(len(ET.tostring(e)) for e in item.props.values()))
        )

    if item.kind == CALENDAR and item.text("CalendarItemType") == "RecurringMaster":
        computed.update(_series(item, mailbox))
    names = set(item.props) | set(computed)
    for name in sorted(names, key=lambda n: (order_key(item.kind, n), n)):
        if name == "MimeContent":
            # Only on request, and never in a summary, even with AllProperties.
            if summary or not shape.wants_mime:
                continue
        elif not want(name):
            continue
        stored = item.props.get(name)
        elem = copy.deepcopy(stored) if stored is not None else computed[name]()
        if summary and name in NAME_ONLY_IN_SUMMARY:
            elem = _without_addresses(elem)
        if name in INDEXED_CONTAINERS.values() and not everything:
            keys = {key for container, key in shape.indexed_keys if container == name}
            if keys:
                elem = _only_keys(elem, keys)
        if name == "Attachments":
            elem = _attachments(elem)
        out.append(elem)
    return t(item.kind, children=out)


def _series(master: Item, mailbox: Mailbox) -> dict[str, Callable[[], ET.Element]]:
    """A master's ModifiedOccurrences and DeletedOccurrences, when it has any."""
    out: dict[str, Callable[[], ET.Element]] = {}
    exceptions = [o for o in mailbox.occurrences_of(master.id) if o.is_exception]
    if exceptions:
        out["ModifiedOccurrences"] = lambda: t(
            "ModifiedOccurrences",
            children=[
                t(
                    "Occurrence",
                    children=[
                        t("ItemId", attrs={"Id": o.id, "ChangeKey": o.changekey}),
                        t("Start", o.text("Start")),
                        t("End", o.text("End")),
                        t("OriginalStart", o.text("OriginalStart")),
                    ],
                )
                for o in exceptions
            ],
        )
    starts = [occurrence(master.props, i) for i in sorted(master.deleted_occurrences)]
    if starts:
        out["DeletedOccurrences"] = lambda: t(
            "DeletedOccurrences",
            children=[
                t("DeletedOccurrence", children=[t("Start", xml_datetime(when[0]))])
                for when in starts
                if when is not None
            ],
        )
    return out


def render_folder(folder: Folder, mailbox: Mailbox, shape: Shape) -> ET.Element:
    """The folder's element (``t:Folder``, ``t:CalendarFolder``, ...) in ``shape``."""
    element = FOLDER_ELEMENT_FOR_CLASS.get(folder.folder_class or "", "Folder")
    everything = shape.base == "AllProperties"

    def want(name: str) -> bool:
        return (
            everything
            or name in shape.names
            or (shape.base == "Default" and name in _FOLDER_DEFAULT)
        )

    items = mailbox.items_in(folder.id)
    values: dict[str, Callable[[], ET.Element | None]] = {
        "ParentFolderId": lambda: (
            t(
                "ParentFolderId",
                attrs={
                    "Id": folder.parent_id,
                    "ChangeKey": mailbox.folders[folder.parent_id].changekey,
                },
            )
            if folder.parent_id
            else None
        ),
        "FolderClass": lambda: (
            t("FolderClass", folder.folder_class) if folder.folder_class else None
        ),
        "DisplayName": lambda: t("DisplayName", folder.name),
        "TotalCount": lambda: t("TotalCount", str(len(items))),
        "ChildFolderCount": lambda: t("ChildFolderCount", str(len(mailbox.children(folder.id)))),
        "EffectiveRights": lambda: t("EffectiveRights", children=[t(r, "true") for r in _RIGHTS]),
        "DistinguishedFolderId": lambda: (
            t("DistinguishedFolderId", folder.distinguished) if folder.distinguished else None
        ),
        "UnreadCount": lambda: t(
            "UnreadCount",
            str(sum(1 for i in items if i.kind == MESSAGE and i.text("IsRead", "false") != "true")),
        ),
    }
    out = [t("FolderId", attrs={"Id": folder.id, "ChangeKey": folder.changekey})]
    for name in _FOLDER_ORDER[1:]:
        if want(name):
            elem = values[name]()
            if elem is not None:
                out.append(elem)
    return t(element, children=out)
