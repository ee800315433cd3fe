"""Simple credential providers for tests, examples and small hosts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

from serversync.errors import ConfigurationError
from serversync.model import (
    Credentials,
    CredentialSource,
    EmailServerProfile,
    Mailbox,
    MailboxId,
    ProfileId,
    Workload,
)
from serversync.ports import CredentialProvider

__all__ = ["MappingCredentials"]


@final
class MappingCredentials(CredentialProvider):
    """Credentials from two mappings, chosen by the profile's credential source.

    * "Credentials specified in email server profile": ``by_profile[profile.id]``;
    * "Without credentials": ``None``;
    * every other source: ``by_mailbox[mailbox.id]``, and for "specified by a user or
      queue" only when the mailbox allows the connector to use its credentials, as in
      Dynamics.
    """

    def __init__(
        self,
        *,
        by_mailbox: Mapping[MailboxId, Credentials] | None = None,
        by_profile: Mapping[ProfileId, Credentials] | None = None,
    ) -> None:
        self._by_mailbox = dict(by_mailbox or {})
        self._by_profile = dict(by_profile or {})

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        source = (
            profile.outgoing_credential_source
            if workload is Workload.OUTGOING
            else profile.incoming_credential_source
        )
        if source is CredentialSource.WITHOUT_CREDENTIALS:
            return None
        if source is CredentialSource.EMAIL_SERVER_PROFILE:
            found = self._by_profile.get(profile.id)
            where = f"profile {profile.name!r}"
        else:
            if (
                source is CredentialSource.USER_OR_QUEUE
                and not mailbox.allow_email_connector_to_use_credentials
            ):
                raise ConfigurationError(
                    "the mailbox does not allow the email connector to use its credentials",
                    mailbox_id=mailbox.id,
                )
            found = self._by_mailbox.get(mailbox.id)
            where = f"mailbox {mailbox.name!r}"
        if found is None:
            raise ConfigurationError(
                f"no credentials for {where} ({source.name})", mailbox_id=mailbox.id
            )
        return found
