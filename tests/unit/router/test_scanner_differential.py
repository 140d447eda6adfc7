"""Differential tests: one frame loop serves plain and gated connections alike.

The same byte stream, cut at every position (and byte by byte), must give the same frames,
messages, counters and errors whether the scanner is plain or gated with everything admitted;
the gated one may only hold back the start of a split header until it is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.frames import (
    FrameScanner,
    FramingError,
    GatedScanner,
    Opcode,
)
from tests.unit.router.frame_streams import BAD, LIMIT, cut, ok, prefix, streams


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
    for at in range(1, len(data)):
        yield [data[:at], data[at:]]
    yield [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("masked", [True, False], ids=["client", "backend"])
def test_valid_stream_split_everywhere(masked: bool) -> None:
    data = ok(masked)
    for chunks in splits(data):
        assert_same(chunks, masked)
    assert feed([data], masked, gated=False, hooks=False).error is None


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_stream_split_everywhere(name: str) -> None:
    bad, masked = BAD[name]
    data = prefix(masked) + bad
    errors = set()
    for chunks in splits(data):
        assert_same(chunks, masked)
        errors.add(feed(chunks, masked, gated=False, hooks=False).error is not None)
    assert errors == {True}, f"{name} was not refused"


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(1, 3000), max_size=20))
def test_random_streams_random_chunks(case: tuple[bytes, bool], sizes: list[int]) -> None:
    data, masked = case
    assert_same(cut(data, sizes), masked)


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
        check.on_frame = _recorder(seen)
        check.feed(out)
        assert seen == [(Opcode.PING, True, 1), (Opcode.PONG, True, 0), (Opcode.CLOSE, True, 5)]


def _recorder(seen: list[tuple[int, bool, int]]) -> Callable[[int, bool, int], None]:
    """An ``on_frame`` hook appending what it sees to ``seen``."""

    def record(op: int, fin: bool, n: int) -> None:
        seen.append((op, fin, n))

    return record
