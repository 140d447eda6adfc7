"""Analytics events and the in-process pipeline that ships them in batches.

Two kinds of events, both plain data:

- :class:`HandshakeEvent`, one per upgrade request (allowed or denied, why, how long it took);
- :class:`ConnectionEvent`, per connection: the counters' deltas since its previous event,
  emitted by the periodic flush for connections that moved (so a long-lived connection
  reports at least every flush interval) and once more, ``final``, when it closes.

Nothing here runs per frame: the relay's frame scanners already count frames, messages and
bytes; the flush reads those counters and subtracts what was reported before
(:func:`delta`). The :class:`Pipeline` is a bounded queue (full -> the oldest event is
dropped and counted) drained by a periodic flusher into :class:`Sink` objects, one batch per
flush: a JSON-lines log or file. The Prometheus metrics do not come from here (the router
counts them itself, see :mod:`router.metrics`), so what the queue drops affects analytics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from wsgate_common.logs import info_writer

log = logging.getLogger(__name__)
events_log = logging.getLogger("wsgate.analytics")

DEFAULT_QUEUE = 10_000
DEFAULT_INTERVAL = 1.0


class Counts(NamedTuple):
    """A connection's counters at one moment (up = client -> backend, down = the reverse)."""

    frames_up: int = 0
    frames_down: int = 0
    messages_up: int = 0
    messages_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    throttled: int = 0


ZERO = Counts()


def delta(before: Counts, now: Counts) -> Counts:
    """What happened between two readings of the same connection's counters."""
    return Counts(*(b - a for a, b in zip(before, now, strict=True)))


@dataclass(frozen=True, slots=True)
class Tags:
    """What every event of a connection is tagged with."""

    request_id: str = ""
    api: str = ""  # name:version
    api_id: str = ""
    topic: str = ""
    application_id: str = ""
    key_type: str = ""
    client_ip: str = ""

    def as_dict(self) -> dict[str, object]:
        """The fields by name (what ``dataclasses.asdict`` gives, without its deep copy)."""
        return {
            "request_id": self.request_id,
            "api": self.api,
            "api_id": self.api_id,
            "topic": self.topic,
            "application_id": self.application_id,
            "key_type": self.key_type,
            "client_ip": self.client_ip,
        }


@dataclass(frozen=True, slots=True)
class HandshakeEvent:
    tags: Tags
    allowed: bool
    status: int
    reason: str
    latency_ms: float
    ts: float  # wall-clock time the event was made

    def to_dict(self) -> dict[str, object]:
        tags = self.tags
        return {  # (spelt out: no Tags.as_dict merge per event)
            "event": "handshake",
            "ts": round(self.ts, 3),
            "request_id": tags.request_id,
            "api": tags.api,
            "api_id": tags.api_id,
            "topic": tags.topic,
            "application_id": tags.application_id,
            "key_type": tags.key_type,
            "client_ip": tags.client_ip,
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    tags: Tags
    counts: Counts  # deltas since the connection's previous event
    duration_s: float  # since the connection started
    ts: float
    final: bool = False
    close_code: int | None = None
    closed_by: str = ""  # client, backend, router, unknown
    close_reason: str = ""  # the router's own reason when it closed the connection
    cause: str = ""  # why the router closed it: rule, token expiry, throttled, idle timeout

    def to_dict(self) -> dict[str, object]:
        tags, counts = self.tags, self.counts
        out: dict[str, object] = {  # (spelt out: no Tags.as_dict / _asdict merges per event)
            "event": "connection_closed" if self.final else "connection",
            "ts": round(self.ts, 3),
            "request_id": tags.request_id,
            "api": tags.api,
            "api_id": tags.api_id,
            "topic": tags.topic,
            "application_id": tags.application_id,
            "key_type": tags.key_type,
            "client_ip": tags.client_ip,
            "frames_up": counts.frames_up,
            "frames_down": counts.frames_down,
            "messages_up": counts.messages_up,
            "messages_down": counts.messages_down,
            "bytes_up": counts.bytes_up,
            "bytes_down": counts.bytes_down,
            "throttled": counts.throttled,
            "duration_s": round(self.duration_s, 3),
        }
        if self.final:
            out["close_code"] = self.close_code
            out["closed_by"] = self.closed_by
            out["close_reason"] = self.close_reason
            out["cause"] = self.cause
        return out


Event = HandshakeEvent | ConnectionEvent

# json.dumps with options builds an encoder per call; one, built once, does the same.
_compact = json.JSONEncoder(separators=(",", ":")).encode


class Sink(Protocol):
    """Where batches go. ``write`` must not block for long: it runs on the event loop."""

    def write(self, batch: Sequence[Event]) -> None: ...

    def close(self) -> None: ...


class JsonLinesLog:
    """One JSON object per event, logged at INFO on the ``wsgate.analytics`` logger."""

    def __init__(self, logger: logging.Logger = events_log) -> None:
        self.logger = logger

    def write(self, batch: Sequence[Event]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        write = info_writer(self.logger)  # the same lines without a LogRecord each
        if write is not None:
            for event in batch:
                write(_compact(event.to_dict()))
            return
        for event in batch:
            self.logger.info(_compact(event.to_dict()))

    def close(self) -> None:
        return None


class JsonLinesFile:
    """Appends one JSON object per line to ``path``; one write per batch."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        lines = [_compact(event.to_dict()) for event in batch]
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


Collect = Callable[[float], Iterable[Event]]  # wall-clock now -> events read at flush time


class Pipeline:
    """Bounded queue of events + a periodic flusher shipping them to the sinks in batches.

    Args:
        sinks: where each batch goes (a sink that raises is logged; the others still get it).
        collect: called at each flush before the queue is drained, for the events read at
            flush time (the per-connection deltas).
        capacity: queue bound; when full, the oldest event is dropped and :attr:`dropped`
            counts it.
        interval: seconds between flushes.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        collect: Collect | None = None,
        capacity: int = DEFAULT_QUEUE,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if capacity < 1 or interval <= 0:
            raise ValueError("the analytics queue needs capacity >= 1 and interval > 0")
        self.sinks = list(sinks)
        self.collect = collect
        self.capacity = capacity
        self.interval = interval
        self.queue: deque[Event] = deque()
        self.dropped = 0  # events dropped because the queue was full
        self.shipped = 0  # events handed to the sinks
        self.batches = 0
        self._task: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        queue = self.queue
        if len(queue) >= self.capacity:
            queue.popleft()
            self.dropped += 1
        queue.append(event)

    def flush(self) -> int:
        """Collect, drain the queue and ship it as one batch; returns the batch size."""
        if self.collect is not None:
            try:
                for event in self.collect(time.time()):
                    self.emit(event)
            except Exception:
                log.exception("analytics: collecting connection counters failed")
        if not self.queue:
            return 0
        batch = list(self.queue)
        self.queue.clear()
        for sink in self.sinks:
            try:
                sink.write(batch)
            except Exception:
                log.exception("analytics: sink %s failed", type(sink).__name__)
        self.shipped += len(batch)
        self.batches += 1
        return len(batch)

    def start(self) -> None:
        """Start the periodic flusher on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()

    async def stop(self) -> None:
        """Stop the flusher, ship what is left, close the sinks."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.close()
