"""Differential tests: one frame loop serves plain and gated connections alike.

The same byte stream, cut at every position (and byte by byte), must give the same frames,
messages, counters and errors whether the scanner is plain or gated with everything admitted;
the gated one may only hold back the start of a split header until it is complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.frames import (
    FrameScanner,
    FramingError,
    GatedScanner,
    Opcode,
    close_frame,
    encode_frame,
)

LIMIT = 5000


@dataclass
class Run:
    """What one scanner made of a stream fed in chunks."""

    frames: list[tuple[int, bool, int]] = field(default_factory=list)
    messages: list[tuple[int, int]] = field(default_factory=list)
    forwarded: bytearray = field(default_factory=bytearray)
    error: tuple[str, str, int] | None = None
    state: tuple[object, ...] = ()


def feed(chunks: list[bytes], masked: bool, gated: bool, hooks: bool) -> Run:
    run = Run()
    scanner = (
        GatedScanner(masked, LIMIT, False, lambda opcode: True)
        if gated
        else FrameScanner(masked, LIMIT, False)
    )
    if hooks:  # hooks turn the one-frame fast path off: both paths are compared
        scanner.on_frame = lambda op, fin, n: run.frames.append((op, fin, n))
        scanner.on_message = lambda op, n: run.messages.append((op, n))
    try:
        for chunk in chunks:
            out = scanner.feed(chunk)
            if not gated:
                assert out is chunk  # a plain scanner forwards what it reads, never a copy
            run.forwarded += out
    except FramingError as exc:
        run.error = (type(exc).__name__, str(exc), exc.offset)
        run.forwarded += exc.kept
    run.state = (
        scanner.frames,
        scanner.messages,
        scanner.bytes,
        scanner.dropped,
        scanner.at_boundary,
        scanner.close_seen,
        scanner.close_code,
        scanner.close_reason,
    )
    return run


def assert_same(chunks: list[bytes], masked: bool) -> None:
    for hooks in (False, True):
        plain = feed(chunks, masked, gated=False, hooks=hooks)
        gated = feed(chunks, masked, gated=True, hooks=hooks)
        assert gated.frames == plain.frames
        assert gated.messages == plain.messages
        assert gated.error == plain.error
        assert gated.state == plain.state
        # Same bytes out, except the start of a header still held back by the gated one.
        held = len(plain.forwarded) - len(gated.forwarded)
        assert plain.forwarded.startswith(gated.forwarded)
        assert 0 <= held < 14, held
        if plain.error is None and not held:
            assert bytes(plain.forwarded) == b"".join(chunks)


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The stream whole, cut in two at every position, and byte by byte."""
    yield [data]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    yield [data[i : i + 1] for i in range(len(data))]


def ok(masked: bool) -> bytes:
    """A valid stream with every kind of frame the scanner treats differently."""
    return b"".join(
        (
            encode_frame(Opcode.TEXT, b"hello", mask=masked),  # fast path
            encode_frame(Opcode.BINARY, b"b" * 300, mask=masked),  # 16-bit length
            encode_frame(Opcode.TEXT, b"frag", fin=False, mask=masked),
            encode_frame(Opcode.PING, b"p", mask=masked),  # control inside a message
            encode_frame(Opcode.CONT, b"ment", mask=masked),
            encode_frame(Opcode.PONG, b"", mask=masked),
            encode_frame(Opcode.BINARY, b"", mask=masked),  # empty message
            close_frame(4000, "bye", mask=masked),
        )
    )


BAD = {
    "unmasked-from-client": (encode_frame(Opcode.TEXT, b"hi"), True),
    "masked-from-server": (encode_frame(Opcode.TEXT, b"hi", mask=True), False),
    "reserved-opcode": (bytes([0x83, 0x00]), False),
    "long-control": (encode_frame(Opcode.PING, b"p" * 126), False),
    "fragmented-control": (encode_frame(Opcode.PING, b"p", fin=False), False),
    "orphan-continuation": (encode_frame(Opcode.CONT, b"x"), False),
    "rsv1": (bytes([0xC1, 0x00]), False),
    "length-top-bit": (bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]), False),
    "one-byte-close": (bytes([0x88, 0x01, 0x03]), False),
    "too-big-16": (encode_frame(Opcode.BINARY, b"x" * (LIMIT + 1)), False),
    "too-big-fragments": (
        encode_frame(Opcode.TEXT, b"a" * 4000, fin=False) + encode_frame(Opcode.CONT, b"a" * 1001),
        False,
    ),
    "too-big-64": (bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]), False),
    "new-message-inside-one": (
        encode_frame(Opcode.TEXT, b"a", fin=False) + encode_frame(Opcode.TEXT, b"b"),
        False,
    ),
}


@pytest.mark.parametrize("masked", [True, False], ids=["client", "backend"])
def test_valid_stream_split_everywhere(masked: bool) -> None:
    data = ok(masked)
    for chunks in splits(data):
        assert_same(chunks, masked)
    assert feed([data], masked, gated=False, hooks=False).error is None


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_stream_split_everywhere(name: str) -> None:
    bad, masked = BAD[name]
    # Good frames first, so the error comes with frames to forward before it.
    prefix = encode_frame(Opcode.TEXT, b"ok", mask=masked) + encode_frame(
        Opcode.BINARY, b"z" * 130, mask=masked
    )
    data = prefix + bad
    errors = set()
    for chunks in splits(data):
        assert_same(chunks, masked)
        errors.add(feed(chunks, masked, gated=False, hooks=False).error is not None)
    assert errors == {True}, f"{name} was not refused"


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Frames of any kind and size class, now and then a broken one."""
    masked = draw(st.booleans())
    out = bytearray()
    for _ in range(draw(st.integers(1, 10))):
        opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3]))
        size = draw(st.sampled_from([0, 1, 2, 64, 125, 126, 300, 4096, 5001, 65536]))
        if opcode >= 8 and draw(st.integers(0, 5)):
            size = min(size, 125)
        if opcode == 8 and size == 1 and draw(st.booleans()):
            size = 2
        frame = encode_frame(opcode, b"\x03\xe8" * (size // 2) + b"x" * (size % 2), mask=masked)
        if draw(st.integers(0, 3)) == 0:
            frame = bytes([frame[0] & 0x7F]) + frame[1:]  # not FIN
        if draw(st.integers(0, 15)) == 0:
            frame = frame[:1] + bytes([frame[1] ^ 0x80]) + frame[2:]  # wrong mask bit
        out += frame
    return bytes(out), masked


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(1, 3000), max_size=20))
def test_random_streams_random_chunks(case: tuple[bytes, bool], sizes: list[int]) -> None:
    data, masked = case
    chunks, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        chunks.append(data[pos:])
    assert_same(chunks, masked)


def test_every_message_refused_forwards_only_control_frames() -> None:
    """The same loop, with refusals: what is cut and what passes does not depend on chunking."""
    masked = True
    data = ok(masked)
    for chunks in splits(data):
        scanner = GatedScanner(masked, LIMIT, False, lambda opcode: False)
        out = b"".join(scanner.feed(chunk) for chunk in chunks)
        assert scanner.dropped == 4 and scanner.messages == 4
        check = FrameScanner(masked, on_frame=lambda op, fin, n: None)
        seen: list[tuple[int, bool, int]] = []

        def record(op: int, fin: bool, n: int, seen: list[tuple[int, bool, int]] = seen) -> None:
            seen.append((op, fin, n))

        check.on_frame = record
        check.feed(out)
        assert seen == [(Opcode.PING, True, 1), (Opcode.PONG, True, 0), (Opcode.CLOSE, True, 5)]
