"""Adapters: implementations of the ports (the only place third-party I/O libraries are used)."""

from serversync.adapters.credentials import MappingCredentials

__all__ = ["MappingCredentials"]
