"""The byte splice between a client and its backend once both handshakes are done.

Bytes go through unchanged (client frames stay masked, backend frames unmasked); each
direction's frame scanner only counts and enforces limits. Backpressure uses the transports'
own watermarks: when one side's write buffer fills, reading from the other side pauses.
The router injects a frame of its own (a close) only where the stream is between frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.frames import CloseCode, FrameScanner, PayloadTooBig, ProtocolError, close_frame
from router.frames import explain_close as explain

log = logging.getLogger(__name__)

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
CLOSE_GRACE = 1.0  # seconds a closing transport may spend flushing before it is aborted


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """What the per-connection log line says about the connection besides its counters."""

    request_id: str
    api: str
    topic: str
    client_ip: str


def _close(transport: asyncio.Transport) -> None:
    """Close after flushing, but never keep a socket open longer than CLOSE_GRACE."""
    if transport.is_closing():
        return
    transport.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)


class _Side(asyncio.Protocol):
    """One end of the splice: what it reads goes to ``peer``'s transport."""

    __slots__ = ("is_client", "lost", "peer", "relay", "scanner", "transport")

    def __init__(self, relay: Relay, transport: asyncio.Transport, scanner: FrameScanner) -> None:
        self.relay = relay
        self.transport = transport
        self.scanner = scanner
        self.is_client = scanner.masked
        self.lost = False
        self.peer: _Side = self

    def data_received(self, data: bytes) -> None:
        try:
            self.scanner.feed(data)
        except (ProtocolError, PayloadTooBig) as exc:
            self.relay.stream_error(self, exc)
            return
        self.peer.transport.write(data)

    # Our transport's write buffer crossed a watermark: stop or restart reading from the peer.
    def pause_writing(self) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):
            self.peer.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.side_lost(self)


class Relay:
    """Both sides of one proxied WebSocket connection."""

    __slots__ = ("_on_done", "backend", "client", "closed_by", "info", "router_code", "started")

    def __init__(
        self,
        client_transport: asyncio.Transport,
        backend_transport: asyncio.Transport,
        info: RelayInfo,
        *,
        max_message: int,
        allow_rsv: bool,
        on_done: Callable[[Relay], None] | None = None,
    ) -> None:
        self.info = info
        self.started = time.monotonic()
        self.closed_by = ""  # who dropped the TCP connection first, when nobody sent a close
        self.router_code: int | None = None  # close code the router itself sent, if any
        self._on_done = on_done
        self.client = _Side(self, client_transport, FrameScanner(True, max_message, allow_rsv))
        self.backend = _Side(self, backend_transport, FrameScanner(False, max_message, allow_rsv))
        self.client.peer = self.backend
        self.backend.peer = self.client

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
        with contextlib.suppress(RuntimeError, AttributeError):
            self.backend.transport.resume_reading()
            self.client.transport.resume_reading()

    def side_lost(self, side: _Side) -> None:
        """One socket closed: close the other, telling the client why when nobody else did."""
        peer = side.peer
        if peer.lost:
            self._finish()
            return
        if not self.closed_by:
            self.closed_by = "client" if side.is_client else "backend"
        if (
            not side.is_client
            and not side.scanner.close_seen
            and side.scanner.at_boundary
            and not peer.transport.is_closing()
        ):
            # The backend vanished without a close frame: the client learns it as 1011.
            self.router_code = CloseCode.INTERNAL_ERROR
            peer.transport.write(
                close_frame(CloseCode.INTERNAL_ERROR, "backend connection closed unexpectedly")
            )
        _close(peer.transport)

    def stream_error(self, side: _Side, exc: ProtocolError | PayloadTooBig) -> None:
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
        # What `side` receives comes from the peer's stream, and vice versa; the failing chunk
        # was not forwarded, so its own stream is at the boundary it had before that chunk.
        to_side_ok = side.peer.scanner.at_boundary
        to_peer_ok = side.scanner.fed_at_boundary
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
            if side.peer.scanner.at_boundary and not side.peer.scanner.close_seen:
                side.transport.write(close_frame(code, reason, mask=not side.is_client))
            _close(side.transport)

    def _finish(self) -> None:
        up, down = self.client.scanner, self.backend.scanner
        code: int | None
        if self.router_code is not None:
            by, code = f"router ({self.closed_by})", self.router_code
        elif up.close_seen and (not down.close_seen or up.close_seq < down.close_seq):
            by, code = "client", up.close_code
        elif down.close_seen:
            by, code = "backend", down.close_code
        else:
            by, code = self.closed_by or "unknown", CloseCode.ABNORMAL
        elapsed = time.monotonic() - self.started
        log.info(
            "closed %s api=%s topic=%s by=%s close=%s duration=%.1fs "
            "up: %d msgs %d frames %d bytes, down: %d msgs %d frames %d bytes",
            self.info.request_id,
            self.info.api,
            self.info.topic,
            by,
            explain(code),
            elapsed,
            up.messages,
            up.frames,
            up.bytes,
            down.messages,
            down.frames,
            down.bytes,
            extra={
                "request_id": self.info.request_id,
                "api": self.info.api,
                "close_code": code,
                "frames_up": up.frames,
                "bytes_up": up.bytes,
                "frames_down": down.frames,
                "bytes_down": down.bytes,
            },
        )
        if self._on_done is not None:
            self._on_done(self)
