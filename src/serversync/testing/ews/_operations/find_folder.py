"""FindFolder: the subfolders of folders (Shallow) or every folder below them (Deep), with
paging and restrictions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._render import Shape, parse_shape, render_folder
from serversync.testing.ews._restriction import matches
from serversync.testing.ews._schema import element_for_field_uri
from serversync.testing.ews._store import Folder, Mailbox
from serversync.testing.ews._xml import (
    EwsError,
    T,
    error_message,
    m,
    qname,
    success_message,
    t,
    xml_bool,
)

OPERATION = "FindFolder"


def _values(folder: Folder, mailbox: Mailbox, path: ET.Element) -> list[str]:
    name = element_for_field_uri(path.get("FieldURI", ""))
    rendered = render_folder(folder, mailbox, Shape(names=frozenset({name})))
    elem = rendered.find(qname(T, name))
    return [elem.text] if elem is not None and elem.text is not None else []


def _restricted(folders: list[Folder], expression: ET.Element, mailbox: Mailbox) -> list[Folder]:
    def matching(folder: Folder) -> bool:
        return matches(expression, lambda path: _values(folder, mailbox, path))

    return [f for f in folders if matching(f)]


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    shape = parse_shape(child(request, "FolderShape"))
    deep = request.get("Traversal", "Shallow") == "Deep"
    view = child(request, "IndexedPageFolderView")
    restriction = child(request, "Restriction")
    messages = []
    for parent in ctx.folders(child(request, "ParentFolderIds")):
        if isinstance(parent, EwsError):
            messages.append(error_message(OPERATION, parent))
            continue
        mailbox = ctx.store.mailbox_of_folder(parent)
        found = mailbox.descendants(parent.id) if deep else mailbox.children(parent.id)
        if restriction is not None and len(restriction):
            found = _restricted(found, restriction[0], mailbox)
        total = len(found)
        offset = int(view.get("Offset", "0")) if view is not None else 0
        limit = int(view.get("MaxEntriesReturned", str(total))) if view is not None else total
        if view is not None and view.get("BasePoint") == "End":
            offset = max(total - offset - limit, 0)
        page = found[offset : offset + limit]
        last = offset + len(page) >= total
        root = m(
            "RootFolder",
            attrs={
                "IndexedPagingOffset": str(offset + len(page)),
                "TotalItemsInView": str(total),
                "IncludesLastItemInRange": xml_bool(last),
            },
            children=[t("Folders", children=[render_folder(f, mailbox, shape) for f in page])],
        )
        messages.append(success_message(OPERATION, [root]))
    return response(OPERATION, messages)
