"""The push port: a transport that can tell when new mail arrives (IMAP IDLE, Graph change
notifications) offers :class:`PushHintSource`.

A push is only a hint. It makes a mailbox's incoming workload due now; the cursors alone
decide what is new, so a missed or spurious push costs latency or one extra cycle, never a
message.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol, runtime_checkable

from serversync.model import Credentials, EmailServerProfile, Mailbox

__all__ = ["PushHint", "PushHintSource"]


class PushHint(enum.StrEnum):
    """What a watch reports."""

    WATCHING = "watching"
    """The watch is in place (after every connect): mail may have arrived before it was."""
    NEW_MAIL = "new_mail"
    """The server reported new mail (IMAP ``EXISTS`` or ``RECENT``, a Graph notification)."""


@runtime_checkable
class PushHintSource(Protocol):
    """A transport that can watch a mailbox for new mail over a long-lived connection.

    The engine checks for this port with ``isinstance`` on the profile's incoming transport;
    transports without it are polled only.
    """

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        """Watch ``mailbox`` until cancelled, calling ``hint`` for each event.

        ``hint(PushHint.WATCHING)`` comes once the watch is in place; then
        ``hint(PushHint.NEW_MAIL)`` for every change the server reports. The watch is renewed
        on the server every ``refresh_every`` (IMAP: IDLE is re-issued), and a renewal the
        server does not answer in time ends the watch. What is watched is the transport's
        choice (the IMAP transport watches the Inbox).

        Never returns normally except when the server ends the watch; raises a transient
        :mod:`serversync.errors` type when the connection fails (the engine reconnects) and a
        permanent one when watching cannot work: the server offers no push
        (:class:`~serversync.errors.ConfigurationError`) or refuses the credentials
        (:class:`~serversync.errors.AuthenticationError`). ``hint`` must not block.
        """
        ...
