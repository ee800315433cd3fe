"""Email server profiles: where a group of mailboxes connects and how."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

import attrs

from serversync.model.ids import ProfileId
from serversync.model.options import (
    AuthenticationProtocol,
    CredentialSource,
    RecordState,
    ServerType,
)

__all__ = ["EmailServerProfile", "ServerEndpoint", "TlsMode"]


class TlsMode(enum.StrEnum):
    """How a connection is secured. Plain text is never a default; a profile must ask for it."""

    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


@attrs.frozen(kw_only=True)
class ServerEndpoint:
    """One server address: host (or EWS/Graph URL), port and TLS mode.

    ``verify_certificate`` is on by default; ``ca_file`` names a custom CA bundle.
    """

    host: str
    port: int | None = None
    tls: TlsMode = TlsMode.IMPLICIT
    verify_certificate: bool = True
    ca_file: str | None = None


@attrs.frozen(kw_only=True)
class EmailServerProfile:
    """``emailserverprofile``: server, ports, TLS, authentication, credential source and limits.

    Secrets are never stored here: a :class:`~serversync.ports.CredentialProvider` resolves
    them when a connection opens.
    """

    id: ProfileId
    name: str
    server_type: ServerType
    incoming: ServerEndpoint | None = None
    outgoing: ServerEndpoint | None = None
    use_same_settings_for_outgoing: bool = True
    incoming_authentication: AuthenticationProtocol = AuthenticationProtocol.BASIC
    outgoing_authentication: AuthenticationProtocol = AuthenticationProtocol.BASIC
    incoming_credential_source: CredentialSource = CredentialSource.USER_OR_QUEUE
    outgoing_credential_source: CredentialSource = CredentialSource.USER_OR_QUEUE
    incoming_use_impersonation: bool = False
    outgoing_use_impersonation: bool = False
    process_emails_received_after: datetime | None = None
    min_polling_interval: timedelta | None = None
    max_concurrent_connections: int = attrs.field(
        default=10,
        validator=attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(300)),
    )
    timeout_mailbox_connection: bool = True
    timeout_mailbox_connection_after: timedelta | None = None
    move_undelivered_emails: bool = False
    sent_folder: str | None = None
    """Where a copy of each email sent through SMTP is stored on the incoming IMAP server
    (``"Sent"``); ``None`` stores none. Exchange keeps its own copy in Sent Items."""
    send_email_alert: bool = False
    owner_email_address: str | None = None
    state: RecordState = RecordState.ACTIVE

    @property
    def is_active(self) -> bool:
        """Whether the profile is Active (``statecode`` 0)."""
        return self.state is RecordState.ACTIVE

    @property
    def outgoing_endpoint(self) -> ServerEndpoint | None:
        """The endpoint outgoing mail uses, honouring ``use_same_settings_for_outgoing``."""
        if self.outgoing is not None:
            return self.outgoing
        return self.incoming if self.use_same_settings_for_outgoing else None
