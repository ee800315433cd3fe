"""The EWS server of the EWS measure, run as ``python -m bench._ews_server JSON``.

serversync's EWS test server (:mod:`serversync.testing.ews`) in a process of its own, with
one mailbox holding the settings' generated mail. It prints its URL once serving and stops
when its stdin closes.
"""

from __future__ import annotations

import json
import sys

from bench._mail import MailPlan
from serversync.testing.ews import EwsTestServer


def main() -> None:
    settings = json.loads(sys.argv[1])
    plan = MailPlan(seed=settings["seed"], owner=settings["user"], count=settings["count"])
    with EwsTestServer() as server:
        server.add_mailbox(plan.owner, password=settings["password"])
        for data in plan.messages():
            server.deliver(plan.owner, data)
        print(server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
