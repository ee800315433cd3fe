"""The SMTP server of the SMTP measure, run as ``python -m bench._smtp_sink PORT``.

aiosmtpd on 127.0.0.1:PORT accepting every message, and any AUTH PLAIN or LOGIN (plain text,
on loopback). It prints ``READY`` once listening;
then each ``count`` line on stdin is answered with the number of messages accepted so far,
and the end of stdin stops it.
"""

from __future__ import annotations

import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        return "250 2.0.0 Ok: queued"


def _accept(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
) -> AuthResult:
    return AuthResult(success=True)


def main() -> None:
    # aiosmtpd 1.4 itself sets the deprecated Session.login_data after every AUTH.
    warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
    port = int(sys.argv[1])
    handler = _Counter()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        data_size_limit=64 * 2**20,
        authenticator=_accept,
        auth_require_tls=False,
    )
    controller.start()
    print("READY", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "count":
                print(handler.count, flush=True)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
