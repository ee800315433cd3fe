"""Credentials as resolved at connect time. Secrets never appear in reprs, logs or errors."""

from __future__ import annotations

import enum

import attrs

__all__ = ["CredentialKind", "Credentials", "Secret", "SecretReference"]


@attrs.frozen(repr=False, eq=False)
class Secret:
    """A secret string that hides itself from ``repr`` and ``str``; call :meth:`reveal`."""

    _value: str

    def reveal(self) -> str:
        """The secret itself, for the one place that sends it to a server."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class CredentialKind(enum.StrEnum):
    """What the secret is: a password, an OAuth 2.0 access token (XOAUTH2 / bearer), or an
    application's client secret or certificate (the user name is then its client id) that a
    token source such as Microsoft Graph's MSAL client credentials exchanges for access
    tokens. A certificate secret is PEM text holding the private key and the certificate."""

    PASSWORD = "password"
    OAUTH2_ACCESS_TOKEN = "oauth2_access_token"
    OAUTH2_CLIENT_SECRET = "oauth2_client_secret"
    OAUTH2_CLIENT_CERTIFICATE = "oauth2_client_certificate"


@attrs.frozen(kw_only=True)
class Credentials:
    """A user name and its secret for one connection."""

    username: str
    secret: Secret
    kind: CredentialKind = CredentialKind.PASSWORD


def _one_place(instance: SecretReference, attribute: object, value: str | None) -> None:
    if (instance.environment_variable is None) == (instance.file is None):
        raise ValueError("a SecretReference names exactly one of environment_variable and file")


@attrs.frozen(kw_only=True)
class SecretReference:
    """Where a secret lives, so that only its place is stored: an environment variable or a
    file (its whole content, without the final line break), read when a connection opens."""

    username: str
    environment_variable: str | None = None
    file: str | None = attrs.field(default=None, validator=_one_place)
    kind: CredentialKind = CredentialKind.PASSWORD

    @property
    def place(self) -> str:
        """Where the secret is read from, for messages (never the secret itself)."""
        if self.environment_variable is not None:
            return f"environment variable {self.environment_variable}"
        return f"file {self.file}"
