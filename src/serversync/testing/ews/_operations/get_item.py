"""GetItem: items by id with every property the shape asks for, MIME content included."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._render import parse_shape, render_item
from serversync.testing.ews._xml import EwsError, error_message, m, success_message

OPERATION = "GetItem"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    shape = parse_shape(child(request, "ItemShape"))
    ids = child(request, "ItemIds")
    messages = []
    for elem in ids if ids is not None else ():
        try:
            item = ctx.item(elem)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        rendered = render_item(item, ctx.mailbox_of(item), shape, summary=False)
        messages.append(success_message(OPERATION, [m("Items", children=[rendered])]))
    return response(OPERATION, messages)
