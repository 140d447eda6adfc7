"""The gated scanner (throttling cuts refused messages out at frame boundaries) and the helpers
the router uses to inject a close frame: feed_to_boundary, UTF-8 safe close reasons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.frames import (
    FrameScanner,
    GatedScanner,
    Opcode,
    ProtocolError,
    close_frame,
    encode_frame,
    truncate_utf8,
)


@st.composite
def gated_streams(draw: st.DrawFn) -> tuple[bytes, bytes, list[bool], bool]:
    """(stream, expected forwarded bytes, admit decision per message, masked)."""
    masked = draw(st.booleans())
    stream = bytearray()
    expected = bytearray()
    decisions: list[bool] = []
    for m in range(draw(st.integers(1, 8))):
        admit = draw(st.booleans())
        decisions.append(admit)
        opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
        parts = draw(st.lists(st.integers(0, 300), min_size=1, max_size=3))
        for i, size in enumerate(parts):
            op = opcode if i == 0 else Opcode.CONT
            frame = encode_frame(op, bytes([m]) * size, fin=i == len(parts) - 1, mask=masked)
            stream += frame
            if admit:
                expected += frame
            if draw(st.booleans()):  # control frames pass even inside a refused message
                ctl = encode_frame(Opcode.PING, b"p" * draw(st.integers(0, 125)), mask=masked)
                stream += ctl
                expected += ctl
    return bytes(stream), bytes(expected), decisions, masked


def gate(decisions: list[bool], masked: bool = True) -> tuple[GatedScanner, list[int]]:
    asked: list[int] = []
    answers = iter(decisions)

    def admit(opcode: int) -> bool:
        asked.append(opcode)
        return next(answers)

    return GatedScanner(masked, 1 << 20, False, admit), asked


@settings(max_examples=300, deadline=None)
@given(gated_streams(), st.lists(st.integers(1, 400), max_size=40))
def test_any_split_forwards_exactly_the_admitted_messages(
    stream: tuple[bytes, bytes, list[bool], bool], chunks: list[int]
) -> None:
    data, expected, decisions, masked = stream
    scanner, asked = gate(decisions, masked)
    out = bytearray()
    pos = 0
    for size in [*chunks, len(data)]:
        out += scanner.feed(data[pos : pos + size])
        pos += size
        if pos >= len(data):
            break
    assert bytes(out) == expected
    assert len(asked) == len(decisions)  # asked once per message, never per frame
    assert scanner.dropped == decisions.count(False)
    assert scanner.at_boundary and scanner.out_at_boundary


def test_everything_admitted_returns_the_same_object() -> None:
    scanner, _ = gate([True, True])
    data = encode_frame(Opcode.TEXT, b"a", mask=True) + encode_frame(Opcode.TEXT, b"b", mask=True)
    assert scanner.feed(data) is data


def test_a_split_header_is_held_back_until_complete() -> None:
    scanner, _ = gate([True])
    frame = encode_frame(Opcode.BINARY, b"x" * 300, mask=True)  # 8-byte header
    assert scanner.feed(frame[:3]) == b""
    assert scanner.out_at_boundary and not scanner.at_boundary
    assert scanner.feed(frame[3:10]) == frame[:10]
    assert not scanner.out_at_boundary
    assert scanner.feed(frame[10:]) == frame[10:]


def test_refused_payload_leaves_the_forwarded_stream_at_a_boundary() -> None:
    scanner, _ = gate([False])
    frame = encode_frame(Opcode.BINARY, b"x" * 300, mask=True)
    assert scanner.feed(frame[:100]) == b""
    assert scanner.out_at_boundary and not scanner.at_boundary


def test_gated_scanner_still_validates() -> None:
    scanner, _ = gate([True])
    with pytest.raises(ProtocolError):
        scanner.feed(encode_frame(Opcode.TEXT, b"unmasked"))


@pytest.mark.parametrize("cut", range(0, 12))
def test_feed_to_boundary_stops_at_the_end_of_the_current_frame(cut: int) -> None:
    first = encode_frame(Opcode.BINARY, b"a" * 200)  # 4-byte header + 200
    second = encode_frame(Opcode.TEXT, b"b" * 10)
    scanner = FrameScanner(False)
    scanner.feed(first[:cut])
    rest = first[cut:] + second
    used = scanner.feed_to_boundary(rest)
    assert (cut == 0 and used == 0) or used == len(first) - cut
    assert scanner.at_boundary
    assert scanner.feed_to_boundary(second) == 0


def test_feed_to_boundary_with_too_little_data() -> None:
    scanner = FrameScanner(False)
    frame = encode_frame(Opcode.BINARY, b"a" * 200)
    scanner.feed(frame[:1])
    assert scanner.feed_to_boundary(frame[1:3]) == 2  # header still incomplete
    assert not scanner.at_boundary
    assert scanner.feed_to_boundary(frame[3:50]) == 47
    assert scanner.feed_to_boundary(frame[50:] + b"\x81\x00") == len(frame) - 50


def test_close_reason_is_cut_without_splitting_a_character() -> None:
    assert truncate_utf8("short") == b"short"
    cut = truncate_utf8("é" * 100)  # 200 bytes: 61 whole characters fit in 123
    assert cut == ("é" * 61).encode() and len(cut) == 122
    frame = close_frame(1008, "€" * 60)
    assert len(frame) <= 2 + 125
    (frame[4:]).decode("utf-8")  # still valid UTF-8


@settings(max_examples=300, deadline=None)
@given(gated_streams(), st.lists(st.integers(1, 400), max_size=40), st.data())
def test_a_held_message_is_fed_again_and_the_stream_is_the_same_as_without_holding(
    stream: tuple[bytes, bytes, list[bool], bool], chunks: list[int], data_: st.DataObject
) -> None:
    """admit answers HOLD (not now) any number of times before its decision: the feed stops
    before the message, its bytes are not consumed; fed again (the held rest first, as the
    relay does) the output and the counters are what they are without holding."""
    data, expected, decisions, masked = stream
    holds = [data_.draw(st.integers(0, 2)) for _ in decisions]
    answers = [a for d, h in zip(decisions, holds, strict=True) for a in [None] * h + [d]]
    it = iter(answers)
    asked: list[int] = []

    def admit(opcode: int) -> bool | None:
        asked.append(opcode)
        return next(it)

    scanner = GatedScanner(masked, 1 << 20, False, admit)
    plain = FrameScanner(masked, 1 << 20, False)
    plain.feed(data)
    out = bytearray()
    pos = 0
    sizes = iter(chunks)
    pending = b""  # the held rest, fed again before anything new
    while pending or pos < len(data):
        if pending:
            chunk = pending
        else:
            chunk = data[pos : pos + next(sizes, len(data))]
            pos += len(chunk)
        out += scanner.feed(chunk)
        pending = b""
        if scanner.held_at >= 0:
            pending, scanner.held_at = chunk[scanner.held_at :], -1
    assert bytes(out) == expected
    assert len(asked) == len(answers)
    assert scanner.dropped == decisions.count(False)
    assert (scanner.frames, scanner.messages, scanner.bytes) == (
        plain.frames,
        plain.messages,
        plain.bytes,
    )
    assert scanner.at_boundary and scanner.out_at_boundary


def test_a_held_message_leaves_what_precedes_it_forwarded_and_the_rest_unread() -> None:
    ping = encode_frame(Opcode.PING, b"p", mask=True)
    a, b = encode_frame(Opcode.TEXT, b"a", mask=True), encode_frame(Opcode.TEXT, b"b", mask=True)
    scanner, _ = gate([True, None, True, True])  # type: ignore[list-item]
    data = a + ping + b + ping
    assert scanner.feed(data) == a + ping
    assert scanner.held_at == len(a + ping)
    assert scanner.bytes == len(a + ping) and scanner.messages == 1 and scanner.frames == 2
    scanner.held_at = -1
    assert scanner.feed(b + ping) == b + ping  # admitted now
    assert scanner.held_at == -1 and scanner.messages == 2
    # the fast path (one whole frame) holds too: nothing consumed
    scanner2, _ = gate([None, True])  # type: ignore[list-item]
    assert scanner2.feed(a) == b"" and scanner2.held_at == 0 and scanner2.bytes == 0
    scanner2.held_at = -1
    assert scanner2.feed(a) is a and scanner2.messages == 1
