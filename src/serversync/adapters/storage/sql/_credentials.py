"""Credentials whose secrets' places are kept in the SQL store (what the CLI configures)."""

from __future__ import annotations

from typing import final

from sqlalchemy import select

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.credentials import read_secret_reference, select_credentials
from serversync.errors import ConfigurationError
from serversync.model import (
    Credentials,
    EmailServerProfile,
    Mailbox,
    MailboxId,
    ProfileId,
    SecretReference,
    Workload,
)
from serversync.ports import CredentialProvider

from ._codec import dump, load
from ._rows import upsert
from ._schema import secret_references
from ._storage import SqlStorage, _rows

__all__ = ["SqlCredentials"]


@final
@documented_by(CredentialProvider)
class SqlCredentials:
    """Reads where a mailbox's or profile's secret lives from the store, and the secret from
    there (an environment variable or a file) at each connection. Secrets never enter the
    database."""

    def __init__(self, storage: SqlStorage) -> None:
        self._storage = storage

    async def set_for_mailbox(self, mailbox_id: MailboxId, reference: SecretReference) -> None:
        """Record where ``mailbox_id``'s secret lives."""
        await self._set(f"mailbox:{mailbox_id}", reference)

    async def set_for_profile(self, profile_id: ProfileId, reference: SecretReference) -> None:
        """Record where the secret of a profile with its own credentials lives."""
        await self._set(f"profile:{profile_id}", reference)

    async def _set(self, owner: str, reference: SecretReference) -> None:
        await self._storage.transactions.write(
            lambda c: upsert(c, secret_references, {"owner": owner}, {"data": dump(reference)}),
            retry=True,
        )

    async def references(
        self,
    ) -> tuple[dict[MailboxId, SecretReference], dict[ProfileId, SecretReference]]:
        """Every recorded reference, by mailbox and by profile."""
        by_mailbox: dict[MailboxId, SecretReference] = {}
        by_profile: dict[ProfileId, SecretReference] = {}
        query = select(secret_references.c.owner, secret_references.c.data)
        rows = await self._storage.transactions.read(lambda c: _rows(c, query))
        for row in rows:
            kind, _, owner_id = str(row.owner).partition(":")
            reference = load(row.data, SecretReference)
            if kind == "mailbox":
                by_mailbox[MailboxId(owner_id)] = reference
            else:
                by_profile[ProfileId(owner_id)] = reference
        return by_mailbox, by_profile

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        by_mailbox, by_profile = await self.references()
        reference = select_credentials(
            mailbox, profile, workload, by_mailbox=by_mailbox, by_profile=by_profile
        )
        if reference is None:
            return None
        try:
            return read_secret_reference(reference)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, mailbox_id=mailbox.id) from None
