"""Failure injection at exact points of the in-memory adapters."""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable

import attrs

__all__ = ["FaultPlan", "FaultPoint", "SimulatedCrash"]


class SimulatedCrash(BaseException):
    """Stands for the process dying at an await.

    A ``BaseException`` so that no ``except Exception`` in the engine can handle it: like a
    killed process, it leaves state exactly as it was at that point.
    """


class FaultPoint(enum.StrEnum):
    """Whether a fault fires before an operation takes effect or after it did."""

    BEFORE = "before"
    AFTER = "after"


@attrs.define
class _Fault:
    operation: str
    error: Callable[[], BaseException]
    point: FaultPoint
    remaining: int
    skip: int = 0


@attrs.define
class FaultPlan:
    """Raises chosen errors at chosen operations, or at the n-th operation of any kind.

    ``calls`` logs every operation that reached a fault point, as ``(operation, point)``.
    """

    calls: list[tuple[str, FaultPoint]] = attrs.field(factory=list)
    _faults: list[_Fault] = attrs.field(factory=list)
    _countdown: int | None = None
    _countdown_error: Callable[[], BaseException] | None = None
    _countdown_point: FaultPoint | None = None

    def fail_next(
        self,
        operation: str,
        error: BaseException | Callable[[], BaseException],
        *,
        point: FaultPoint = FaultPoint.BEFORE,
        times: int = 1,
        skip: int = 0,
    ) -> None:
        """Raise ``error`` the next ``times`` times ``operation`` reaches ``point``, after
        letting ``skip`` such calls pass."""
        if isinstance(error, BaseException):
            instance = error

            def made() -> BaseException:
                return _copy(instance)

            self._faults.append(_Fault(operation, made, point, times, skip))
        else:
            self._faults.append(_Fault(operation, error, point, times, skip))

    def crash_after(
        self,
        count: int,
        error: Callable[[], BaseException] = SimulatedCrash,
        *,
        point: FaultPoint | None = None,
    ) -> None:
        """Raise ``error()`` at the ``count``-th fault point from now (0 = the next one),
        counting only points of kind ``point`` when given."""
        self._countdown = count
        self._countdown_error = error
        self._countdown_point = point

    def clear(self) -> None:
        """Forget every pending fault."""
        self._faults.clear()
        self.clear_countdown()

    def clear_countdown(self) -> None:
        """Forget a pending :meth:`crash_after`."""
        self._countdown = None
        self._countdown_error = None
        self._countdown_point = None

    def check(self, operation: str, point: FaultPoint) -> None:
        """Called by adapters at each fault point; raises when a fault is due."""
        self.calls.append((operation, point))
        if self._countdown is not None and self._countdown_point in (None, point):
            if self._countdown == 0:
                error = self._countdown_error or SimulatedCrash
                self.clear_countdown()
                raise error()
            self._countdown -= 1
        for fault in self._faults:
            if fault.operation == operation and fault.point is point and fault.remaining > 0:
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                raise fault.error()


def _copy(error: BaseException) -> BaseException:
    # Raising one instance twice chains tracebacks; raise a fresh object each time.
    try:
        return copy.copy(error)
    except Exception:  # an exception type that does not copy: reuse the instance
        return error
