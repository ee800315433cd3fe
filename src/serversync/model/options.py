"""Dynamics 365 option sets, with the integers Dataverse stores.

A CRM that mirrors Dynamics maps these values 1:1; names follow the Dynamics labels.
"""

from __future__ import annotations

import enum

__all__ = [
    "ActDeliveryMethod",
    "AuthenticationProtocol",
    "CorrelationMethod",
    "CredentialSource",
    "DecisionReason",
    "EmailApprovalStatus",
    "EmailDirection",
    "EmailStateCode",
    "EmailStatus",
    "IncomingDeliveryMethod",
    "IncomingFilteringMethod",
    "OutgoingDeliveryMethod",
    "ParticipationType",
    "RecordState",
    "ServerType",
    "TestStatus",
    "Workload",
]


class ServerType(enum.IntEnum):
    """``emailserverprofile.servertype``."""

    EXCHANGE_SERVER = 0
    OTHER_POP3_SMTP = 1
    EXCHANGE_SERVER_HYBRID = 2
    EXCHANGE_ONLINE_HYBRID = 3
    IMAP_SMTP = 4
    MICROSOFT_GRAPH = 100
    """serversync's own value, not a Dataverse one: Exchange Online through Microsoft Graph."""


class AuthenticationProtocol(enum.IntEnum):
    """``incomingauthenticationprotocol`` / ``outgoingauthenticationprotocol``."""

    AUTO_DETECT = 0
    NEGOTIATE = 1
    NTLM = 2
    BASIC = 3
    OAUTH = 4


class CredentialSource(enum.IntEnum):
    """``incomingcredentialretrieval`` / ``outgoingcredentialretrieval``: credential origin."""

    USER_OR_QUEUE = 0
    EMAIL_SERVER_PROFILE = 1
    SERVER_TO_SERVER = 2
    WINDOWS_INTEGRATED = 3
    WITHOUT_CREDENTIALS = 4
    GMAIL_OAUTH = 5
    EXCHANGE_HYBRID_MODERN_AUTH = 6
    AZURE_AD_OAUTH = 7


class IncomingDeliveryMethod(enum.IntEnum):
    """``mailbox.incomingemaildeliverymethod``."""

    NONE = 0
    OUTLOOK = 1
    SERVER_SIDE_SYNC = 2
    FORWARD_MAILBOX = 3


class OutgoingDeliveryMethod(enum.IntEnum):
    """``mailbox.outgoingemaildeliverymethod``."""

    NONE = 0
    OUTLOOK = 1
    SERVER_SIDE_SYNC = 2


class ActDeliveryMethod(enum.IntEnum):
    """``mailbox.actdeliverymethod`` (note: a different order from the email pick-lists)."""

    OUTLOOK = 0
    SERVER_SIDE_SYNC = 1
    NONE = 2


class EmailApprovalStatus(enum.IntEnum):
    """``emailrouteraccessapproval`` ("Email Address Status")."""

    EMPTY = 0
    APPROVED = 1
    PENDING_APPROVAL = 2
    REJECTED = 3


class TestStatus(enum.IntEnum):
    """``incomingemailstatus`` / ``outgoingemailstatus`` / ``actstatus`` / ``mailboxstatus``."""

    __test__ = False  # not a pytest test class despite its name

    NOT_RUN = 0
    SUCCESS = 1
    FAILURE = 2


class RecordState(enum.IntEnum):
    """``statecode`` of mailboxes and profiles."""

    ACTIVE = 0
    INACTIVE = 1


class EmailStateCode(enum.IntEnum):
    """``email.statecode``."""

    OPEN = 0
    COMPLETED = 1
    CANCELED = 2


class EmailStatus(enum.IntEnum):
    """``email.statuscode``. Pending Send and Sending are Completed; Failed is Open."""

    DRAFT = 1
    COMPLETED = 2
    SENT = 3
    RECEIVED = 4
    CANCELED = 5
    PENDING_SEND = 6
    SENDING = 7
    FAILED = 8

    @property
    def state(self) -> EmailStateCode:
        """The ``statecode`` this status belongs to."""
        if self in (EmailStatus.DRAFT, EmailStatus.FAILED):
            return EmailStateCode.OPEN
        if self is EmailStatus.CANCELED:
            return EmailStateCode.CANCELED
        return EmailStateCode.COMPLETED


class EmailDirection(enum.IntEnum):
    """``email.directioncode`` (Dataverse stores a boolean: true is Outgoing)."""

    INCOMING = 0
    OUTGOING = 1


class CorrelationMethod(enum.IntEnum):
    """``email.correlationmethod``."""

    NONE = 0
    SKIPPED = 1
    XHEADER = 2
    IN_REPLY_TO = 3
    TRACKING_TOKEN = 4
    CONVERSATION_INDEX = 5
    SMART_MATCHING = 6
    CUSTOM_CORRELATION = 7


class IncomingFilteringMethod(enum.IntEnum):
    """``incomingemailfilteringmethod`` of a user (usersettings) or a queue."""

    ALL_EMAIL_MESSAGES = 0
    IN_RESPONSE_TO_CRM_EMAIL = 1
    FROM_LEADS_CONTACTS_ACCOUNTS = 2
    FROM_EMAIL_ENABLED_RECORDS = 3
    NO_EMAIL_MESSAGES = 4


class DecisionReason(enum.IntEnum):
    """The ``CheckIncomingEmail`` reason codes: why an incoming email was or was not tracked."""

    UNKNOWN = -1
    DUPLICATE = 0
    NO_CORRELATION_MATCH = 1
    CORRELATION_MATCH = 2
    NO_RECIPIENT_MATCH = 3
    INTERNAL_EMAIL_REJECT = 4
    SENDER_MATCH = 5
    ACCEPT_ALL = 6
    INVALID_SENDER = 7


class ParticipationType(enum.IntEnum):
    """``activityparty.participationtypemask`` for email parties."""

    SENDER = 1
    TO_RECIPIENT = 2
    CC_RECIPIENT = 3
    BCC_RECIPIENT = 4
    OWNER = 9


class Workload(enum.StrEnum):
    """The three things a mailbox synchronizes; each is enabled, scheduled and failed alone."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    ACT = "act"
