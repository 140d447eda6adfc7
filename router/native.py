"""The compiled relay path: plaintext connections relayed by ``router._core.Core``.

After the handshake the router hands both sockets to the core (see :func:`hand_over`): the
client's and the backend's fds are dup'ed, their uvloop transports aborted (closing one fd of
a dup pair does not close the socket: no FIN, no RST), and the core's epoll thread relays from
then on with the same framing rules, quotas and closing logic as :class:`router.relay.Relay`
(the reference implementation and kill switch, ``WSGATE_RELAY=python``).

Python keeps control: :class:`NativeRelay` has the surface the server, the live-connection
registry and the idle sweep use of a Relay; commands (terminate, shutdown, abort) go to the
core, and the core's reports (closed, throttled, stream error, abort) arrive through an eventfd
the asyncio loop watches. Counters are read in one snapshot per analytics flush, /metrics
scrape or idle sweep (``Router.snapshot``), never per frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from router.analytics import ZERO, Counts
from router.frames import CloseCode, truncate_utf8
from router.relay import (
    THROTTLED_REASON,
    Flow,
    RelayInfo,
    ScanState,
    close_outcome,
    log_closed,
)
from wsgate_proto import enforcer_pb2

log = logging.getLogger(__name__)

_core: ModuleType | None
try:
    from router import _core

    IMPORT_ERROR = ""
except ImportError as exc:  # not built: only the Python relay is available
    _core = None
    IMPORT_ERROR = str(exc)

RELAY_PATHS = ("native", "python", "auto")
EV_CLOSED, EV_THROTTLED, EV_ERROR, EV_ABORT, EV_HEAD, EV_UPSTREAM, EV_HS_END = range(7)
# EV_UPSTREAM's error: the backend's response head arrived, or why not
UP_OK, UP_CONNECT, UP_CLOSED, UP_TIMEOUT, UP_TOO_LARGE = range(5)


class NativeUnavailable(RuntimeError):
    """WSGATE_RELAY=native but the extension is not built."""


def available() -> bool:
    return _core is not None


def choose(setting: str) -> str:
    """The relay path for a ``WSGATE_RELAY`` value: ``native`` or ``python``.

    Raises:
        NativeUnavailable: ``native`` was asked for and router._core does not import.
        ValueError: not one of native, python, auto.
    """
    if setting not in RELAY_PATHS:
        raise ValueError(f"relay must be one of {', '.join(RELAY_PATHS)}, not {setting!r}")
    if setting == "python":
        return "python"
    if _core is None:
        if setting == "native":
            raise NativeUnavailable(
                "WSGATE_RELAY=native but the compiled relay core (router._core) is not built: "
                f"{IMPORT_ERROR} (reinstall with a C compiler: pip install -e .)"
            )
        return "python"
    return "native"


@dataclass(frozen=True, slots=True)
class NativeLimit:
    key: str
    policy: str
    stop: bool
    handle: int


class NativeThrottle:
    """A connection's quotas as counters in the core's shared table (what Live.throttle holds:
    the registry releases it when the connection ends)."""

    __slots__ = ("core", "limits")

    def __init__(self, core: Any, limits: tuple[NativeLimit, ...]) -> None:
        self.core = core
        self.limits = limits

    def release(self, now: float) -> None:
        for limit in self.limits:
            self.core.release(limit.key, limit.handle, now)

    def for_core(self) -> tuple[tuple[int, bool], ...]:
        return tuple((limit.handle, limit.stop) for limit in self.limits)


class CoreCounter:
    """One quota key's counter in the core's table, held by a Python-relay connection (wss):
    a :class:`router.throttle.Counter` whose hold is given back when it is collected."""

    __slots__ = ("core", "handle", "limit", "window")

    def __init__(self, core: Any, handle: int, limit: int, window: float) -> None:
        self.core, self.handle, self.limit, self.window = core, handle, limit, window

    def available(self, now: float) -> bool:
        return bool(self.core.available(self.handle, now))

    def take(self, now: float) -> None:
        self.core.take(self.handle, now)

    def idle(self, now: float) -> bool:
        return bool(self.core.idle(self.handle, now))

    def __del__(self) -> None:
        self.core.unref(self.handle)


class CoreCounterStore:
    """The router's CounterStore while the core runs: the Python relay's connections (wss)
    count in the same native table as the core's, so a key has one counter for both paths."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def __len__(self) -> int:
        return int(self.core.stats()["quota_counters"])

    def acquire(self, key: str, limit: int, window: float, now: float) -> CoreCounter:
        return CoreCounter(self.core, self.core.acquire(key, limit, window, now), limit, window)

    def release(self, key: str, now: float) -> None:
        self.core.release(key, None, now)

    def admit_all(self, counters: tuple[Any, ...]) -> Callable[[float], int]:
        """ConnectionThrottle's admit in one locked step (the relay thread shares the table)."""
        handles, core = tuple(c.handle for c in counters), self.core
        return lambda now: int(core.admit(handles, now))


class NativeHub:
    """One core (one relay thread) per Router, and its live NativeRelays by id."""

    def __init__(self) -> None:
        if _core is None:
            raise NativeUnavailable(IMPORT_ERROR)
        self.core = _core.Core()
        self.store = CoreCounterStore(self.core)
        self.relays: dict[int, NativeRelay] = {}
        self.snap: dict[int, tuple[int, ...]] | None = None  # set by Router.snapshot()
        # the core's handshake reports (EV_HEAD, EV_UPSTREAM, EV_HS_END), when it listens
        self.on_handshake: Callable[[tuple[Any, ...]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self.core.fileno(), self.drain)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.core.fileno())
            self._loop = None
        self.drain()
        self.core.close()

    def throttle(self, quotas: Iterable[enforcer_pb2.Quota], now: float) -> NativeThrottle | None:
        """The core's counters for a connection's quotas (router.throttle.connection_throttle's
        rules: keyless, unlimited and repeated quotas are skipped), or None."""
        limits: list[NativeLimit] = []
        seen: set[str] = set()
        for quota in quotas:
            if not quota.key or quota.message_count <= 0 or not quota.window_seconds > 0:
                continue
            if quota.key in seen:
                continue
            seen.add(quota.key)
            handle = self.core.acquire(quota.key, quota.message_count, quota.window_seconds, now)
            limits.append(NativeLimit(quota.key, quota.policy, quota.stop_on_quota_reach, handle))
        return NativeThrottle(self.core, tuple(limits)) if limits else None

    def drain(self) -> None:
        """The core's eventfd is readable: handle what it reported."""
        for event in self.core.events():
            if event[0] >= EV_HEAD:
                if self.on_handshake is not None:
                    try:
                        self.on_handshake(event)
                    except Exception:  # one handshake's bug must not lose the others' reports
                        log.exception("handling the core's handshake report %r", event[:2])
                continue
            relay = self.relays.get(event[1])
            if relay is None:
                continue
            kind = event[0]
            if kind == EV_CLOSED:
                del self.relays[event[1]]
                relay._closed(event[2], event[3], event[4], event[5], event[6], event[7])
            elif kind == EV_THROTTLED:
                relay._throttled(event[2], event[3])
            elif kind == EV_ERROR:
                relay._stream_error(event[2], event[3], event[4])
            elif event[2]:
                log.info("aborting %s: %s", relay.info.request_id, event[2])


class NativeRelay:
    """Both sides of one connection relayed by the core; a Relay's surface for the router."""

    __slots__ = (
        "_counts",
        "_on_done",
        "activity",
        "cause",
        "close_by",
        "close_code",
        "hub",
        "ident",
        "idle_since",
        "info",
        "reported",
        "router_reason",
        "started",
        "throttle",
        "throttle_policy",
    )

    def __init__(
        self,
        hub: NativeHub,
        info: RelayInfo,
        *,
        on_done: Callable[[NativeRelay], None] | None = None,
        throttle: NativeThrottle | None = None,
    ) -> None:
        self.hub = hub
        self.info = info
        self.ident = 0
        self.started = time.monotonic()
        self.throttle = throttle
        self.throttle_policy = ""
        self.cause = ""
        self.router_reason = ""
        self.close_code: int | None = None
        self.close_by = ""
        self.reported = ZERO
        self.activity = 0
        self.idle_since = self.started
        self._counts = ZERO  # the last counters read from the core (the final ones once closed)
        self._on_done = on_done

    def start(
        self,
        client_fd: int,
        backend_fd: int,
        to_client: bytes,
        client_early: bytes,
        backend_early: bytes,
        *,
        max_message: int,
        allow_rsv: bool,
    ) -> None:
        """Give both sockets to the core (it owns and closes the fds from now on)."""
        self.ident = self.hub.core.add(
            client_fd,
            backend_fd,
            to_client,
            client_early,
            backend_early,
            max_message,
            allow_rsv,
            self.throttle.for_core() if self.throttle is not None else (),
        )
        self.hub.relays[self.ident] = self

    def adopt(self, ident: int) -> None:
        """The core relays a handshake it did itself (Core.start) under ``ident``."""
        self.ident = ident
        self.hub.relays[ident] = self

    def counts(self) -> Counts:
        """The core's counters now (or from the router's current snapshot; final once closed)."""
        if self.close_code is None:
            snap = self.hub.snap
            got = snap.get(self.ident) if snap is not None else self.hub.core.counts(self.ident)
            if got is not None:  # (None: ended in the core, its report not read yet)
                self._counts = Counts(*got)
        return self._counts

    @property
    def total_bytes(self) -> int:
        counts = self.counts()
        return counts.bytes_up + counts.bytes_down

    @property
    def throttled(self) -> int:
        return self.counts().throttled

    def terminate(
        self, code: int, reason: str, *, cause: str = "", backend_reason: str = ""
    ) -> bool:
        """Relay.terminate, done by the core at a frame boundary."""
        if self.close_code is not None:
            return False
        done = bool(
            self.hub.core.terminate(
                self.ident, int(code), truncate_utf8(reason), truncate_utf8(backend_reason)
            )
        )
        if done:
            self.cause = cause
            self.router_reason = reason
        return done

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "router stopping") -> None:
        if self.close_code is None:
            self.hub.core.shutdown(self.ident, int(code), truncate_utf8(reason))

    def abort(self, why: str) -> None:
        if self.close_code is None:
            self.hub.core.abort(self.ident, why)

    def scan_state(self) -> ScanState:
        got = self.hub.core.scan_state(self.ident) if self.close_code is None else None
        if got is None:
            return ScanState(0, 0, True, True, self.throttle is not None)
        return ScanState(*got)

    def flow(self) -> Flow:
        got = self.hub.core.flow(self.ident) if self.close_code is None else None
        return Flow(*got) if got is not None else Flow(0, 0, False, False)

    def drop(self) -> None:
        """Drop both TCP connections silently (the router's drain time is over)."""
        if self.close_code is None:
            self.hub.core.abort(self.ident, "")

    # -- the core's reports -----------------------------------------------------------------

    def _throttled(self, index: int, stopped: bool) -> None:
        limit = self.throttle.limits[index] if self.throttle is not None else None
        if stopped:
            self.cause = "throttled"
            self.router_reason = THROTTLED_REASON
            self.throttle_policy = limit.policy if limit is not None else ""
            return
        if limit is not None:
            log.info(
                "throttling %s: quota %s (%s) reached, dropping messages",
                self.info.request_id,
                limit.key,
                limit.policy,
                extra={"request_id": self.info.request_id, "quota": limit.key},
            )

    def _stream_error(self, is_client: bool, code: int, message: str) -> None:
        log.info(
            "closing %s: %s stream error: %s",
            self.info.request_id,
            "client" if is_client else "backend",
            message,
            extra={"request_id": self.info.request_id, "close_code": code},
        )

    def _closed(
        self,
        router_code: int | None,
        closed_by: str,
        terminating: bool,
        up: tuple[bool, int, int | None],
        down: tuple[bool, int, int | None],
        counts: tuple[int, ...],
    ) -> None:
        self._counts = Counts(*counts)
        by, code, self.close_by = close_outcome(router_code, closed_by, terminating, up, down)
        self.close_code = code
        log_closed(
            self.info,
            by,
            code,
            self.router_reason,
            time.monotonic() - self.started,
            self._counts,
            self.throttle is not None,
        )
        if self._on_done is not None:
            self._on_done(self)


class _Gone(asyncio.Protocol):
    """Protocol of a transport whose socket moved into the core: nothing reaches the server."""

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool | None:
        return None


def socket_fd(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise OSError("the transport has no socket")
    return int(sock.fileno())


def is_plain(transport: asyncio.BaseTransport) -> bool:
    """Whether the transport is plain TCP (TLS connections stay on the Python relay)."""
    return transport.get_extra_info("ssl_object") is None and (
        transport.get_extra_info("socket") is not None
    )


def hand_over(transport: asyncio.Transport) -> int:
    """Take the transport's socket away from the event loop; return an fd of it the caller owns.

    Reading stops first, the fd is dup'ed, then the transport is aborted: that closes only the
    loop's fd of the pair, so the socket stays open and the peer sees nothing (no FIN, no RST).
    The transport's write buffer must be empty (nothing of ours is lost).
    """
    transport.pause_reading()
    if transport.get_write_buffer_size():
        raise OSError("the transport still has output to send")
    fd = os.dup(socket_fd(transport))
    transport.set_protocol(_Gone())
    transport.abort()
    return fd
