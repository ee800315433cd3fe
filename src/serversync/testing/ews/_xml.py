"""SOAP and EWS XML: namespaces, element builders, the response envelope and faults.

Requests are parsed with :mod:`xml.etree.ElementTree`; responses are built as ElementTree
elements and written by :func:`serialize`, which gives the EWS namespaces their usual
prefixes (``s``, ``m``, ``t``, ``e``) without touching ElementTree's process-wide prefix
registry.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

__all__ = [
    "E",
    "EwsError",
    "M",
    "S",
    "SoapFault",
    "T",
    "envelope",
    "error_message",
    "fault_body",
    "local_name",
    "m",
    "parse_datetime",
    "qname",
    "serialize",
    "success_message",
    "t",
    "text_of",
    "xml_bool",
    "xml_datetime",
]

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"

_PREFIXES = {S: "s", M: "m", T: "t", E: "e"}

# Exchange 2016 CU22, as Exchange reports itself in every response header.
SERVER_VERSION = {
    "MajorVersion": "15",
    "MinorVersion": "1",
    "MajorBuildNumber": "2507",
    "MinorBuildNumber": "6",
    "Version": "V2017_07_11",
}


class EwsError(Exception):
    """An EWS error for one response message (``ResponseClass="Error"``)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class SoapFault(Exception):
    """An error for the whole request: HTTP 500 with a SOAP fault, as Exchange sends it."""

    def __init__(
        self, code: str, text: str, *, message_xml: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.message_xml = dict(message_xml or {})


def qname(namespace: str, name: str) -> str:
    """ElementTree's ``{namespace}name`` form."""
    return f"{{{namespace}}}{name}"


def local_name(tag: str) -> str:
    """The tag without its namespace."""
    return tag.rpartition("}")[2]


def _element(
    namespace: str,
    name: str,
    text: str | None,
    attrs: Mapping[str, str] | None,
    children: Iterable[ET.Element],
) -> ET.Element:
    elem = ET.Element(qname(namespace, name), dict(attrs or {}))
    if text is not None:
        elem.text = text
    elem.extend(children)
    return elem


def t(
    name: str,
    text: str | None = None,
    attrs: Mapping[str, str] | None = None,
    children: Iterable[ET.Element] = (),
) -> ET.Element:
    """An element in the EWS types namespace."""
    return _element(T, name, text, attrs, children)


def m(
    name: str,
    text: str | None = None,
    attrs: Mapping[str, str] | None = None,
    children: Iterable[ET.Element] = (),
) -> ET.Element:
    """An element in the EWS messages namespace."""
    return _element(M, name, text, attrs, children)


def text_of(elem: ET.Element | None, default: str = "") -> str:
    """The element's text, or ``default`` when the element is missing or empty."""
    if elem is None or elem.text is None:
        return default
    return elem.text


def xml_bool(value: bool) -> str:
    return "true" if value else "false"


def xml_datetime(value: datetime) -> str:
    """An xs:dateTime in UTC, the form Exchange answers with."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str) -> datetime | None:
    """An xs:dateTime (with ``Z``, an offset, or none for UTC), or None when it is not one."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def success_message(operation: str, children: Iterable[ET.Element] = ()) -> ET.Element:
    """``<m:{operation}ResponseMessage ResponseClass="Success">`` with ``NoError``."""
    return m(
        f"{operation}ResponseMessage",
        attrs={"ResponseClass": "Success"},
        children=[m("ResponseCode", "NoError"), *children],
    )


def error_message(operation: str, error: EwsError, extra: Iterable[ET.Element] = ()) -> ET.Element:
    """``<m:{operation}ResponseMessage ResponseClass="Error">`` for one failed element;
    ``extra`` follows the error elements (the sync operations add an empty SyncState)."""
    return m(
        f"{operation}ResponseMessage",
        attrs={"ResponseClass": "Error"},
        children=[
            m("MessageText", error.text),
            m("ResponseCode", error.code),
            m("DescriptiveLinkKey", "0"),
            *extra,
        ],
    )


def envelope(response: ET.Element) -> ET.Element:
    """The SOAP envelope around one operation response, with the server version header."""
    header = ET.Element(qname(S, "Header"))
    header.append(t("ServerVersionInfo", attrs=SERVER_VERSION))
    body = ET.Element(qname(S, "Body"))
    body.append(response)
    env = ET.Element(qname(S, "Envelope"))
    env.extend([header, body])
    return env


def fault_body(fault: SoapFault) -> ET.Element:
    """The SOAP envelope of a fault, laid out as Exchange lays out ErrorServerBusy."""
    detail = ET.Element("detail")
    detail.append(_element(E, "ResponseCode", fault.code, None, ()))
    detail.append(_element(E, "Message", fault.text, None, ()))
    if fault.message_xml:
        detail.append(
            t(
                "MessageXml",
                children=[
                    t("Value", value, {"Name": name}) for name, value in fault.message_xml.items()
                ],
            )
        )
    soap_fault = ET.Element(qname(S, "Fault"))
    code = ET.SubElement(soap_fault, "faultcode")
    code.text = f"t:{fault.code}"
    string = ET.SubElement(soap_fault, "faultstring")
    string.text = fault.text
    soap_fault.append(detail)
    body = ET.Element(qname(S, "Body"))
    body.append(soap_fault)
    env = ET.Element(qname(S, "Envelope"))
    env.append(body)
    return env


# Characters XML 1.0 cannot carry; a MIME header may still contain them.
_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _escape(text: str, *, attribute: bool) -> str:
    text = _INVALID_XML_CHARS.sub("\ufffd", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
    else:
        text = text.replace("\r", "&#13;")
    return text


def _collect_namespaces(elem: ET.Element, found: dict[str, str]) -> None:
    for name in (elem.tag, *elem.attrib):
        if name.startswith("{"):
            uri = name[1:].partition("}")[0]
            if uri not in found:
                found[uri] = _PREFIXES.get(uri, f"ns{len(found)}")
    for child in elem:
        _collect_namespaces(child, found)


def _prefixed(name: str, prefixes: Mapping[str, str]) -> str:
    if not name.startswith("{"):
        return name
    uri, _, local = name[1:].partition("}")
    if uri == "http://www.w3.org/XML/1998/namespace":
        return f"xml:{local}"
    return f"{prefixes[uri]}:{local}"


def _write(elem: ET.Element, prefixes: Mapping[str, str], out: list[str], root: bool) -> None:
    tag = _prefixed(elem.tag, prefixes)
    out.append(f"<{tag}")
    if root:
        for uri, prefix in prefixes.items():
            out.append(f' xmlns:{prefix}="{_escape(uri, attribute=True)}"')
    for name, value in elem.attrib.items():
        out.append(f' {_prefixed(name, prefixes)}="{_escape(value, attribute=True)}"')
    if elem.text is None and len(elem) == 0:
        out.append("/>")
    else:
        out.append(">")
        if elem.text is not None:
            out.append(_escape(elem.text, attribute=False))
        for child in elem:
            _write(child, prefixes, out, root=False)
        out.append(f"</{tag}>")
    if elem.tail and not root:
        out.append(_escape(elem.tail, attribute=False))


def serialize(root: ET.Element) -> bytes:
    """UTF-8 XML with a declaration; every namespace is declared once, on the root."""
    # The four EWS namespaces are always declared: fault codes name ``t:`` in their text.
    prefixes: dict[str, str] = dict(_PREFIXES)
    _collect_namespaces(root, prefixes)
    prefixes.pop("http://www.w3.org/XML/1998/namespace", None)
    out = ['<?xml version="1.0" encoding="utf-8"?>']
    _write(root, prefixes, out, root=True)
    return "".join(out).encode("utf-8")
