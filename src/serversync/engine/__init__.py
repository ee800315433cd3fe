"""The engine: the only place that awaits ports."""

from serversync.engine._engine import SyncEngine
from serversync.engine._observer import BaseSyncObserver
from serversync.engine._system_clock import SystemClock
from serversync.engine._transports import Transports

__all__ = ["BaseSyncObserver", "SyncEngine", "SystemClock", "Transports"]
