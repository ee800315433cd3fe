"""The exception hierarchy of :mod:`serversync.errors` and :class:`ErrorRecord`."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    ErrorScope,
    LeaseLostError,
    MalformedMessageError,
    MessageRejectedError,
    OperationTimeoutError,
    PermanentError,
    RecipientsRefusedError,
    ServerBusyError,
    StorageConflictError,
    SyncError,
    TransientError,
)
from serversync.model import ErrorRecord

TRANSIENT_CLASSES: list[type[TransientError]] = [
    ConnectionFailedError,
    OperationTimeoutError,
    ServerBusyError,
    LeaseLostError,
    StorageConflictError,
]
PERMANENT_CLASSES: list[type[PermanentError]] = [
    AuthenticationError,
    ConfigurationError,
    MessageRejectedError,
    RecipientsRefusedError,
    MalformedMessageError,
]


MAILBOX = "mailbox:a@x.example"
CODE = "421"


def _instances() -> list[SyncError]:
    """One instance of every concrete error, each with every keyword attribute set."""
    return [
        ConnectionFailedError(
            "connection reset", mailbox_id=MAILBOX, server_code=CODE, scope=ErrorScope.ENGINE
        ),
        OperationTimeoutError("fetch timed out", mailbox_id=MAILBOX, server_code=CODE),
        ServerBusyError(
            "slow down", retry_after=timedelta(seconds=90), mailbox_id=MAILBOX, server_code=CODE
        ),
        LeaseLostError("claim taken over", mailbox_id=MAILBOX, server_code=CODE),
        StorageConflictError("write raced", mailbox_id=MAILBOX, server_code=CODE),
        AuthenticationError("login refused", mailbox_id=MAILBOX, server_code=CODE),
        ConfigurationError(
            "no profile", mailbox_id=MAILBOX, server_code=CODE, scope=ErrorScope.ENGINE
        ),
        MessageRejectedError(
            "rejected", server_message="554 5.7.1 spam", mailbox_id=MAILBOX, server_code=CODE
        ),
        RecipientsRefusedError(
            "every recipient refused",
            recipients={"a@x.example": "550 no such user", "b@x.example": "550 gone"},
            mailbox_id=MAILBOX,
            server_code=CODE,
        ),
        MalformedMessageError(
            "unparseable", reason="no header fields", mailbox_id=MAILBOX, server_code=CODE
        ),
    ]


@pytest.mark.parametrize("cls", TRANSIENT_CLASSES)
def test_transient_errors_are_retryable(cls: type[TransientError]) -> None:
    assert issubclass(cls, TransientError)
    assert issubclass(cls, SyncError)
    assert not issubclass(cls, PermanentError)
    assert cls.transient is True


@pytest.mark.parametrize("cls", PERMANENT_CLASSES)
def test_permanent_errors_are_not_retryable(cls: type[PermanentError]) -> None:
    assert issubclass(cls, PermanentError)
    assert issubclass(cls, SyncError)
    assert not issubclass(cls, TransientError)
    assert cls.transient is False


def test_the_two_branches_cover_every_concrete_error() -> None:
    concrete = {type(error) for error in _instances()}
    assert concrete == set(TRANSIENT_CLASSES) | set(PERMANENT_CLASSES)


def test_operation_timeout_is_a_builtin_timeout_error() -> None:
    error = OperationTimeoutError("too slow")
    assert isinstance(error, TimeoutError)
    with pytest.raises(TimeoutError, match="too slow"):
        raise error


def test_connection_failed_is_a_builtin_connection_error() -> None:
    error = ConnectionFailedError("refused")
    assert isinstance(error, ConnectionError)
    assert isinstance(error, OSError)
    with pytest.raises(ConnectionError, match="refused"):
        raise error


def test_other_errors_do_not_pretend_to_be_builtin_io_errors() -> None:
    for error in _instances():
        if isinstance(error, ConnectionFailedError | OperationTimeoutError):
            continue
        assert not isinstance(error, OSError)


@pytest.mark.parametrize("error", _instances(), ids=lambda e: type(e).__name__)
def test_pickling_keeps_the_message_and_every_keyword_attribute(error: SyncError) -> None:
    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is type(error)
    assert restored.message == error.message
    assert restored.args == error.args
    assert str(restored) == str(error)
    assert restored.mailbox_id == error.mailbox_id == MAILBOX
    assert restored.server_code == error.server_code == CODE
    assert restored.scope is error.scope
    assert restored.transient is error.transient
    assert vars(restored) == vars(error)


def test_pickling_keeps_the_specific_attributes() -> None:
    busy, rejected, refused, malformed = (
        pickle.loads(pickle.dumps(error))
        for error in _instances()
        if isinstance(
            error,
            ServerBusyError | MessageRejectedError | RecipientsRefusedError | MalformedMessageError,
        )
    )
    assert isinstance(busy, ServerBusyError)
    assert busy.retry_after == timedelta(seconds=90)
    assert isinstance(rejected, MessageRejectedError)
    assert rejected.server_message == "554 5.7.1 spam"
    assert isinstance(refused, RecipientsRefusedError)
    assert refused.recipients == {"a@x.example": "550 no such user", "b@x.example": "550 gone"}
    assert isinstance(malformed, MalformedMessageError)
    assert malformed.reason == "no header fields"


def test_pickling_keeps_an_explicit_scope() -> None:
    error = ConfigurationError("unsupported server type", scope=ErrorScope.ENGINE)
    restored = pickle.loads(pickle.dumps(error))
    assert restored.scope is ErrorScope.ENGINE


def test_pickling_keeps_unset_attributes_unset() -> None:
    restored = pickle.loads(pickle.dumps(ServerBusyError("busy")))
    assert isinstance(restored, ServerBusyError)
    assert restored.retry_after is None
    assert restored.mailbox_id is None
    assert restored.server_code is None
    assert restored.scope is ErrorScope.MAILBOX


@pytest.mark.parametrize(
    "error",
    [
        MessageRejectedError("rejected"),
        RecipientsRefusedError("refused", recipients={"a@x.example": "550"}),
        MalformedMessageError("broken", reason="bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_item_level_errors_default_to_item_scope(error: SyncError) -> None:
    assert error.scope is ErrorScope.ITEM


@pytest.mark.parametrize(
    "error",
    [
        ConnectionFailedError("x"),
        OperationTimeoutError("x"),
        ServerBusyError("x"),
        LeaseLostError("x"),
        StorageConflictError("x"),
        AuthenticationError("x"),
        ConfigurationError("x"),
        SyncError("x"),
        TransientError("x"),
        PermanentError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_default_to_mailbox_scope(error: SyncError) -> None:
    assert error.scope is ErrorScope.MAILBOX


def test_an_explicit_scope_overrides_the_default() -> None:
    assert MessageRejectedError("x", scope=ErrorScope.MAILBOX).scope is ErrorScope.MAILBOX
    assert AuthenticationError("x", scope=ErrorScope.ITEM).scope is ErrorScope.ITEM


def test_str_includes_server_code_and_mailbox() -> None:
    error = AuthenticationError("login refused", mailbox_id="mailbox:a@x.example", server_code="NO")
    text = str(error)
    assert text.startswith("login refused")
    assert "NO" in text
    assert "mailbox:a@x.example" in text


def test_str_is_just_the_message_without_code_or_mailbox() -> None:
    assert str(ConfigurationError("no profile")) == "no profile"


def test_error_record_from_a_sync_error() -> None:
    error = ServerBusyError(
        "slow down",
        retry_after=timedelta(minutes=2),
        mailbox_id="mailbox:a@x.example",
        server_code="421",
    )
    record = ErrorRecord.from_exception(error)
    assert record.error_type == "ServerBusyError"
    assert record.message == str(error)
    assert "421" in record.message
    assert record.transient is True
    assert record.scope == "mailbox"
    assert record.server_code == "421"
    assert record.retry_after == timedelta(minutes=2)


def test_error_record_from_a_permanent_item_error() -> None:
    record = ErrorRecord.from_exception(MessageRejectedError("rejected", server_code="554"))
    assert record.error_type == "MessageRejectedError"
    assert record.transient is False
    assert record.scope == "item"
    assert record.server_code == "554"
    assert record.retry_after is None


def test_error_record_from_a_plain_exception_is_transient() -> None:
    record = ErrorRecord.from_exception(KeyError("boom"))
    assert record.error_type == "KeyError"
    assert "boom" in record.message
    assert record.transient is True
    assert record.scope == "mailbox"
    assert record.server_code is None
    assert record.retry_after is None


def test_error_record_of_an_exception_without_message_names_its_type() -> None:
    record = ErrorRecord.from_exception(RuntimeError())
    assert record.message == "RuntimeError"
    assert record.transient is True
