"""Idle timeout by a coarse periodic sweep: no timer and no clock read per frame.

The frame scanners already count the bytes each side sends (pings and pongs included). Every
:func:`sweep_interval` seconds the router compares each connection's byte total with the one
it saw at the previous sweep; a connection whose total has not moved for ``timeout`` seconds
is closed with 1001 "idle timeout" both ways. Because a change is only noticed at a sweep, a
connection is closed between ``timeout`` and ``timeout + 2 * interval`` (<= 1.2 x timeout)
after its last byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

IDLE_REASON = "idle timeout"
MIN_INTERVAL = 0.5


class Watched(Protocol):
    """What the sweep needs of a connection (a :class:`router.relay.Relay`)."""

    activity: int  # byte total seen at the last sweep
    idle_since: float  # when that total last changed (as seen by the sweeps)

    @property
    def total_bytes(self) -> int: ...


W = TypeVar("W", bound=Watched)


def sweep_interval(timeout: float) -> float:
    """Seconds between sweeps for an idle ``timeout``: a tenth of it, at least 0.5 s."""
    return max(MIN_INTERVAL, timeout / 10.0)


def idle_connections(connections: Iterable[W], now: float, timeout: float) -> list[W]:
    """Update each connection's mark; return those without a byte for ``timeout`` seconds."""
    idle: list[W] = []
    for conn in connections:
        total = conn.total_bytes
        if total != conn.activity:
            conn.activity = total
            conn.idle_since = now
        elif now - conn.idle_since >= timeout:
            idle.append(conn)
    return idle
