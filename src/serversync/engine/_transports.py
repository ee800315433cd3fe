"""Which transport serves which profile."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from serversync.errors import ConfigurationError
from serversync.model import EmailServerProfile, ServerType
from serversync.ports import ExchangeItemsTransport, IncomingMailTransport, OutgoingMailTransport

__all__ = ["EXCHANGE_SERVER_TYPES", "Transports"]

EXCHANGE_SERVER_TYPES = (
    ServerType.EXCHANGE_SERVER,
    ServerType.EXCHANGE_SERVER_HYBRID,
    ServerType.EXCHANGE_ONLINE_HYBRID,
)
"""The Exchange server types (EWS), which carry appointments, contacts and tasks."""
_ACT_SERVER_TYPES = (*EXCHANGE_SERVER_TYPES, ServerType.MICROSOFT_GRAPH)
# Exchange Online over Graph carries them too (events, contacts, To Do tasks).


@attrs.frozen(kw_only=True)
class Transports:
    """The mail transports the engine uses, chosen by the profile's server type.

    Build it with :meth:`by_server_type` (IMAP for ``IMAP_SMTP``, EWS for Exchange, ...) or
    :meth:`for_all` when one transport serves every profile (the in-memory transports).
    ``act`` holds the appointment, contact and task transports; only Exchange server types
    can have one (POP3 and IMAP profiles carry no calendars).
    """

    incoming: Mapping[ServerType, IncomingMailTransport] = attrs.field(factory=dict)
    outgoing: Mapping[ServerType, OutgoingMailTransport] = attrs.field(factory=dict)
    act: Mapping[ServerType, ExchangeItemsTransport] = attrs.field(factory=dict)

    @classmethod
    def for_all(
        cls,
        *,
        incoming: IncomingMailTransport,
        outgoing: OutgoingMailTransport,
        act: ExchangeItemsTransport | None = None,
    ) -> Transports:
        """One incoming and one outgoing transport for every server type, and ``act`` for
        every Exchange server type."""
        return cls(
            incoming=dict.fromkeys(ServerType, incoming),
            outgoing=dict.fromkeys(ServerType, outgoing),
            act=dict.fromkeys(EXCHANGE_SERVER_TYPES, act) if act is not None else {},
        )

    @classmethod
    def by_server_type(
        cls,
        *,
        incoming: Mapping[ServerType, IncomingMailTransport],
        outgoing: Mapping[ServerType, OutgoingMailTransport],
        act: Mapping[ServerType, ExchangeItemsTransport] | None = None,
    ) -> Transports:
        """Transports per server type; a profile whose type is missing fails to configure."""
        return cls(incoming=dict(incoming), outgoing=dict(outgoing), act=dict(act or {}))

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

    def act_for(self, profile: EmailServerProfile) -> ExchangeItemsTransport:
        """The appointment, contact and task transport of ``profile``."""
        if profile.server_type not in _ACT_SERVER_TYPES:
            raise ConfigurationError(
                "appointments, contacts and tasks sync only with Exchange (EWS or Microsoft "
                "Graph); profile "
                f"{profile.name!r} is {profile.server_type.name} (set the mailbox's ACT "
                "delivery method to None)"
            )
        try:
            return self.act[profile.server_type]
        except KeyError:
            raise ConfigurationError(
                f"no appointment, contact and task transport for server type "
                f"{profile.server_type.name} (profile {profile.name!r})"
            ) from None
