"""The credential port: hosts resolve secrets at connect time; serversync never stores them."""

from __future__ import annotations

from typing import Protocol

from serversync.model import Credentials, EmailServerProfile, Mailbox, Workload

__all__ = ["CredentialProvider"]


class CredentialProvider(Protocol):
    """Gives the credentials for one mailbox workload when a connection opens."""

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        """Credentials per the profile's credential source, or ``None`` for anonymous access.

        Raise :class:`~serversync.errors.ConfigurationError` when they are required but
        missing, so the workload fails with a clear reason.
        """
        ...
