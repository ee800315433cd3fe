"""Mail transport adapters."""

from serversync.adapters.transports.smtp import SmtpTransport

__all__: list[str] = ["SmtpTransport"]
