"""What the operation handlers share: the response wrapper and request attributes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

from serversync.testing.ews._xml import M, m, qname, text_of

__all__ = ["child", "flag", "int_text", "response"]


def response(operation: str, messages: Iterable[ET.Element]) -> ET.Element:
    """``<m:{operation}Response><m:ResponseMessages>...``"""
    return m(f"{operation}Response", children=[m("ResponseMessages", children=list(messages))])


def child(request: ET.Element, name: str) -> ET.Element | None:
    """The request's ``m:{name}`` element."""
    return request.find(qname(M, name))


def flag(value: str | None, default: bool = False) -> bool:
    """An xs:boolean attribute or element text."""
    if value is None:
        return default
    return value.strip().lower() in ("true", "1")


def int_text(request: ET.Element, name: str, default: int) -> int:
    """The integer text of the request's ``m:{name}``, or ``default``."""
    try:
        return int(text_of(child(request, name), str(default)))
    except ValueError:
        return default
