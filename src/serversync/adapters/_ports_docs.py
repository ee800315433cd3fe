"""Adapters take their methods' documentation from the ports they implement."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

__all__ = ["documented_by"]

_C = TypeVar("_C", bound=type)


def documented_by(*ports: type) -> Callable[[_C], _C]:
    """Copy each port method's docstring to the adapter's undocumented implementation.

    Adapters do not inherit from the Protocols they implement: inheriting would hand them the
    Protocols' empty method bodies, so a method missing from an adapter would go unnoticed by
    mypy and fail only at run time.
    """

    def decorate(adapter: _C) -> _C:
        for port in ports:
            for owner in port.__mro__:
                for name, member in vars(owner).items():
                    implementation = adapter.__dict__.get(name)
                    if (
                        inspect.isfunction(member)
                        and inspect.isfunction(implementation)
                        and not implementation.__doc__
                    ):
                        implementation.__doc__ = member.__doc__
        return adapter

    return decorate
