"""The relay's handling of a chunk that ends in a bad frame, on fake transports.

A read may carry complete valid frames followed by a frame the scanner refuses; the valid
ones must still reach the other side, and the router's close must follow them at a frame
boundary (found by the conformance work: "hello" + a frame with RSV set in one write).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from router.frames import FrameScanner, Opcode, ProtocolError, encode_frame
from router.lease import Clock, Health, LeasedCounter, LeaseReply, credit_cap
from router.relay import Relay, RelayInfo
from router.throttle import ConnectionThrottle, InProcessCounterStore, Limit, connection_throttle
from wsgate_proto import enforcer_pb2


class FakeTransport:
    """Records what the relay writes; enough of asyncio.Transport for Relay."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.aborted = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def frames_of(data: bytes, masked: bool) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each frame in ``data`` (complete frames only)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        length, pos = b1 & 0x7F, pos + 2
        assert length < 126
        assert bool(b1 & 0x80) is masked
        key = b""
        if masked:
            key, pos = data[pos : pos + 4], pos + 4
        payload = data[pos : pos + length]
        if key:
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        out.append((b0 & 0x0F, payload))
        pos += length
    assert pos == len(data), "the stream does not end at a frame boundary"
    return out


def make_relay(quotas: bool) -> tuple[Relay, FakeTransport, FakeTransport]:
    client, backend = FakeTransport(), FakeTransport()
    throttle = None
    if quotas:
        quota = enforcer_pb2.Quota(key="api:1", message_count=100, window_seconds=60)
        throttle = connection_throttle([quota], InProcessCounterStore(), 0.0)
        assert throttle is not None
    relay = Relay(
        cast(asyncio.Transport, client),
        cast(asyncio.Transport, backend),
        RelayInfo("req", "api:1", "/", "127.0.0.1"),
        max_message=1024,
        allow_rsv=False,
        throttle=throttle,
    )
    relay.start(b"", b"", False)
    return relay, client, backend


def with_rsv(frame: bytes) -> bytes:
    return bytes([frame[0] | 0x40]) + frame[1:]


BAD_FRAMES = {
    "rsv": with_rsv(encode_frame(Opcode.TEXT, b"bad", mask=True)),
    "unmasked": encode_frame(Opcode.TEXT, b"bad"),
    "too-big": encode_frame(Opcode.BINARY, b"x" * 2000, mask=True),
    "close-1-byte": encode_frame(Opcode.CLOSE, b"\x03", mask=True),
}


@pytest.mark.parametrize("quotas", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("bad", sorted(BAD_FRAMES))
async def test_valid_frames_before_a_bad_one_in_the_same_read_are_forwarded(
    bad: str, quotas: bool
) -> None:
    relay, client, backend = make_relay(quotas)
    hello = encode_frame(Opcode.TEXT, b"hello", mask=True)
    ping = encode_frame(Opcode.PING, b"p", mask=True)
    relay.client.data_received(hello + ping + BAD_FRAMES[bad])
    got = frames_of(bytes(backend.written), masked=True)
    code = 1009 if bad == "too-big" else 1002
    assert [op for op, _ in got] == [Opcode.TEXT, Opcode.PING, Opcode.CLOSE]
    assert got[0][1] == b"hello"
    assert int.from_bytes(got[2][1][:2], "big") == code
    to_client = frames_of(bytes(client.written), masked=False)
    assert [op for op, _ in to_client] == [Opcode.CLOSE]
    assert int.from_bytes(to_client[0][1][:2], "big") == code
    assert client.closing and backend.closing


@pytest.mark.parametrize("quotas", [False, True], ids=["plain", "gated"])
async def test_bad_frame_first_in_the_read_forwards_nothing_but_the_close(quotas: bool) -> None:
    relay, _client, backend = make_relay(quotas)
    relay.client.data_received(BAD_FRAMES["rsv"] + encode_frame(Opcode.TEXT, b"x", mask=True))
    assert [op for op, _ in frames_of(bytes(backend.written), masked=True)] == [Opcode.CLOSE]


async def test_bad_frame_after_a_split_frame_gets_no_close_mid_frame() -> None:
    """The valid frame's first bytes went out in an earlier read: the rest is forwarded, and
    the close follows at the boundary."""
    relay, _client, backend = make_relay(False)
    hello = encode_frame(Opcode.TEXT, b"hello", mask=True)
    relay.client.data_received(hello[:4])
    relay.client.data_received(hello[4:] + BAD_FRAMES["rsv"])
    got = frames_of(bytes(backend.written), masked=True)
    assert got[0] == (Opcode.TEXT, b"hello")
    assert [op for op, _ in got] == [Opcode.TEXT, Opcode.CLOSE]


async def test_backend_valid_frame_before_bad_one_reaches_client_then_1011() -> None:
    relay, client, backend = make_relay(False)
    relay.backend.data_received(encode_frame(Opcode.TEXT, b"hi") + with_rsv(encode_frame(1, b"")))
    got = frames_of(bytes(client.written), masked=False)
    assert [op for op, _ in got] == [Opcode.TEXT, Opcode.CLOSE]
    assert got[0][1] == b"hi"
    assert int.from_bytes(got[1][1][:2], "big") == 1011  # the backend broke: an internal error
    to_backend = frames_of(bytes(backend.written), masked=True)
    assert [op for op, _ in to_backend] == [Opcode.CLOSE]
    assert int.from_bytes(to_backend[0][1][:2], "big") == 1002


def test_scanner_error_records_the_bad_frame_offset() -> None:
    hello = encode_frame(Opcode.TEXT, b"hello", mask=True)
    scanner = FrameScanner(True, 1024, False)
    with pytest.raises(ProtocolError) as info:
        scanner.feed(hello + BAD_FRAMES["rsv"])
    assert info.value.offset == len(hello)
    split = FrameScanner(True, 1024, False)
    split.feed(BAD_FRAMES["rsv"][:1])
    with pytest.raises(ProtocolError) as info:  # the bad header began in the earlier chunk
        split.feed(BAD_FRAMES["rsv"][1:])
    assert info.value.offset == -1


class FlowTransport(FakeTransport):
    """A FakeTransport that knows whether it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def leased_relay() -> tuple[Relay, FlowTransport, FlowTransport, LeasedCounter, list[int]]:
    """A relay whose quota is a real leased counter whose cold-start credit is used up and
    whose lease request is in flight: the next message finds nothing."""
    kicks: list[int] = []
    counter = LeasedCounter(
        1000, 10.0, subs=10, routers=1, max_lease=100, clock=Clock(), health=Health(),
        kick=lambda c: kicks.append(1),
    )  # fmt: skip
    now = time.monotonic()
    for _ in range(credit_cap(1000, 1)):  # on credit (the cap is 2 here) ...
        assert counter.available(now)
        counter.take(now)
    assert kicks == [1] and counter.in_flight  # ... and a lease is asked for
    limit = Limit("api:1", "p", counter, False)
    client, backend = FlowTransport(), FlowTransport()
    relay = Relay(
        cast(asyncio.Transport, client), cast(asyncio.Transport, backend),
        RelayInfo("req", "api:1", "/", "127.0.0.1"), max_message=1024, allow_rsv=False,
        throttle=ConnectionThrottle((limit,), InProcessCounterStore()),
    )  # fmt: skip
    relay.start(b"", b"", False)
    return relay, client, backend, counter, kicks


async def test_a_held_message_passes_once_the_leased_counter_takes_its_reply_in() -> None:
    """The Redis store's path: the reply is taken in (granted), then wake feeds the held side."""
    relay, client, backend, counter, _ = leased_relay()
    msg = encode_frame(Opcode.TEXT, b"held", mask=True)
    relay.client.data_received(msg)
    assert backend.written == b"" and not client.reading and relay.holds == 1
    assert relay.throttled == 0 and relay.total_bytes == 0  # held bytes are not read yet
    now = time.monotonic()
    req = counter.request(now)
    counter.granted(req, LeaseReply(50, req.target, req.target, 900, now), now)
    assert backend.written == b""  # (granted alone changes nothing: the store calls wake)
    counter.wake()
    assert bytes(backend.written) == msg and client.reading
    assert relay.client.held is None and relay.total_bytes == len(msg)


async def test_hold_and_backpressure_pause_reading_apart() -> None:
    """The backend's write buffer drains while the client side is held: reading stays paused;
    the hold ends while the buffer is still full: reading stays paused too."""
    relay, client, backend, counter, _ = leased_relay()
    relay.client.data_received(encode_frame(Opcode.TEXT, b"held", mask=True))
    assert not client.reading
    relay.backend.pause_writing()  # the backend's buffer fills, then drains
    relay.backend.resume_writing()
    assert not client.reading  # still held
    relay.backend.pause_writing()  # full again
    now = time.monotonic()
    req = counter.request(now)
    counter.granted(req, LeaseReply(50, req.target, req.target, 900, now), now)
    counter.wake()
    assert len(backend.written) > 0 and relay.client.held is None
    assert not client.reading  # the buffer is still full
    relay.backend.resume_writing()
    assert client.reading


async def test_a_held_message_is_refused_when_the_reply_says_no_room() -> None:
    relay, client, backend, counter, _ = leased_relay()
    ping = encode_frame(Opcode.PING, b"p", mask=True)
    relay.client.data_received(encode_frame(Opcode.TEXT, b"held", mask=True) + ping)
    assert backend.written == b""
    now = time.monotonic()
    req = counter.request(now)
    counter.granted(req, LeaseReply(0, req.target, req.target, 0, now), now)  # dry
    counter.wake()
    assert bytes(backend.written) == ping and relay.throttled == 1 and client.reading
