"""Restrictions (``m:Restriction``) and sort orders (``m:SortOrder``) over property values.

Values are compared as date-times when both sides are xs:dateTime, as numbers when both
are numbers (``true``/``false`` count as 1/0, as xs:boolean allows), otherwise as case-insensitive
strings (Exchange's default for string restrictions). A multi-valued property (categories,
recipients) matches when any of its values does.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from serversync.testing.ews._xml import EwsError, T, local_name, parse_datetime, qname

__all__ = ["ValueReader", "matches", "sort"]

Target = TypeVar("Target")

ValueReader = Callable[[ET.Element], list[str]]
"""The values of the property a FieldURI / IndexedFieldURI element names, for one target."""

_PATHS = frozenset({"FieldURI", "IndexedFieldURI", "ExtendedFieldURI"})


def _typed(value: str) -> tuple[int, datetime | float | str]:
    if "T" in value and (moment := parse_datetime(value)) is not None:
        return 0, moment
    if value in ("true", "false"):
        # xs:boolean: true/false and 1/0 are the same values.
        return 1, float(value == "true")
    try:
        return 1, float(value)
    except ValueError:
        return 3, value.casefold()


def _compare(left: str, right: str) -> int:
    left_kind, left_value = _typed(left)
    right_kind, right_value = _typed(right)
    if left_kind != right_kind:
        left_value, right_value = left.casefold(), right.casefold()
    if left_value == right_value:
        return 0
    return -1 if left_value < right_value else 1  # type: ignore[operator]


def _path(elem: ET.Element) -> ET.Element:
    for child in elem:
        if local_name(child.tag) in _PATHS:
            return child
    raise EwsError("ErrorInvalidRestriction", f"{local_name(elem.tag)} names no property.")


def _operand(elem: ET.Element, values: ValueReader) -> list[str]:
    holder = elem.find(qname(T, "FieldURIOrConstant"))
    if holder is None or len(holder) == 0:
        raise EwsError(
            "ErrorInvalidRestriction", f"{local_name(elem.tag)} has no value to compare."
        )
    operand = holder[0]
    if local_name(operand.tag) == "Constant":
        return [operand.get("Value", "")]
    return values(operand)


_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "IsEqualTo": lambda c: c == 0,
    "IsNotEqualTo": lambda c: c != 0,
    "IsGreaterThan": lambda c: c > 0,
    "IsGreaterThanOrEqualTo": lambda c: c >= 0,
    "IsLessThan": lambda c: c < 0,
    "IsLessThanOrEqualTo": lambda c: c <= 0,
}


def _contains(elem: ET.Element, values: ValueReader) -> bool:
    constant = elem.find(qname(T, "Constant"))
    needle = constant.get("Value", "") if constant is not None else ""
    mode = elem.get("ContainmentMode", "Substring")
    if elem.get("ContainmentComparison", "IgnoreCase") != "Exact":
        needle = needle.casefold()
    for value in values(_path(elem)):
        hay = value if elem.get("ContainmentComparison") == "Exact" else value.casefold()
        if (
            (mode == "FullString" and hay == needle)
            or (mode == "Prefixed" and hay.startswith(needle))
            or (mode in ("Substring", "ExactPhrase") and needle in hay)
            or (mode == "PrefixOnWords" and any(word.startswith(needle) for word in hay.split()))
        ):
            return True
    return False


def matches(expression: ET.Element, values: ValueReader) -> bool:
    """Whether one target satisfies a search expression (a child of ``m:Restriction``)."""
    kind = local_name(expression.tag)
    if kind == "And":
        return all(matches(child, values) for child in expression)
    if kind == "Or":
        return any(matches(child, values) for child in expression)
    if kind == "Not":
        return not matches(expression[0], values)
    if kind == "Exists":
        return bool(values(_path(expression)))
    if kind == "Contains":
        return _contains(expression, values)
    if kind in _COMPARISONS:
        test = _COMPARISONS[kind]
        left = values(_path(expression))
        right = _operand(expression, values)
        if kind == "IsNotEqualTo":
            return all(test(_compare(a, b)) for a in left for b in right) if left else True
        return any(test(_compare(a, b)) for a in left for b in right)
    raise EwsError("ErrorUnsupportedQueryFilter", f"The EWS test server does not evaluate {kind}.")


def sort(
    targets: Sequence[Target],
    orders: ET.Element | None,
    values: Callable[[Target, ET.Element], list[str]],
) -> list[Target]:
    """``targets`` in the order of an ``m:SortOrder``; targets without a value go last."""
    fields = list(orders) if orders is not None else []

    def compare(a: Target, b: Target) -> int:
        for order in fields:
            path = _path(order)
            left, right = values(a, path), values(b, path)
            if not left or not right:
                result = (not left) - (not right)
            else:
                result = _compare(left[0], right[0])
                if order.get("Order") == "Descending":
                    result = -result
            if result:
                return result
        return 0

    return sorted(targets, key=functools.cmp_to_key(compare))
