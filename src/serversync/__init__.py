"""serversync: an embeddable async engine that synchronizes CRM email with mail servers.

It does for any CRM backend what Dynamics 365 server-side synchronization does for Dynamics:
it reads incoming mail (IMAP, POP3, Exchange), decides which messages are relevant and
stores them once as email activities linked to the right records, and sends CRM email that
is pending send. Hosts provide storage and credentials through the ports in
:mod:`serversync.ports`; :mod:`serversync.testing` has in-memory adapters for tests.
"""

from importlib.metadata import PackageNotFoundError, version

from serversync.adapters.credentials import MappingCredentials, ReferencedCredentials
from serversync.adapters.storage._send_outcomes import apply_send_outcome
from serversync.engine import BaseSyncObserver, SyncEngine, SystemClock, Transports
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryUncertainError,
    DuplicateMailboxError,
    EmailAddressNotApprovedError,
    EngineStoppingError,
    ErrorScope,
    LeaseLostError,
    MalformedMessageError,
    MessageRejectedError,
    MessageTooLargeError,
    OperationTimeoutError,
    PermanentError,
    RecipientsRefusedError,
    ServerBusyError,
    StorageConflictError,
    SyncError,
    TransientError,
)
from serversync.model import *  # noqa: F403  (the model's __all__ is part of ours)
from serversync.model import __all__ as _model_all
from serversync.planning.lifecycle import check_mailbox, new_mailbox
from serversync.ports import *  # noqa: F403
from serversync.ports import __all__ as _ports_all
from serversync.relevance import AutoReplyRule, default_rules, evaluate
from serversync.settings import (
    ActSettings,
    AlertSettings,
    ConflictPolicy,
    DefaultEmailSettings,
    ExpiredClaimPolicy,
    Limits,
    LoopGuardSettings,
    OrganizationSettings,
    PushSettings,
    RetryPolicy,
    Schedule,
    SmartMatchingSettings,
    SyncSettings,
    Timeouts,
    TrackingTokenSettings,
)

try:
    __version__ = version("serversync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ActSettings",
    "AlertSettings",
    "AuthenticationError",
    "AutoReplyRule",
    "BaseSyncObserver",
    "ConfigurationError",
    "ConflictPolicy",
    "ConnectionFailedError",
    "DefaultEmailSettings",
    "DeliveryUncertainError",
    "DuplicateMailboxError",
    "EmailAddressNotApprovedError",
    "EngineStoppingError",
    "ErrorScope",
    "ExpiredClaimPolicy",
    "LeaseLostError",
    "Limits",
    "LoopGuardSettings",
    "MalformedMessageError",
    "MappingCredentials",
    "ReferencedCredentials",
    "MessageRejectedError",
    "MessageTooLargeError",
    "OperationTimeoutError",
    "OrganizationSettings",
    "PermanentError",
    "PushSettings",
    "RecipientsRefusedError",
    "RetryPolicy",
    "Schedule",
    "ServerBusyError",
    "SmartMatchingSettings",
    "StorageConflictError",
    "SyncEngine",
    "SyncError",
    "SyncSettings",
    "SystemClock",
    "Timeouts",
    "TrackingTokenSettings",
    "TransientError",
    "Transports",
    "__version__",
    "apply_send_outcome",
    "check_mailbox",
    "default_rules",
    "evaluate",
    "new_mailbox",
    *_model_all,
    *_ports_all,
]
