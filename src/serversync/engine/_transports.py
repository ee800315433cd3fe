"""Which transport serves which profile."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from serversync.errors import ConfigurationError
from serversync.model import EmailServerProfile, ServerType
from serversync.ports import IncomingMailTransport, OutgoingMailTransport

__all__ = ["Transports"]


@attrs.frozen(kw_only=True)
class Transports:
    """The mail transports the engine uses, chosen by the profile's server type.

    Build it with :meth:`by_server_type` (IMAP for ``IMAP_SMTP``, EWS for Exchange, ...) or
    :meth:`for_all` when one transport serves every profile (the in-memory transports).
    """

    incoming: Mapping[ServerType, IncomingMailTransport] = attrs.field(factory=dict)
    outgoing: Mapping[ServerType, OutgoingMailTransport] = attrs.field(factory=dict)

    @classmethod
    def for_all(
        cls, *, incoming: IncomingMailTransport, outgoing: OutgoingMailTransport
    ) -> Transports:
        """One incoming and one outgoing transport for every server type."""
        return cls(
            incoming=dict.fromkeys(ServerType, incoming),
            outgoing=dict.fromkeys(ServerType, outgoing),
        )

    @classmethod
    def by_server_type(
        cls,
        *,
        incoming: Mapping[ServerType, IncomingMailTransport],
        outgoing: Mapping[ServerType, OutgoingMailTransport],
    ) -> Transports:
        """Transports per server type; a profile whose type is missing fails to configure."""
        return cls(incoming=dict(incoming), outgoing=dict(outgoing))

    def incoming_for(self, profile: EmailServerProfile) -> IncomingMailTransport:
        """The incoming transport of ``profile``."""
        try:
            return self.incoming[profile.server_type]
        except KeyError:
            raise ConfigurationError(
                f"no incoming transport for server type {profile.server_type.name} "
                f"(profile {profile.name!r})"
            ) from None

    def outgoing_for(self, profile: EmailServerProfile) -> OutgoingMailTransport:
        """The outgoing transport of ``profile``."""
        try:
            return self.outgoing[profile.server_type]
        except KeyError:
            raise ConfigurationError(
                f"no outgoing transport for server type {profile.server_type.name} "
                f"(profile {profile.name!r})"
            ) from None
