"""Optional ports: methods hosts' repositories and adapters' sessions may offer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["offered"]

T = TypeVar("T")


def offered(target: object, port: Callable[..., T]) -> T | None:
    """``target`` as the optional ``port`` (a runtime-checkable Protocol) when it has every
    method of it, else ``None`` (the caller falls back to the required methods).

    ``isinstance`` decides, and for objects that forward attributes to another (the
    engine's lease guard) ``getattr`` does: from Python 3.12 ``isinstance`` reads a
    Protocol's members statically and does not see forwarded ones.
    """
    if isinstance(target, cast(type, port)):
        return cast(T, target)
    members: Any = getattr(port, "__protocol_attrs__", None) or (
        name for name in vars(port) if not name.startswith("_")
    )
    if all(callable(getattr(target, name, None)) for name in members):
        return cast(T, target)
    return None
