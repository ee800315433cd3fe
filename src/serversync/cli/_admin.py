"""``serversync profile ...`` and ``serversync mailbox ...``: the store's configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import click
from rich.table import Table

from serversync import (
    ActDeliveryMethod,
    AuthenticationProtocol,
    ConfigurationError,
    CredentialKind,
    CredentialSource,
    CrmRecord,
    DefaultEmailSettings,
    EmailApprovalStatus,
    EmailServerProfile,
    EntityName,
    IncomingFilteringMethod,
    MailboxTestReport,
    ProfileId,
    RecordRef,
    SecretReference,
    ServerEndpoint,
    ServerType,
    TestStatus,
    TlsMode,
    check_mailbox,
    new_mailbox,
)

from ._output import console, fail, show_error
from ._store import Store, mailbox_id_for, open_store, require_store, store_url

__all__ = ["mailbox", "profile"]

_T = TypeVar("_T")

_SERVER_TYPES = {
    "imap": ServerType.IMAP_SMTP,
    "pop3": ServerType.OTHER_POP3_SMTP,
    "exchange": ServerType.EXCHANGE_SERVER,
    "graph": ServerType.MICROSOFT_GRAPH,
}
_SOURCES = {
    "mailbox": CredentialSource.USER_OR_QUEUE,
    "profile": CredentialSource.EMAIL_SERVER_PROFILE,
    "none": CredentialSource.WITHOUT_CREDENTIALS,
}
_FILTERS = {
    "all": IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
    "responses": IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL,
    "contacts": IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS,
    "email-enabled": IncomingFilteringMethod.FROM_EMAIL_ENABLED_RECORDS,
    "none": IncomingFilteringMethod.NO_EMAIL_MESSAGES,
}


def with_store(
    context: click.Context, work: Callable[[Store], Awaitable[_T]], *, upgrade: bool = False
) -> _T:
    """Run ``work`` on the store the command line names; errors end the command cleanly."""
    url = store_url(context.obj)
    try:
        require_store(url, upgrade=upgrade)
    except Exception as exc:
        show_error(exc)
        raise SystemExit(1) from None

    async def main() -> _T:
        async with open_store(url, upgrade=upgrade) as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except Exception as exc:
        show_error(exc)
        raise SystemExit(1) from None


def _endpoint(
    value: str | None, tls: str, verify: bool, ca_file: str | None
) -> ServerEndpoint | None:
    if value is None:
        return None
    if "://" in value:  # an EWS or Graph URL is the host as a whole
        host, port = value, ""
    else:
        host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    return ServerEndpoint(
        host=host or value,
        port=int(port) if port else None,
        tls=TlsMode(tls),
        verify_certificate=verify,
        ca_file=ca_file,
    )


def _secret(
    username: str | None, env: str | None, file: str | None, oauth2: bool
) -> SecretReference | None:
    if env is None and file is None:
        return None
    if env is not None and file is not None:
        fail("give the secret's place once: --password-env or --password-file")
    if username is None:
        fail("--username is needed with --password-env or --password-file")
    kind = CredentialKind.OAUTH2_ACCESS_TOKEN if oauth2 else CredentialKind.PASSWORD
    return SecretReference(username=username, environment_variable=env, file=file, kind=kind)


def _secret_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--username", help="User name to log in with."),
            click.option("--password-env", metavar="VAR", help="Read the secret from $VAR."),
            click.option("--password-file", metavar="PATH", help="Read the secret from a file."),
            click.option("--oauth2", is_flag=True, help="The secret is an OAuth 2.0 token."),
        ]
    ):
        command = option(command)
    return command


@click.group()
def profile() -> None:
    """Email server profiles: where mailboxes connect and how."""


@profile.command("add")
@click.argument("name")
@click.option("--id", "profile_id", help="Profile id (default: the name).")
@click.option("--type", "server_type", type=click.Choice(sorted(_SERVER_TYPES)), default="imap")
@click.option(
    "--incoming",
    metavar="HOST[:PORT]|URL",
    required=True,
    help="Incoming server (the EWS or Graph URL for exchange and graph).",
)
@click.option("--outgoing", metavar="HOST[:PORT]", help="SMTP server (default: incoming host).")
@click.option("--tls", type=click.Choice([m.value for m in TlsMode]), default="implicit")
@click.option("--outgoing-tls", type=click.Choice([m.value for m in TlsMode]))
@click.option("--ca-file", help="CA bundle that signed the servers' certificates.")
@click.option("--no-verify", is_flag=True, help="Do not verify certificates (tests only).")
@click.option(
    "--credentials",
    "source",
    type=click.Choice(sorted(_SOURCES)),
    default="mailbox",
    help="Whose credentials connect: each mailbox's, the profile's, or none.",
)
@click.option("--max-connections", type=click.IntRange(1, 300), default=10)
@click.option(
    "--sent-folder", metavar="FOLDER", help="IMAP folder that keeps a copy of each sent email."
)
@_secret_options
@click.pass_context
def profile_add(
    context: click.Context,
    name: str,
    profile_id: str | None,
    server_type: str,
    incoming: str,
    outgoing: str | None,
    tls: str,
    outgoing_tls: str | None,
    ca_file: str | None,
    no_verify: bool,
    source: str,
    max_connections: int,
    sent_folder: str | None,
    username: str | None,
    password_env: str | None,
    password_file: str | None,
    oauth2: bool,
) -> None:
    """Add or replace a profile. Secrets stay where they are: only their place is stored."""
    auth = AuthenticationProtocol.OAUTH if oauth2 else AuthenticationProtocol.BASIC
    created = EmailServerProfile(
        id=ProfileId(profile_id or name),
        name=name,
        server_type=_SERVER_TYPES[server_type],
        incoming=_endpoint(incoming, tls, not no_verify, ca_file),
        outgoing=_endpoint(outgoing, outgoing_tls or tls, not no_verify, ca_file),
        incoming_authentication=auth,
        outgoing_authentication=auth,
        incoming_credential_source=_SOURCES[source],
        outgoing_credential_source=_SOURCES[source],
        max_concurrent_connections=max_connections,
        sent_folder=sent_folder,
    )
    reference = _secret(username, password_env, password_file, oauth2)
    if source == "profile" and reference is None:
        fail("--credentials profile needs --username and --password-env or --password-file")

    async def work(store: Store) -> None:
        await store.storage.add_profile(created)
        if reference is not None:
            await store.credentials.set_for_profile(created.id, reference)

    with_store(context, work)
    console().print(f"profile [bold]{created.id}[/] saved")


@profile.command("list")
@click.pass_context
def profile_list(context: click.Context) -> None:
    """List the profiles."""
    found = with_store(context, lambda store: store.storage.list_profiles())
    table = Table("id", "name", "type", "incoming", "outgoing", "credentials")
    for item in found:
        table.add_row(
            item.id,
            item.name,
            item.server_type.name,
            _where(item.incoming),
            _where(item.outgoing_endpoint),
            item.incoming_credential_source.name,
        )
    console().print(table)


@profile.command("show")
@click.argument("profile_id")
@click.pass_context
def profile_show(context: click.Context, profile_id: str) -> None:
    """Show one profile's settings (never a secret)."""

    async def work(store: Store) -> tuple[EmailServerProfile | None, SecretReference | None]:
        found = await store.storage.get_profile(ProfileId(profile_id))
        _, by_profile = await store.credentials.references()
        return found, by_profile.get(ProfileId(profile_id))

    found, reference = with_store(context, work)
    if found is None:
        fail(f"no profile {profile_id}")
    table = Table("setting", "value", show_header=False)
    for field in attrs.fields(EmailServerProfile):
        table.add_row(field.name, _value(getattr(found, field.name)))
    if reference is not None:
        table.add_row("secret", f"{reference.username} from the {reference.place}")
    console().print(table)


@click.group()
def mailbox() -> None:
    """Mailboxes of users and queues."""


@mailbox.command("add")
@click.argument("address")
@click.option("--profile", "profile_id", required=True, help="Id of its email server profile.")
@click.option("--queue", is_flag=True, help="The mailbox of a queue (default: of a user).")
@click.option("--name", help="Display name (default: the address).")
@click.option(
    "--filter",
    "filtering",
    type=click.Choice(list(_FILTERS)),
    default="responses",
    help="Which incoming email is tracked (Dynamics' incoming email filtering method).",
)
@click.option("--approve", is_flag=True, help="Approve the email address at once.")
@click.option(
    "--act",
    is_flag=True,
    help="Also synchronize appointments, contacts and tasks (Exchange and Graph profiles).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the mailbox's settings if it exists (its statuses start again).",
)
@_secret_options
@click.pass_context
def mailbox_add(
    context: click.Context,
    address: str,
    profile_id: str,
    queue: bool,
    name: str | None,
    filtering: str,
    approve: bool,
    act: bool,
    replace: bool,
    username: str | None,
    password_env: str | None,
    password_file: str | None,
    oauth2: bool,
) -> None:
    """Add the mailbox of a user or queue, and that user or queue. A user or queue has one
    mailbox: adding it again is refused unless --replace says to replace its settings."""
    address = address.strip().lower()
    entity = EntityName.QUEUE if queue else EntityName.SYSTEMUSER
    owner = RecordRef(entity.value, address)
    approval = EmailApprovalStatus.APPROVED if approve else EmailApprovalStatus.EMPTY
    reference = _secret(username or address, password_env, password_file, oauth2)
    try:
        provisioned = new_mailbox(
            owner,
            address,
            defaults=DefaultEmailSettings(
                profile_id=ProfileId(profile_id),
                act_delivery_method=(
                    ActDeliveryMethod.SERVER_SIDE_SYNC if act else ActDeliveryMethod.NONE
                ),
            ),
            mailbox_id=mailbox_id_for(address),
            name=name,
        )
    except ConfigurationError as exc:
        fail(str(exc))
    created = attrs.evolve(
        provisioned,
        username=reference.username if reference else username,
        allow_email_connector_to_use_credentials=reference is not None,
        approval=approval,
    )
    record = CrmRecord(
        ref=owner,
        email_address=address,
        name=name or address,
        incoming_filtering_method=_FILTERS[filtering],
        mailbox_id=created.id,
        approval=approval,
    )

    async def work(store: Store) -> None:
        if await store.storage.get_profile(ProfileId(profile_id)) is None:
            fail(f"no profile {profile_id}: add it with `serversync profile add`")
        if replace:
            # The same mailbox (its id and owner come from the address), new settings.
            check_mailbox(created)
            await store.storage.add_mailbox(created)
        else:
            async with store.engine() as engine:
                # The engine applies the lifecycle rules: one mailbox per user or queue.
                await engine.add_mailbox(created)
        await store.directory.add(record)
        if reference is not None:
            await store.credentials.set_for_mailbox(created.id, reference)

    with_store(context, work)
    console().print(f"mailbox [bold]{address}[/] saved")


@mailbox.command("list")
@click.pass_context
def mailbox_list(context: click.Context) -> None:
    """List the mailboxes with their approval and test statuses."""
    found = with_store(context, lambda store: store.storage.list_mailboxes())
    table = Table("address", "owner", "profile", "approval", "incoming", "outgoing", "tested")
    for item in found:
        table.add_row(
            item.email_address,
            item.owner.entity if item.owner else "forward",
            item.profile_id or "-",
            item.approval.name,
            _workload_cell(item.enabled_for_incoming, item.incoming_status),
            _workload_cell(item.enabled_for_outgoing, item.outgoing_status),
            _value(item.test_completed_on),
        )
    console().print(table)


@mailbox.command("approve")
@click.argument("address")
@click.pass_context
def mailbox_approve(context: click.Context, address: str) -> None:
    """Approve a mailbox's email address (required before it syncs, by default)."""

    async def work(store: Store) -> None:
        async with store.engine() as engine:
            found = await engine.set_mailbox_approval(mailbox_id_for(address))
        if found.owner is not None:
            record = await store.directory.get_record(found.owner)
            if record is not None:
                await store.directory.add(
                    attrs.evolve(record, approval=EmailApprovalStatus.APPROVED)
                )

    with_store(context, work)
    console().print(f"mailbox [bold]{address}[/] approved")


@mailbox.command("test")
@click.argument("address")
@click.pass_context
def mailbox_test(context: click.Context, address: str) -> None:
    """Test & Enable: connect each workload, enable what works, report what does not."""

    async def work(store: Store) -> MailboxTestReport:
        async with store.engine() as engine:
            return await engine.test_mailbox(mailbox_id_for(address))

    report = with_store(context, work)
    table = Table("workload", "status", "reason")
    for result in report.results:
        reason = f"{result.error.error_type}: {result.error.message}" if result.error else ""
        style = "green" if result.status is TestStatus.SUCCESS else "red"
        table.add_row(result.workload.value, f"[{style}]{result.status.name}[/]", reason)
    console().print(table)
    if not report.succeeded:
        raise SystemExit(1)


def _where(endpoint: ServerEndpoint | None) -> str:
    if endpoint is None:
        return "-"
    port = f":{endpoint.port}" if endpoint.port else ""
    return f"{endpoint.host}{port} ({endpoint.tls.value})"


def _workload_cell(enabled: bool, status: TestStatus) -> str:
    return f"{'enabled' if enabled else 'disabled'}, {status.name.lower()}"


def _value(value: object) -> str:
    if value is None:
        return "-"
    if hasattr(value, "name") and hasattr(value, "value"):
        return str(value.name)
    return str(value)
