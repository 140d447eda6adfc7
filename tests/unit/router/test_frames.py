"""The frame-header scanner: chunking independence, limits, validation (Sans-I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.frames import (
    CloseCode,
    FrameScanner,
    Opcode,
    PayloadTooBig,
    ProtocolError,
    close_frame,
    encode_frame,
    explain_close,
    unmask,
)

Frame = tuple[int, bool, int]


@dataclass
class Scan:
    scanner: FrameScanner
    seen: list[Frame] = field(default_factory=list)
    msgs: list[tuple[int, int]] = field(default_factory=list)


def scan(data: bytes, chunks: list[int], masked: bool, max_message: int = 1 << 20) -> Scan:
    """Feed ``data`` cut at the given chunk sizes (the rest in one piece)."""
    result = Scan(FrameScanner(masked, max_message))
    result.scanner.on_frame = lambda op, fin, n: result.seen.append((op, fin, n))
    result.scanner.on_message = lambda op, n: result.msgs.append((op, n))
    pos = 0
    for size in chunks:
        result.scanner.feed(data[pos : pos + size])
        pos += size
    result.scanner.feed(data[pos:])
    return result


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[bytes, list[Frame], bool]:
    """A well-formed stream of messages (some fragmented) with interleaved control frames."""
    masked = draw(st.booleans())
    out = bytearray()
    frames: list[Frame] = []
    for _ in range(draw(st.integers(1, 6))):
        opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
        parts = draw(st.lists(st.integers(0, 70000), min_size=1, max_size=3))
        for i, size in enumerate(parts):
            fin = i == len(parts) - 1
            op = opcode if i == 0 else Opcode.CONT
            out += encode_frame(op, b"\x00" * size, fin=fin, mask=masked)
            frames.append((op, fin, size))
            if draw(st.booleans()):
                ctl = draw(st.sampled_from([Opcode.PING, Opcode.PONG]))
                n = draw(st.integers(0, 125))
                out += encode_frame(ctl, b"p" * n, mask=masked)
                frames.append((ctl, True, n))
    return bytes(out), frames, masked


@settings(max_examples=150, deadline=None)
@given(valid_streams(), st.lists(st.integers(1, 20000), max_size=30))
def test_any_split_yields_the_same_frames(
    stream: tuple[bytes, list[Frame], bool], chunks: list[int]
) -> None:
    data, frames, masked = stream
    whole = scan(data, [], masked)
    split = scan(data, chunks, masked)
    assert whole.seen == frames
    assert split.seen == frames
    assert split.msgs == whole.msgs
    assert split.scanner.frames == len(frames) and split.scanner.bytes == len(data)
    assert split.scanner.at_boundary


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans(), st.lists(st.integers(1, 50), max_size=10))
def test_random_bytes_only_raise_protocol_errors(
    data: bytes, masked: bool, chunks: list[int]
) -> None:
    try:
        scan(data, chunks, masked, max_message=200)
    except (ProtocolError, PayloadTooBig):
        pass


def test_header_split_at_every_position() -> None:
    frame = encode_frame(Opcode.BINARY, b"x" * 70000, mask=True)
    for cut in range(1, 15):
        s = scan(frame + frame, [cut, len(frame) - cut, 3], masked=True)
        assert s.seen == [(2, True, 70000)] * 2


def test_message_limit_counts_fragments() -> None:
    limit = 1024
    ok = encode_frame(Opcode.TEXT, b"a" * 1000, fin=False) + encode_frame(Opcode.CONT, b"a" * 24)
    assert scan(ok, [], masked=False, max_message=limit).scanner.messages == 1
    over = encode_frame(Opcode.TEXT, b"a" * 1000, fin=False) + encode_frame(Opcode.CONT, b"a" * 25)
    with pytest.raises(PayloadTooBig) as info:
        scan(over, [], masked=False, max_message=limit)
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG == 1009


def test_limit_is_checked_from_the_header_alone() -> None:
    header = encode_frame(Opcode.BINARY, b"a" * ((1 << 20) + 1))[:10]
    with pytest.raises(PayloadTooBig):
        FrameScanner(False, 1 << 20).feed(header)
    exactly = encode_frame(Opcode.BINARY, b"a" * ((1 << 20) - 1))
    assert scan(exactly, [7, 65536], masked=False).scanner.messages == 1


@pytest.mark.parametrize(
    ("data", "masked"),
    [
        (encode_frame(Opcode.TEXT, b"hi"), True),  # unmasked from the client
        (encode_frame(Opcode.TEXT, b"hi", mask=True), False),  # masked from the server
        (bytes([0x83, 0x00]), False),  # reserved data opcode
        (bytes([0x8B, 0x00]), False),  # reserved control opcode
        (encode_frame(Opcode.PING, b"p" * 126), False),  # control frame too long
        (encode_frame(Opcode.PING, b"p", fin=False), False),  # fragmented control frame
        (encode_frame(Opcode.CONT, b"x"), False),  # continuation without a message
        (bytes([0xC1, 0x00]), False),  # RSV1 without an extension
        (bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]), False),  # 64-bit length, top bit set
        (bytes([0x88, 0x01, 0x03]), False),  # close with a 1-byte payload
    ],
    # Fixed ids: a masked frame has a random key, and pytest-xdist workers must collect alike.
    ids=[
        "unmasked-from-client",
        "masked-from-server",
        "reserved-data-opcode",
        "reserved-control-opcode",
        "long-control-frame",
        "fragmented-control-frame",
        "orphan-continuation",
        "rsv1-without-extension",
        "length-top-bit",
        "one-byte-close",
    ],
)
def test_protocol_errors(data: bytes, masked: bool) -> None:
    with pytest.raises(ProtocolError) as info:
        FrameScanner(masked).feed(data)
    assert info.value.close_code == 1002


def test_rsv_allowed_with_extension() -> None:
    scanner = FrameScanner(False, allow_rsv=True)
    scanner.feed(bytes([0xC1, 0x01, 0x00]))
    assert scanner.messages == 1


@pytest.mark.parametrize("masked", [True, False])
def test_close_code_and_reason_are_read(masked: bool) -> None:
    frame = close_frame(4000, "bye", mask=masked)
    s = scan(encode_frame(Opcode.TEXT, b"x", mask=masked) + frame, [3, 1, 2], masked)
    assert s.scanner.close_seen and s.scanner.close_code == 4000 and s.scanner.close_reason == "bye"


def test_empty_close_is_1005() -> None:
    s = FrameScanner(False)
    s.feed(encode_frame(Opcode.CLOSE, b""))
    assert s.close_code == CloseCode.NO_STATUS


def test_at_boundary_tracks_partial_frames() -> None:
    s = FrameScanner(False)
    frame = encode_frame(Opcode.BINARY, b"abc")
    s.feed(frame[:1])
    assert not s.at_boundary
    s.feed(frame[1:4])
    assert not s.at_boundary and s.fed_at_boundary is False
    s.feed(frame[4:])
    assert s.at_boundary


def test_unmask_roundtrip_and_explanations() -> None:
    assert unmask(unmask(b"hello world", b"abcd"), b"abcd") == b"hello world"
    assert explain_close(1009) == "1009 (message too big)"
    assert explain_close(4000) == "4000 (application)"
    assert explain_close(None) == "none"


def _state(scanner: FrameScanner) -> tuple[object, ...]:
    return (
        scanner.frames,
        scanner.messages,
        scanner.bytes,
        scanner.at_boundary,
        scanner.fed_at_boundary,
        scanner.close_seen,
        scanner.close_code,
    )


def _feed_all(scanner: FrameScanner, chunks: list[bytes]) -> tuple[object, ...]:
    try:
        for chunk in chunks:
            scanner.feed(chunk)
    except (ProtocolError, PayloadTooBig) as exc:
        return (type(exc).__name__, exc.offset, *_state(scanner))
    return _state(scanner)


@st.composite
def frame_chunks(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """One frame per chunk, mostly ones the fast path takes, some it must refuse."""
    masked = draw(st.booleans())
    chunks = []
    for _ in range(draw(st.integers(1, 8))):
        opcode = draw(st.sampled_from([0, 1, 2, 9, 8, 3]))
        size = draw(st.sampled_from([0, 1, 64, 125, 126, 300, 4096, 65535, 65536, 70000]))
        if opcode >= 8:
            size = min(size, 125)
        frame = encode_frame(opcode, b"\x00" * size, fin=draw(st.booleans()), mask=masked)
        if draw(st.integers(0, 9)) == 0:  # a bad bit here and there: RSV or the mask bit
            frame = bytes([frame[0] | 0x40]) + frame[1:]
        if draw(st.integers(0, 9)) == 0:
            frame = frame[:1] + bytes([frame[1] ^ 0x80]) + frame[2:]
        cut = draw(st.sampled_from([0, 0, 0, 1, -1]))  # sometimes not exactly one frame
        chunks.append(frame[:cut] if cut else frame)
    return chunks, masked


@settings(max_examples=400, deadline=None)
@given(frame_chunks(), st.sampled_from([0, 100, 4096, 1 << 20]))
def test_fast_path_agrees_with_the_general_loop(
    case: tuple[list[bytes], bool], max_message: int
) -> None:
    chunks, masked = case
    fast = FrameScanner(masked, max_message)
    general = FrameScanner(masked, max_message)
    general.on_frame = lambda op, fin, n: None  # a hook turns the fast path off
    assert fast._fast and not general._fast
    assert _feed_all(fast, chunks) == _feed_all(general, chunks)
    fast.on_frame = None
    assert fast._fast
