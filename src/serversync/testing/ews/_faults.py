"""Faults a test can make the server answer with: throttling, HTTP errors, SOAP faults,
a dropped connection or a slow reply."""

from __future__ import annotations

import threading

import attrs

__all__ = ["Delay", "DropConnection", "EwsFault", "Fault", "FaultPlan", "HttpError", "ServerBusy"]


@attrs.frozen
class ServerBusy:
    """Exchange's throttling answer: HTTP 500 with an ``ErrorServerBusy`` SOAP fault that
    carries ``BackOffMilliseconds``."""

    back_off_ms: int = 100


@attrs.frozen
class HttpError:
    """A bare HTTP error status (500, 503, ...) with an HTML body, as a failing front end
    answers."""

    status: int = 503


@attrs.frozen
class EwsFault:
    """A SOAP fault with any EWS response code, e.g. ``ErrorInternalServerTransientError``."""

    code: str
    text: str = "The EWS test server was asked to fail this request."


@attrs.frozen
class DropConnection:
    """Close the connection after reading the request, without answering."""


@attrs.frozen
class Delay:
    """Answer normally, but only after ``seconds``."""

    seconds: float


Fault = ServerBusy | HttpError | EwsFault | DropConnection | Delay


@attrs.define
class _Pending:
    fault: Fault
    remaining: int
    operation: str | None


class FaultPlan:
    """Faults waiting for the next requests, matched in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []

    def add(self, fault: Fault, times: int, operation: str | None) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._pending.append(_Pending(fault, times, operation))

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, operation: str) -> Fault | None:
        """The fault for this request, if one is waiting for it (or for any operation)."""
        with self._lock:
            for pending in self._pending:
                if pending.operation in (None, operation):
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._pending.remove(pending)
                    return pending.fault
        return None

    @property
    def remaining(self) -> int:
        """Requests still to be failed."""
        with self._lock:
            return sum(p.remaining for p in self._pending)
