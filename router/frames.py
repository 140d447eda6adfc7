"""WebSocket frame-header scanning (RFC 6455 section 5), Sans-I/O.

The relay forwards bytes unchanged; this module only walks the frame headers in them, across
arbitrary chunk boundaries, to count frames and messages, enforce the size limit and validate
the framing. Payloads are skipped arithmetically: never copied nor unmasked (except the at most
125 bytes of a close frame, whose code is worth logging).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from enum import IntEnum


class Opcode(IntEnum):
    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


CLOSE_CODE_EXPLANATIONS: dict[int, str] = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received",
    1006: "connection closed abnormally",
    1007: "invalid frame payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure",
}


def explain_close(code: int | None) -> str:
    """``1009 (message too big)`` style text for logs."""
    if code is None:
        return "none"
    if code in CLOSE_CODE_EXPLANATIONS:
        return f"{code} ({CLOSE_CODE_EXPLANATIONS[code]})"
    if 3000 <= code <= 4999:
        return f"{code} (application)"
    return f"{code} (unknown)"


class FramingError(Exception):
    """A scanner refused the stream. Where, within the chunk being fed, is recorded so the
    relay can still forward the complete frames that came before the bad one.

    Attributes:
        offset: index in the fed chunk where the bad frame starts; -1 when it started in an
            earlier chunk (its first bytes were already seen).
        kept: the bytes of the chunk before the bad frame that are to be forwarded (refused
            messages already cut out); set by :meth:`FrameScanner.feed`.
    """

    close_code: int = CloseCode.PROTOCOL_ERROR
    offset: int = -1
    kept: bytes = b""


class ProtocolError(FramingError):
    """The peer broke RFC 6455 framing; the connection is closed with 1002."""

    close_code = CloseCode.PROTOCOL_ERROR


class PayloadTooBig(FramingError):
    """A message exceeds the configured size limit; the connection is closed with 1009."""

    close_code = CloseCode.MESSAGE_TOO_BIG


DEFAULT_MAX_MESSAGE = 1024 * 1024
_DATA_OPCODES = frozenset((0, 1, 2))
_CONTROL_OPCODES = frozenset((8, 9, 10))
_MAX_HEADER = 14
_close_counter = itertools.count(1)

FrameHook = Callable[[int, bool, int], None]  # opcode, fin, payload length
MessageHook = Callable[[int, int], None]  # opcode of the first frame, total payload length
# opcode of a new data message -> deliver it (True), refuse it (False), or not now (None: HOLD,
# the feed stops before the message, see FrameScanner.held_at)
Admit = Callable[[int], bool | None]
HOLD = None


class _Held(Exception):
    """Raised inside a feed when ``admit`` answered HOLD (never escapes :meth:`feed`)."""


def _admit_all(opcode: int) -> bool:
    return True


class FrameScanner:
    """Walks the frame headers of one direction of a WebSocket stream.

    One loop (:meth:`feed`) holds the framing rules for every connection, plain or gated
    (:class:`GatedScanner`, which only adds the throttle decision). A plain scanner never cuts
    nor holds anything back: :meth:`feed` returns ``data`` itself.

    Args:
        masked: whether frames in this direction must be masked (True from the client).
        max_message: largest message payload allowed, in bytes (0 disables the check).
        allow_rsv: accept RSV bits (an extension such as permessage-deflate was negotiated).
        on_frame / on_message: optional hooks; left unset on the hot path when not needed.
    """

    __slots__ = (
        "_admit",
        "_close_buf",
        "_close_mask",
        "_fast",
        "_frame_kept",
        "_gated",
        "_limit",
        "_mask_bit",
        "_mask_len",
        "_msg_opcode",
        "_msg_size",
        "_on_frame",
        "_on_message",
        "_partial",
        "_remaining",
        "allow_rsv",
        "bytes",
        "close_code",
        "close_reason",
        "close_seen",
        "close_seq",
        "dropped",
        "dropping",
        "fed_at_boundary",
        "frames",
        "held_at",
        "masked",
        "max_message",
        "messages",
    )

    def __init__(
        self,
        masked: bool,
        max_message: int = DEFAULT_MAX_MESSAGE,
        allow_rsv: bool = False,
        on_frame: FrameHook | None = None,
        on_message: MessageHook | None = None,
    ) -> None:
        self.masked = masked
        self.max_message = max_message
        self.allow_rsv = allow_rsv
        self._on_frame = on_frame
        self._on_message = on_message
        self._admit: Admit = _admit_all
        self._gated = False  # whether messages may be refused (and split headers held back)
        self._fast = on_frame is None and on_message is None  # feed()'s one-frame fast path
        self._limit = max_message if max_message else 1 << 63
        self._mask_bit = 0x80 if masked else 0
        self._mask_len = 4 if masked else 0
        self.bytes = 0
        self.frames = 0  # frames seen (refused ones included)
        self.messages = 0  # data messages seen (refused ones included)
        self.dropped = 0  # data messages refused by ``admit``
        self.dropping = False  # the current data message was refused
        self.close_seen = False
        self.close_seq = 0  # orders close frames across scanners: who closed first
        self.close_code: int | None = None
        self.close_reason = ""
        self.fed_at_boundary = True  # whether the forwarded stream was between frames before
        # the last feed()
        # >= 0: a feed stopped at a message ``admit`` answered HOLD for; data[held_at:] was not
        # consumed (state and counters as if never fed): the caller feeds it again later, and
        # sets this back to -1 (router/_core/scan.c's held/held_at)
        self.held_at = -1
        self._remaining = 0  # payload bytes of the current frame still to skip
        self._frame_kept = True  # whether that frame is forwarded (meaningful while _remaining)
        self._partial = b""  # start of a header split across chunks
        self._msg_opcode = -1  # opcode of the message in progress, -1 between messages
        self._msg_size = 0
        self._close_buf: bytearray | None = None  # payload of a close frame being collected
        self._close_mask = b""

    # The hooks are properties so that setting one turns the fast path (which skips them) off.
    @property
    def on_frame(self) -> FrameHook | None:
        return self._on_frame

    @on_frame.setter
    def on_frame(self, hook: FrameHook | None) -> None:
        self._on_frame = hook
        self._fast = self._on_frame is None and self._on_message is None

    @property
    def on_message(self) -> MessageHook | None:
        return self._on_message

    @on_message.setter
    def on_message(self, hook: MessageHook | None) -> None:
        self._on_message = hook
        self._fast = self._on_frame is None and self._on_message is None

    @property
    def at_boundary(self) -> bool:
        """True when the scanned stream is between frames."""
        return not self._remaining and not self._partial

    @property
    def out_at_boundary(self) -> bool:
        """True when the FORWARDED stream is between frames: the router may inject a frame of
        its own there. A held header or a refused frame's payload is not forwarded."""
        if self._remaining:
            return not self._frame_kept
        return not self._partial or self._gated

    def feed_to_boundary(self, data: bytes) -> int:
        """Scan only as much of ``data`` as finishes the forwarded frame; return that count.

        Used when the router wants to inject a close frame while :attr:`out_at_boundary` is
        false: it forwards ``data[:count]`` and injects once :attr:`at_boundary` is true. Not a
        hot path.
        """
        used = 0
        n = len(data)
        while self._partial and used < n:  # a forwarded split header, byte by byte (<= 13)
            self.feed(data[used : used + 1])
            used += 1
        if self._partial or used == n:
            return used
        take = min(self._remaining, n - used)
        if take:
            self.feed(data[used : used + take])
        return used + take

    def feed(self, data: bytes) -> bytes:
        """Scan ``data``, the next bytes of the stream; return the part of it to forward.

        That is ``data`` itself (the same object) unless ``admit`` refused a message or a
        header is held back. When ``admit`` answered HOLD, :attr:`held_at` is set and
        ``data[held_at:]`` was not consumed (see :class:`GatedScanner`).

        Raises:
            ProtocolError: invalid framing (close with 1002).
            PayloadTooBig: a message over ``max_message`` (close with 1009).
            Either carries ``offset`` and ``kept`` (see :class:`FramingError`).
        """
        n = len(data)
        self.bytes += n
        if self._fast and not self._remaining and not self._partial and self._msg_opcode < 0:
            # Fast path, the common case of a relay: ``data`` is exactly one whole unfragmented
            # text or binary frame (FIN, no RSV, a 7- or 16-bit length, masked as it must be)
            # within the size limit. Same outcome as the loop below, with less work.
            b0 = data[0] if n > 1 else 0
            if (b0 == 0x81 or b0 == 0x82) and data[1] & 0x80 == self._mask_bit:
                length = data[1] & 0x7F
                size = 2
                if length == 126:
                    length = (data[2] << 8 | data[3]) if n > 3 else self._limit
                    size = 4
                if length < 127 or size == 4:
                    if size + self._mask_len + length == n and length <= self._limit:
                        self.frames += 1
                        self.messages += 1
                        self.fed_at_boundary = True
                        if not self._gated:
                            return data
                        ok = self._admit(b0 & 0x0F)
                        if ok:
                            self.dropping = False
                            return data
                        if ok is HOLD:  # not now: as if ``data`` had not been fed
                            self.frames -= 1
                            self.messages -= 1
                            self.bytes -= n
                            self.held_at = 0
                            return b""
                        self.dropping = True
                        self.dropped += 1
                        return b""
        elif self._remaining >= n and self._close_buf is None:
            # Fast path for big frames: ``data`` is all payload of the current frame.
            self._remaining -= n
            kept = self._frame_kept
            self.fed_at_boundary = not kept
            return data if kept else b""
        return self._walk(data, n)

    def _walk(self, data: bytes, n: int) -> bytes:
        """The frame loop: every header in ``data``, payloads skipped, refused frames cut out."""
        pieces: list[bytes] = []
        # Start of the run of bytes being forwarded; -1 inside a refused frame or a held header.
        gated = self._gated
        if self._remaining:
            keep = 0 if self._frame_kept else -1
            self.fed_at_boundary = not self._frame_kept
        elif self._partial:
            keep = -1 if gated else 0
            self.fed_at_boundary = gated
        else:
            keep = 0
            self.fed_at_boundary = True
        pos = 0
        start = -1  # where the frame whose header was parsed last starts in ``data``
        try:
            while pos < n:
                remaining = self._remaining
                if remaining:
                    avail = n - pos
                    if remaining > avail:
                        if self._close_buf is not None:
                            self._close_buf += data[pos:]
                        self._remaining = remaining - avail
                        break
                    if self._close_buf is not None:
                        self._close_buf += data[pos : pos + remaining]
                        self._finish_close()
                    pos += remaining
                    self._remaining = 0
                    continue
                if self._partial:  # only at pos 0: the header started in the previous chunk
                    partial = self._partial
                    buf = partial + data[:_MAX_HEADER]
                    used = self._header(buf, 0)
                    if not used:
                        self._partial = buf
                        return data if keep == 0 else b""
                    self._partial = b""
                    if not (self.dropping and buf[0] & 0x0F < 8) and keep < 0:
                        pieces.append(partial)  # the held start of a forwarded header
                        keep = 0
                    pos = used - len(partial)
                    continue
                start = pos
                used = self._header(data, pos)
                if not used:
                    self._partial = data[pos:]
                    if keep >= 0 and gated:  # hold the header back until it is whole
                        if pos > keep:
                            pieces.append(data[keep:pos])
                        keep = -1
                    break
                if gated:  # (a plain scanner never cuts: keep stays 0)
                    if self.dropping and data[pos] & 0x0F < 8:  # a frame of a refused message
                        if keep >= 0:
                            if pos > keep:
                                pieces.append(data[keep:pos])
                            keep = -1
                    elif keep < 0:
                        keep = pos
                pos += used
        except _Held:  # the message at ``pos`` waits: nothing from there on is consumed
            if start < 0:  # its header started in an earlier chunk: it stays in _partial
                pos = 0
            elif keep >= 0 and pos > keep:  # what precedes it goes out
                pieces.append(data[keep:pos])
            self.bytes -= n - pos
            self.held_at = pos
            return b"".join(pieces)
        except FramingError as exc:
            exc.offset = start
            if start < 0:  # the bad frame began before this chunk: nothing of it goes out
                exc.kept = b""
                raise
            if keep >= 0 and start > keep:
                pieces.append(data[keep:start])
            exc.kept = b"".join(pieces)
            raise
        self._frame_kept = keep >= 0  # the chunk may end inside a frame's payload
        if keep == 0 and not pieces:
            return data
        if 0 <= keep < n:
            pieces.append(data[keep:])
        return b"".join(pieces)

    def _header(self, buf: bytes, pos: int) -> int:
        """Parse the header at ``buf[pos:]``; return its length, or 0 when incomplete."""
        avail = len(buf) - pos
        if avail < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        size = 2
        if length == 126:
            size = 4
        elif length == 127:
            size = 10
        if b1 & 0x80:
            size += 4
        if avail < size:
            return 0
        if length == 126:
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        elif length == 127:
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise ProtocolError("64-bit payload length with the top bit set")
        if bool(b1 & 0x80) is not self.masked:
            raise ProtocolError(
                "unmasked frame from the client" if self.masked else "masked frame from the server"
            )
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        if b0 & 0x70 and not self.allow_rsv:
            raise ProtocolError("reserved bits set without a negotiated extension")
        self.frames += 1
        if opcode in _DATA_OPCODES:
            self._data_frame(opcode, fin, length)
        elif opcode in _CONTROL_OPCODES:
            if length > 125:
                raise ProtocolError(f"control frame with a {length}-byte payload")
            if not fin:
                raise ProtocolError("fragmented control frame")
            if opcode == 8:
                if not self.close_seen:
                    self.close_seq = next(_close_counter)
                self.close_seen = True
                self._close_buf = bytearray()
                self._close_mask = buf[pos + size - 4 : pos + size] if b1 & 0x80 else b""
        else:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        if self._on_frame is not None:
            self._on_frame(opcode, fin, length)
        self._remaining = length
        if not length and self._close_buf is not None:
            self._finish_close()
        return size

    def _data_frame(self, opcode: int, fin: bool, length: int) -> None:
        if opcode == 0:
            if self._msg_opcode < 0:
                raise ProtocolError("continuation frame without a message in progress")
            self._msg_size += length
        else:
            if self._msg_opcode >= 0:
                raise ProtocolError("new data frame before the previous message finished")
            self._msg_opcode = opcode
            self._msg_size = length
        if self.max_message and self._msg_size > self.max_message:
            raise PayloadTooBig(
                f"message of at least {self._msg_size} bytes exceeds {self.max_message}"
            )
        if fin:
            self.messages += 1
            if self._on_message is not None:
                self._on_message(self._msg_opcode, self._msg_size)
            self._msg_opcode = -1

    def _finish_close(self) -> None:
        payload = bytes(self._close_buf or b"")
        self._close_buf = None
        if self._close_mask:
            payload = unmask(payload, self._close_mask)
        if len(payload) == 1:
            raise ProtocolError("close frame with a 1-byte payload")
        if payload:
            self.close_code = int.from_bytes(payload[:2], "big")
            self.close_reason = payload[2:].decode("utf-8", "replace")
        else:
            self.close_code = CloseCode.NO_STATUS


class GatedScanner(FrameScanner):
    """A scanner that can withhold whole messages from the forwarded stream (throttling).

    ``admit`` is asked once per data message, at its first frame (continuation frames follow
    their message, control frames always pass). :meth:`feed` returns ``data`` itself when
    everything passes, else ``data`` with the refused messages' frames cut out at frame
    boundaries. A header split across chunks is held back until it is complete, so the
    decision is known before any of its bytes are forwarded. ``admit`` may also answer
    :data:`HOLD` (not now): the feed stops before that message's first frame, as if the bytes
    from there on had not been fed (:attr:`held_at`); the caller feeds them again later, when
    the answer may have changed. The framing rules are :class:`FrameScanner`'s; only
    connections with quotas use this class.
    """

    __slots__ = ()

    def __init__(self, masked: bool, max_message: int, allow_rsv: bool, admit: Admit) -> None:
        super().__init__(masked, max_message, allow_rsv)
        self._admit = admit
        self._gated = True

    def _data_frame(self, opcode: int, fin: bool, length: int) -> None:
        _base_data_frame(self, opcode, fin, length)  # the rules first: a bad one is not asked
        if opcode:
            ok = self._admit(opcode)
            if ok is HOLD:  # not now: as if this header had not been read
                self.frames -= 1
                if fin:
                    self.messages -= 1
                self._msg_opcode = -1
                self._msg_size = 0
                raise _Held
            self.dropping = not ok
            if self.dropping:
                self.dropped += 1


_base_data_frame = FrameScanner._data_frame


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (used for tiny close payloads only)."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    """Serialize one frame; ``mask=True`` uses a random key (frames the router sends upstream)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += n.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        return bytes(head) + key + unmask(payload, key)
    return bytes(head) + payload


MAX_CLOSE_REASON = 123  # a control frame payload is <= 125 bytes, 2 of them the code


def truncate_utf8(text: str, limit: int = MAX_CLOSE_REASON) -> bytes:
    """``text`` encoded as UTF-8 and cut to ``limit`` bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


def close_frame(code: int, reason: str = "", *, mask: bool = False) -> bytes:
    """A close frame; the reason is cut (UTF-8 safe) to fit the 125-byte control frame limit."""
    payload = code.to_bytes(2, "big") + truncate_utf8(reason)
    return encode_frame(Opcode.CLOSE, payload, mask=mask)
