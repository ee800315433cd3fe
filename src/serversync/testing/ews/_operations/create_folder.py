"""CreateFolder: user folders under a parent folder."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._schema import FOLDER_ELEMENT_FOR_CLASS
from serversync.testing.ews._xml import (
    EwsError,
    T,
    error_message,
    local_name,
    m,
    qname,
    success_message,
    t,
    text_of,
)

OPERATION = "CreateFolder"
_CLASS_FOR_ELEMENT = {element: cls for cls, element in FOLDER_ELEMENT_FOR_CLASS.items()}


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    parents = ctx.folders(child(request, "ParentFolderId"))
    folders = child(request, "Folders")
    wanted = list(folders) if folders is not None else []
    messages = []
    for elem in wanted:
        try:
            if len(parents) != 1:
                raise EwsError(
                    "ErrorInvalidRequest", "CreateFolder needs exactly one ParentFolderId."
                )
            parent = parents[0]
            if isinstance(parent, EwsError):
                raise parent
            name = text_of(elem.find(qname(T, "DisplayName"))).strip()
            if not name:
                raise EwsError("ErrorInvalidFolderId", "A folder needs a DisplayName.")
            element = local_name(elem.tag)
            folder_class = text_of(elem.find(qname(T, "FolderClass"))) or _CLASS_FOR_ELEMENT.get(
                element, "IPF.Note"
            )
            mailbox = ctx.store.mailbox_of_folder(parent)
            folder = ctx.store.create_folder(mailbox, parent, name, folder_class)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        created = t(
            element,
            children=[t("FolderId", attrs={"Id": folder.id, "ChangeKey": folder.changekey})],
        )
        messages.append(success_message(OPERATION, [m("Folders", children=[created])]))
    return response(OPERATION, messages)
