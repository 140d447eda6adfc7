"""The byte splice between a client and its backend once both handshakes are done.

Bytes go through unchanged (client frames stay masked, backend frames unmasked); each
direction's frame scanner only counts and enforces limits. Backpressure uses the transports'
own watermarks: when one side's write buffer fills, reading from the other side pauses (a
pause of its own, apart from a hold's: either keeps the side unread).
The router injects a frame of its own (a close) only where the stream is between frames.

Two things change bytes, and only on connections that need them:
- throttling (a connection with quotas gets a :class:`_GatedSide` for both sides, chosen once
  at construction): data messages in either direction count against the connection's quotas,
  one counter per quota key for both directions (WSO2 counts frames sent and received against
  the same limit); a refused message's frames are cut out of its stream at frame boundaries,
  or the connection is closed with 1008 when the quota says "stop on quota reach". A message
  a Redis-leased quota has nothing for *yet* (its lease is late: a stalled loop, a slow reply)
  is held instead, up to HOLD_MAX: that side is not read, its bytes wait in order (see
  :class:`_GatedSide`). Connections without quotas keep the plain :class:`_Side`;
- :meth:`Relay.terminate` (a ConnectionRule, token expiry, "stop on quota reach"): the client
  gets a close frame with the router's code and reason, injected at a frame boundary of the
  backend->client stream: right away when it is between frames, else right after the current
  frame, or the TCP connection is dropped if that frame does not end within CLOSE_GRACE. The
  backend is told the client went away with a masked close 1001 when the client->backend
  stream is between frames (else its TCP connection is simply closed), and nothing more the
  client sends reaches it. Swapping the transports' protocols does this, so the normal data
  path has no extra check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from router.analytics import ZERO, Counts
from router.frames import (
    CloseCode,
    FrameScanner,
    FramingError,
    GatedScanner,
    close_frame,
)
from router.frames import explain_close as explain
from router.throttle import ConnectionThrottle, Counter, Held
from wsgate_common.logs import info_writer

log = logging.getLogger(__name__)

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
CLOSE_GRACE = 1.0  # seconds a closing transport may spend flushing before it is aborted
# A held message waits this long at most: then what the side had read is decided without
# holding (refused if its quota still has nothing), so traffic over a quota is throttled, not
# queued. The native core's HOLD_MAX (router/_core/core.c), the same value.
HOLD_MAX = 1.0
THROTTLED_REASON = "message throttled out"
BACKEND_CLOSE_REASON = "client connection closed by the gateway"


class Flow(NamedTuple):
    """A connection's backpressure state (for tests and diagnostics, not the hot path)."""

    to_client: int  # bytes accepted for the client and not yet sent
    to_backend: int
    reading_client: bool
    reading_backend: bool


class ScanState(NamedTuple):
    """Per-direction scanner state (for tests and diagnostics, not the hot path)."""

    dropped_up: int  # data messages refused by a quota, client -> backend
    dropped_down: int
    at_boundary_up: bool  # the scanned stream is between frames
    at_boundary_down: bool
    gated: bool  # the connection has quotas (its messages may be refused)


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """What the per-connection log line says about the connection besides its counters."""

    request_id: str
    api: str
    topic: str
    client_ip: str
    api_id: str = ""
    application_id: str = ""
    key_type: str = ""


def _close(transport: asyncio.Transport) -> None:
    """Close after flushing, but never keep a socket open longer than CLOSE_GRACE."""
    if transport.is_closing():
        return
    transport.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)


CloseSeen = tuple[bool, int, int | None]  # a scanner's close_seen, close_seq, close_code


def close_outcome(
    router_code: int | None, closed_by: str, terminating: bool, up: CloseSeen, down: CloseSeen
) -> tuple[str, int | None, str]:
    """How a connection ended: (who, for the log line; close code; who, for metrics and
    analytics). Pure, shared by both relay paths (router.native reports the same inputs)."""
    code: int | None
    if router_code is not None:
        by, code = f"router ({closed_by})", router_code
    elif up[0] and (not down[0] or up[1] < down[1]):
        by, code = "client", up[2]
    elif down[0]:
        by, code = "backend", down[2]
    else:
        by, code = closed_by or "unknown", CloseCode.ABNORMAL
    if terminating:
        close_by = "router"
    elif router_code is not None:  # a stream error, a vanished backend, a shutdown
        close_by = closed_by or "unknown"
    else:
        close_by = by
    return by, code, close_by


CLOSED_LINE = (
    "closed %s api=%s topic=%s by=%s close=%s%s duration=%.1fs "
    "up: %d msgs %d frames %d bytes, down: %d msgs %d frames %d bytes%s"
)


def log_closed(
    info: RelayInfo,
    by: str,
    code: int | None,
    router_reason: str,
    elapsed: float,
    counts: Counts,
    throttled: bool,
) -> None:
    """The per-connection log line, the same for both relay paths."""
    args = (
        info.request_id,
        info.api,
        info.topic,
        by,
        explain(code),
        f' reason="{router_reason}"' if router_reason else "",
        elapsed,
        counts.messages_up,
        counts.frames_up,
        counts.bytes_up,
        counts.messages_down,
        counts.frames_down,
        counts.bytes_down,
        f", throttled: {counts.throttled} msgs" if throttled else "",
    )
    write = info_writer(log)
    if write is not None:  # the same line without a LogRecord (the text format has no extras)
        write(CLOSED_LINE % args)
        return
    log.info(
        CLOSED_LINE,
        *args,
        extra={
            "request_id": info.request_id,
            "api": info.api,
            "close_code": code,
            "frames_up": counts.frames_up,
            "bytes_up": counts.bytes_up,
            "frames_down": counts.frames_down,
            "bytes_down": counts.bytes_down,
            "throttled": counts.throttled,
        },
    )


class _Side(asyncio.Protocol):
    """One end of the splice: what it reads goes to ``peer``'s transport."""

    __slots__ = (
        "blocked",
        "feed",
        "forward",
        "held",
        "is_client",
        "lost",
        "peer",
        "relay",
        "scanner",
        "transport",
    )

    def __init__(self, relay: Relay, transport: asyncio.Transport, scanner: FrameScanner) -> None:
        self.relay = relay
        self.transport = transport
        self.scanner = scanner
        self.feed = scanner.feed  # bound once: the hot path saves the lookups
        self.is_client = scanner.masked
        self.lost = False
        self.peer: _Side = self
        self.forward = transport.write
        # Why reading this side is paused: the peer's write buffer is full (backpressure), or
        # bytes are held (_GatedSide: a message waits for its quota). Reading resumes when
        # neither is so: one does not resume the other.
        self.blocked = False
        self.held: bytes | None = None

    def reading(self) -> None:
        """Resume reading unless the other reason to pause still holds."""
        if not self.blocked and self.held is None:
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()

    def drop_held(self) -> None:
        """Forget held bytes (the side closes or discards what it reads from now on)."""

    def link(self, peer: _Side) -> None:
        """Make ``peer`` the side whose transport gets what this side reads."""
        self.peer = peer
        self.forward = peer.transport.write

    def data_received(self, data: bytes) -> None:
        try:
            out = self.feed(data)  # ``data`` itself: a plain scanner never cuts nor holds
        except FramingError as exc:
            if exc.kept:  # the complete frames before the bad one still go through
                self.forward(exc.kept)
            self.relay.stream_error(self, exc)
            return
        self.forward(out)

    # Our transport's write buffer crossed a watermark: stop or restart reading from the peer.
    def pause_writing(self) -> None:
        peer = self.peer
        peer.blocked = True
        with contextlib.suppress(RuntimeError, AttributeError):
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        peer.blocked = False
        peer.reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.side_lost(self)


class _GatedSide(_Side):
    """A side of a connection with quotas: forwards what the throttle admits.

    A message the throttle holds (a leased quota's lease is late, its window not exhausted:
    :class:`router.throttle.Held`) stops the scan before it: the bytes from there on are kept
    unscanned in ``held``, this side is not read, and they are fed again after the quota's
    counter takes in a lease reply (``LeasedCounter.wake``), when its next lease begins, or
    after HOLD_MAX, then decided without holding. Nothing is dropped nor reordered (control
    frames behind the held message wait with it), as in the native core (core.c, hold).
    """

    __slots__ = ("held_by", "held_since", "held_timer")

    def __init__(self, relay: Relay, transport: asyncio.Transport, scanner: FrameScanner) -> None:
        super().__init__(relay, transport, scanner)
        self.held_by: Counter | None = None
        self.held_since = 0.0  # when the held bytes were read (held first): HOLD_MAX from then
        self.held_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self.held is not None:  # read before the pause took effect: behind the held ones
            self.held += data
            return
        relay = self.relay
        scanner = self.scanner
        try:
            out = self.feed(data)
        except FramingError as exc:
            if exc.kept:  # what was admitted before the bad frame still goes through
                self.forward(exc.kept)
            relay.stream_error(self, exc)
            return
        if out:
            self.forward(out)
        if scanner.held_at >= 0:
            at, scanner.held_at = scanner.held_at, -1
            self._hold(data[at:] if at else data)
        if relay.stop_pending:
            relay.terminate(CloseCode.POLICY_VIOLATION, THROTTLED_REASON, cause="throttled")

    def _hold(self, rest: bytes) -> None:
        """The scan stopped at a held message: keep ``rest`` and stop reading this side."""
        relay = self.relay
        counter = relay.held_by
        assert counter is not None
        now = time.monotonic()
        self.held = rest
        self.held_by = counter
        if not self.held_since:  # (fed again and still held: read when first held)
            self.held_since = now
        relay.holds += 1
        with contextlib.suppress(RuntimeError, AttributeError):
            self.transport.pause_reading()
        wait = getattr(counter, "wait", None)
        if wait is not None:
            wait(self.retry)
        at = self.held_since + HOLD_MAX
        next_bounds = getattr(counter, "next_bounds", None)
        bounds = next_bounds() if next_bounds is not None else None
        if bounds is not None and now < bounds[0] < at:
            at = bounds[0]  # the next sub-window's lease is usable from then
        self.held_timer = asyncio.get_running_loop().call_later(max(0.0, at - now), self.retry)

    def _unhold(self) -> bytes | None:
        held = self.held
        self.held = None
        if self.held_timer is not None:
            self.held_timer.cancel()
            self.held_timer = None
        counter = self.held_by
        self.held_by = None
        if counter is not None:
            unwait = getattr(counter, "unwait", None)
            if unwait is not None:
                unwait(self.retry)
        return held

    def retry(self) -> None:
        """Feed the held bytes again (a lease reply, the next lease's start, or HOLD_MAX);
        what is still held stays, and this side is read again once nothing is."""
        held = self._unhold()
        if held is None:
            return
        relay = self.relay
        if self.lost or relay.terminating or self.transport.is_closing():
            self.held_since = 0.0
            return
        throttle = relay.throttle
        assert throttle is not None
        # held HOLD_MAX already: decided without holding (refused if there is still no room)
        throttle.hold = time.monotonic() < self.held_since + HOLD_MAX
        try:
            self.data_received(held)
        finally:
            throttle.hold = True
        if self.held is None:
            self.held_since = 0.0
            if not self.lost and not relay.terminating:
                self.reading()

    def drop_held(self) -> None:
        if self._unhold() is not None:
            self.held_since = 0.0
            self.reading()


class _Detached(asyncio.Protocol):
    """Takes over a side's transport once the router closes the relay: reads are ignored;
    flow control and the end of the connection still reach the side."""

    __slots__ = ("side",)

    def __init__(self, side: _Side) -> None:
        self.side = side

    def data_received(self, data: bytes) -> None:
        return None

    def pause_writing(self) -> None:
        self.side.pause_writing()

    def resume_writing(self) -> None:
        self.side.resume_writing()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.side.connection_lost(exc)


class _FinishFrame(_Detached):
    """Backend side while a close waits for the frame in flight to the client to end."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        side = self.side
        try:
            used = side.scanner.feed_to_boundary(data)
        except FramingError:
            side.relay.abort("backend stream broke while closing")
            return
        if used:
            side.peer.transport.write(data if used == len(data) else data[:used])
        if side.scanner.out_at_boundary:
            side.relay.close_client()


class Relay:
    """Both sides of one proxied WebSocket connection."""

    __slots__ = (
        "_backend_reason",
        "_grace",
        "_on_done",
        "_tell_backend",
        "activity",
        "backend",
        "cause",
        "client",
        "close_by",
        "close_code",
        "closed_by",
        "held_by",
        "holds",
        "idle_since",
        "info",
        "reported",
        "router_code",
        "router_reason",
        "started",
        "stop_pending",
        "terminating",
        "throttle",
        "throttle_policy",
    )

    def __init__(
        self,
        client_transport: asyncio.Transport,
        backend_transport: asyncio.Transport,
        info: RelayInfo,
        *,
        max_message: int,
        allow_rsv: bool,
        on_done: Callable[[Relay], None] | None = None,
        throttle: ConnectionThrottle | None = None,
    ) -> None:
        self.info = info
        self.started = time.monotonic()
        self.closed_by = ""  # who dropped the TCP connection first, when nobody sent a close
        self.router_code: int | None = None  # close code the router itself sent, if any
        self.router_reason = ""
        self.terminating = False
        self.stop_pending = False  # a quota with stop_on_quota_reach was hit: close after the chunk
        self.throttle = throttle
        self.throttle_policy = ""
        self.cause = ""  # why the router closed the connection (rule, idle timeout, ...)
        self.close_code: int | None = None  # set when the connection is over
        self.close_by = ""  # client, backend, router, unknown: set when it is over
        self.reported = ZERO  # counters as of the last analytics event (see router.analytics)
        self.activity = 0  # bytes both ways at the last idle sweep (see router.idle)
        self.idle_since = self.started  # monotonic time the bytes last moved, per the sweeps
        self._backend_reason = BACKEND_CLOSE_REASON
        self._grace: asyncio.TimerHandle | None = None
        self._tell_backend = False
        self._on_done = on_done
        self.held_by: Counter | None = None  # _admit's last hold: the counter without room
        self.holds = 0  # times a side was held
        self.client: _Side
        self.backend: _Side
        if throttle is None:
            self.client = _Side(self, client_transport, FrameScanner(True, max_message, allow_rsv))
            self.backend = _Side(
                self, backend_transport, FrameScanner(False, max_message, allow_rsv)
            )
        else:  # both directions count against the same quotas
            throttle.hold = True  # a message a leased quota has nothing for yet waits
            up = GatedScanner(True, max_message, allow_rsv, self._admit)
            down = GatedScanner(False, max_message, allow_rsv, self._admit)
            self.client = _GatedSide(self, client_transport, up)
            self.backend = _GatedSide(self, backend_transport, down)
        self.client.link(self.backend)
        self.backend.link(self.client)

    def start(self, client_early: bytes, backend_early: bytes, backend_lost: bool) -> None:
        """Take over both transports; relay bytes that arrived during the handshakes first."""
        for side in (self.client, self.backend):
            side.transport.set_protocol(side)
            side.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        if backend_early:
            self.backend.data_received(backend_early)
        if client_early:
            self.client.data_received(client_early)
        if backend_lost:
            self.backend.connection_lost(None)
            return
        self.backend.reading()  # (unless what arrived early is held, or backpressure)
        self.client.reading()

    def _admit(self, opcode: int) -> bool | None:
        """Throttle decision for one data message, either direction (asked by the scanners):
        deliver, refuse, or None: hold it (see _GatedSide)."""
        throttle = self.throttle
        if self.stop_pending or self.terminating or throttle is None:
            return False
        limit = throttle.admit(time.monotonic())
        if limit is None:
            return True
        if type(limit) is Held:
            self.held_by = limit.limit.counter
            return None
        assert not isinstance(limit, Held)
        if limit.stop:
            self.stop_pending = True
            self.throttle_policy = limit.policy
        elif not self.throttled:
            log.info(
                "throttling %s: quota %s (%s) reached, dropping messages",
                self.info.request_id,
                limit.key,
                limit.policy,
                extra={"request_id": self.info.request_id, "quota": limit.key},
            )
        return False

    @property
    def throttled(self) -> int:
        """Data messages refused by a quota so far, both directions."""
        return self.client.scanner.dropped + self.backend.scanner.dropped

    def counts(self) -> Counts:
        """The scanners' counters right now (read by the analytics flush, not per frame)."""
        up, down = self.client.scanner, self.backend.scanner
        return Counts(
            up.frames, down.frames, up.messages, down.messages, up.bytes, down.bytes, self.throttled
        )

    @property
    def total_bytes(self) -> int:
        """Bytes received from both peers so far: what the idle sweep watches."""
        return self.client.scanner.bytes + self.backend.scanner.bytes

    def terminate(
        self, code: int, reason: str, *, cause: str = "", backend_reason: str = ""
    ) -> bool:
        """Close the connection on the router's own decision (see the module docstring).

        ``cause`` is recorded for analytics; ``backend_reason`` replaces the reason of the
        1001 the backend is sent. Returns False when the relay was already being closed by the
        router or is gone.
        """
        client, backend = self.client, self.backend
        if self.terminating or (client.lost and backend.lost):
            return False
        self.terminating = True
        self.closed_by = self.closed_by or "router"
        self.router_code, self.router_reason = code, reason
        self.cause = cause
        if backend_reason:
            self._backend_reason = backend_reason
        if not client.lost:
            client.transport.set_protocol(_Detached(client))
            client.drop_held()  # a closed transport delivers nothing more
        # The client->backend stream stops here; the backend gets a close only if it is
        # between frames (and once the backend->client stream is, see close_client).
        self._tell_backend = client.scanner.out_at_boundary and not client.scanner.close_seen
        if backend.lost or backend.transport.is_closing() or backend.scanner.out_at_boundary:
            self.close_client()
        else:
            backend.transport.set_protocol(_FinishFrame(backend))
            self._grace = asyncio.get_running_loop().call_later(
                CLOSE_GRACE, self.abort, "backend frame in flight did not end in time"
            )
        return True

    def close_client(self) -> None:
        """Second half of :meth:`terminate`: the backend->client stream is between frames."""
        client, backend = self.client, self.backend
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if not backend.lost:
            backend.transport.set_protocol(_Detached(backend))
            backend.drop_held()
        code = self.router_code if self.router_code is not None else CloseCode.POLICY_VIOLATION
        if not client.lost and not client.transport.is_closing() and not backend.scanner.close_seen:
            client.transport.write(close_frame(code, self.router_reason))
        if self._tell_backend and not backend.lost and not backend.transport.is_closing():
            backend.transport.write(
                close_frame(CloseCode.GOING_AWAY, self._backend_reason, mask=True)
            )
        if not client.lost:
            _close(client.transport)
        if not backend.lost:
            _close(backend.transport)

    def abort(self, why: str) -> None:
        """Drop both TCP connections without a close frame (a close could not be injected)."""
        self._grace = None
        log.info("aborting %s: %s", self.info.request_id, why)
        for side in (self.client, self.backend):
            if not side.lost:
                side.transport.abort()

    def side_lost(self, side: _Side) -> None:
        """One socket closed: close the other, telling the client why when nobody else did."""
        side.drop_held()
        peer = side.peer
        if peer.lost:
            self._finish()
            return
        if not self.closed_by:
            self.closed_by = "client" if side.is_client else "backend"
        if (
            not side.is_client
            and not side.scanner.close_seen
            and side.scanner.out_at_boundary
            and not peer.transport.is_closing()
        ):
            # The backend vanished without a close frame: the client learns it as 1011.
            self.router_code = CloseCode.INTERNAL_ERROR
            peer.transport.write(
                close_frame(CloseCode.INTERNAL_ERROR, "backend connection closed unexpectedly")
            )
        _close(peer.transport)

    def stream_error(self, side: _Side, exc: FramingError) -> None:
        """Framing broke on ``side``'s stream: close both ends with a reason, drop both."""
        code = exc.close_code
        self.closed_by = "client" if side.is_client else "backend"
        self.router_code = code
        log.info(
            "closing %s: %s stream error: %s",
            self.info.request_id,
            self.closed_by,
            exc,
            extra={"request_id": self.info.request_id, "close_code": int(code)},
        )
        # What `side` receives comes from the peer's stream, and vice versa. Of the failing
        # chunk only the frames before the bad one were forwarded: when that one starts in
        # this chunk the forwarded stream ends between frames; when it started in an earlier
        # chunk, at the boundary (or not) the stream had before this chunk.
        to_side_ok = side.peer.scanner.out_at_boundary
        to_peer_ok = exc.offset >= 0 or side.scanner.fed_at_boundary
        if side.is_client:
            side_code, peer_code = code, code
        else:
            side_code, peer_code = code, CloseCode.INTERNAL_ERROR
        reason = str(exc)[:100]
        if to_side_ok and not side.transport.is_closing():
            side.transport.write(close_frame(side_code, reason, mask=not side.is_client))
        if to_peer_ok and not side.peer.transport.is_closing():
            side.peer.transport.write(close_frame(peer_code, reason, mask=side.is_client))
        _close(side.transport)
        _close(side.peer.transport)

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "router stopping") -> None:
        """Close both ends with ``code`` (SIGTERM), where a frame can be injected cleanly."""
        self.closed_by = self.closed_by or "router"
        self.router_code = self.router_code or code
        for side in (self.client, self.backend):
            if side.lost or side.transport.is_closing():
                continue
            if side.peer.scanner.out_at_boundary and not side.peer.scanner.close_seen:
                side.transport.write(close_frame(code, reason, mask=not side.is_client))
            _close(side.transport)

    def scan_state(self) -> ScanState:
        up, down = self.client.scanner, self.backend.scanner
        return ScanState(
            up.dropped, down.dropped, up.at_boundary, down.at_boundary, self.throttle is not None
        )

    def flow(self) -> Flow:
        client, backend = self.client.transport, self.backend.transport
        return Flow(
            client.get_write_buffer_size(),
            backend.get_write_buffer_size(),
            not client.is_closing() and client.is_reading(),
            not backend.is_closing() and backend.is_reading(),
        )

    def drop(self) -> None:
        """Drop both TCP connections silently (the router's drain time is over)."""
        for side in (self.client, self.backend):
            if not side.lost:
                side.transport.abort()

    def _finish(self) -> None:
        self.client.drop_held()
        self.backend.drop_held()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        up, down = self.client.scanner, self.backend.scanner
        by, code, self.close_by = close_outcome(
            self.router_code,
            self.closed_by,
            self.terminating,
            (up.close_seen, up.close_seq, up.close_code),
            (down.close_seen, down.close_seq, down.close_code),
        )
        self.close_code = code
        log_closed(
            self.info,
            by,
            code,
            self.router_reason,
            time.monotonic() - self.started,
            self.counts(),
            self.throttle is not None,
        )
        if self._on_done is not None:
            self._on_done(self)
