"""Simple credential providers for tests, examples and small hosts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar, final

from serversync.adapters._ports_docs import documented_by
from serversync.errors import ConfigurationError
from serversync.model import (
    Credentials,
    CredentialSource,
    EmailServerProfile,
    Mailbox,
    MailboxId,
    ProfileId,
    Secret,
    SecretReference,
    Workload,
)
from serversync.ports import CredentialProvider

__all__ = ["MappingCredentials", "ReferencedCredentials", "read_secret_reference"]

_T = TypeVar("_T")


def select_credentials(
    mailbox: Mailbox,
    profile: EmailServerProfile,
    workload: Workload,
    *,
    by_mailbox: Mapping[MailboxId, _T],
    by_profile: Mapping[ProfileId, _T],
) -> _T | None:
    """The entry the profile's credential source points at, as Dynamics chooses it.

    * "Credentials specified in email server profile": ``by_profile[profile.id]``;
    * "Without credentials": ``None``;
    * every other source: ``by_mailbox[mailbox.id]``, and for "specified by a user or
      queue" only when the mailbox allows the connector to use its credentials.

    Raises :class:`~serversync.errors.ConfigurationError` when the entry is missing.
    """
    source = (
        profile.outgoing_credential_source
        if workload is Workload.OUTGOING
        else profile.incoming_credential_source
    )
    if source is CredentialSource.WITHOUT_CREDENTIALS:
        return None
    if source is CredentialSource.EMAIL_SERVER_PROFILE:
        found = by_profile.get(profile.id)
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
        found = by_mailbox.get(mailbox.id)
        where = f"mailbox {mailbox.name!r}"
    if found is None:
        raise ConfigurationError(
            f"no credentials for {where} ({source.name})", mailbox_id=mailbox.id
        )
    return found


@final
@documented_by(CredentialProvider)
class MappingCredentials:
    """Credentials from two mappings, chosen by the profile's credential source (see
    :func:`select_credentials`)."""

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
        return select_credentials(
            mailbox, profile, workload, by_mailbox=self._by_mailbox, by_profile=self._by_profile
        )


def read_secret_reference(reference: SecretReference) -> Credentials:
    """The credentials a reference points at, read now.

    Raises :class:`~serversync.errors.ConfigurationError` naming the place (never a secret)
    when the variable is unset or the file cannot be read.
    """
    if reference.environment_variable is not None:
        value = os.environ.get(reference.environment_variable)
        if not value:
            raise ConfigurationError(f"the {reference.place} is not set")
    else:
        assert reference.file is not None
        try:
            value = Path(reference.file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(
                f"the {reference.place} cannot be read: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigurationError(f"the {reference.place} is empty")
    return Credentials(username=reference.username, secret=Secret(value), kind=reference.kind)


@final
@documented_by(CredentialProvider)
class ReferencedCredentials:
    """Credentials whose secrets live in environment variables or files, read at each
    connection (so a rotated password or refreshed token file is picked up)."""

    def __init__(
        self,
        *,
        by_mailbox: Mapping[MailboxId, SecretReference] | None = None,
        by_profile: Mapping[ProfileId, SecretReference] | None = None,
    ) -> None:
        self._by_mailbox = dict(by_mailbox or {})
        self._by_profile = dict(by_profile or {})

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        reference = select_credentials(
            mailbox, profile, workload, by_mailbox=self._by_mailbox, by_profile=self._by_profile
        )
        if reference is None:
            return None
        try:
            return read_secret_reference(reference)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, mailbox_id=mailbox.id) from None
