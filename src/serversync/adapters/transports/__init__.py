"""Mail transport adapters."""

from serversync.adapters.transports.imap import ImapStats, ImapTransport
from serversync.adapters.transports.pop3 import Pop3Stats, Pop3Transport
from serversync.adapters.transports.smtp import SmtpTransport

__all__: list[str] = ["ImapStats", "ImapTransport", "Pop3Stats", "Pop3Transport", "SmtpTransport"]
