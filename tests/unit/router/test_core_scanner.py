"""Differential tests: the C scanner/gate (router/_core/scan.c) against the Python reference
(router.frames.FrameScanner / GatedScanner).

Both are fed the same random frame streams split at random points, with the same admit
decisions; after every feed they must agree on the bytes forwarded, the counters, the
boundaries and the error (kind, message, offset). Under ``CI=true`` a missing build fails.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.frames import (
    FrameScanner,
    FramingError,
    GatedScanner,
    Opcode,
    PayloadTooBig,
    close_frame,
    encode_frame,
)
from tests.procs import import_or_unavailable

LIMIT = 5000


@pytest.fixture(scope="module")
def core() -> Any:
    return import_or_unavailable("router._core")


class Decisions:
    """The same sequence of admit answers for both scanners (the gate asks once per message)."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers or [True]
        self.asked: list[int] = []

    def __call__(self, opcode: int) -> bool:
        self.asked.append(opcode)
        return self.answers[(len(self.asked) - 1) % len(self.answers)]


def state(s: Any) -> tuple[object, ...]:
    return (
        s.frames,
        s.messages,
        s.bytes,
        s.dropped,
        s.dropping,
        s.at_boundary,
        s.out_at_boundary,
        s.fed_at_boundary,
        s.close_seen,
        s.close_code,
        s.close_reason,
    )


def compare(
    core: Any, chunks: list[bytes], masked: bool, answers: list[bool] | None, rsv: bool = False
) -> tuple[bytes, tuple[int, str, int] | None]:
    """Feed both; assert equal after every chunk; return what was forwarded and the error."""
    py_admit = Decisions(answers) if answers is not None else None
    c_admit = Decisions(answers) if answers is not None else None
    py: FrameScanner = (
        GatedScanner(masked, LIMIT, rsv, py_admit)
        if py_admit is not None
        else FrameScanner(masked, LIMIT, rsv)
    )
    c = core.Scanner(masked, LIMIT, rsv, c_admit)
    forwarded = bytearray()
    error = None
    for chunk in chunks:
        try:
            want = py.feed(chunk)
        except FramingError as exc:
            code = 1009 if isinstance(exc, PayloadTooBig) else 1002
            error = (code, str(exc), exc.offset)
            want = exc.kept
        got = c.feed(chunk)
        assert got == want
        assert c.error == error
        assert state(c) == state(py)
        if py_admit is not None and c_admit is not None:
            assert c_admit.asked == py_admit.asked
        forwarded += got
        if error is not None:
            break
    return bytes(forwarded), error


def ok(masked: bool) -> bytes:
    return b"".join(
        (
            encode_frame(Opcode.TEXT, b"hello", mask=masked),
            encode_frame(Opcode.BINARY, b"b" * 300, mask=masked),
            encode_frame(Opcode.TEXT, b"frag", fin=False, mask=masked),
            encode_frame(Opcode.PING, b"p", mask=masked),
            encode_frame(Opcode.CONT, b"ment", mask=masked),
            encode_frame(Opcode.PONG, b"", mask=masked),
            encode_frame(Opcode.BINARY, b"", mask=masked),
            encode_frame(Opcode.BINARY, b"x" * 4900, mask=masked),  # 16-bit, big
            close_frame(4000, "bye \u00e9", mask=masked),
        )
    )


@pytest.mark.parametrize("masked", [True, False], ids=["client", "backend"])
@pytest.mark.parametrize("answers", [None, [True], [False], [True, False, False]])
def test_valid_stream_split_everywhere(core: Any, masked: bool, answers: list[bool] | None) -> None:
    data = ok(masked)
    head = data[:400]  # every cut of the small frames, the big one whole and in two
    for cut in range(len(head) + 1):
        out, error = compare(core, [data[:cut], data[cut:]], masked, answers)
        assert error is None
        if answers in (None, [True]):
            assert out == data
    compare(core, [data[i : i + 1] for i in range(400)], masked, answers)


def test_close_code_and_reason(core: Any) -> None:
    scanner = core.Scanner(True, LIMIT, False)
    frame = close_frame(4000, "bye \u00e9", mask=True)
    assert scanner.feed(frame) == frame
    assert (scanner.close_seen, scanner.close_code, scanner.close_reason) == (True, 4000, "bye é")
    empty = core.Scanner(False, LIMIT, False)
    empty.feed(encode_frame(Opcode.CLOSE, b""))
    assert empty.close_code == 1005


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


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("answers", [None, [False, True]])
def test_bad_stream_split_everywhere(core: Any, name: str, answers: list[bool] | None) -> None:
    bad, masked = BAD[name]
    prefix = encode_frame(Opcode.TEXT, b"ok", mask=masked) + encode_frame(
        Opcode.BINARY, b"z" * 130, mask=masked
    )
    data = prefix + bad
    cuts = range(1, len(data)) if len(data) < 400 else [*range(1, 300), len(data) - 1]
    errors = set()
    for cut in cuts:
        _, error = compare(core, [data[:cut], data[cut:]], masked, answers)
        errors.add(error is not None)
    _, error = compare(core, [data[i : i + 1] for i in range(len(data))], masked, answers)
    assert error is not None
    assert errors == {True}, f"{name} was not refused"


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Frames of any kind and size class, now and then a broken one."""
    masked = draw(st.booleans())
    out = bytearray()
    for _ in range(draw(st.integers(1, 12))):
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
        if draw(st.integers(0, 20)) == 0:
            frame = bytes([frame[0] | 0x40]) + frame[1:]  # RSV1
        out += frame
    return bytes(out), masked


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        chunks.append(data[pos:])
    return chunks


@settings(max_examples=400, deadline=None)
@given(
    streams(),
    st.lists(st.integers(1, 3000), max_size=25),
    st.one_of(st.none(), st.lists(st.booleans(), min_size=1, max_size=8)),
    st.booleans(),
)
def test_random_streams_random_chunks(
    core: Any,
    case: tuple[bytes, bool],
    sizes: list[int],
    answers: list[bool] | None,
    rsv: bool,
) -> None:
    data, masked = case
    compare(core, cut(data, sizes), masked, answers, rsv)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(0, 2**32), st.lists(st.booleans(), min_size=1, max_size=8))
def test_feed_to_boundary_agrees(
    core: Any, case: tuple[bytes, bool], seed: int, answers: list[bool]
) -> None:
    """The closing path's partial scan (Relay._FinishFrame) agrees too."""
    data, masked = case
    rng = random.Random(seed)
    py = GatedScanner(masked, LIMIT, False, Decisions(answers))
    c = core.Scanner(masked, LIMIT, False, Decisions(answers))
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 400)
        chunk = data[pos : pos + n]
        pos += n
        if rng.random() < 0.3:
            try:
                want = py.feed_to_boundary(chunk)
            except FramingError:
                want = -1
            assert c.feed_to_boundary(chunk) == want
            if want < 0:
                return
            assert state(c) == state(py)
            continue
        try:
            expected = py.feed(chunk)
        except FramingError as exc:
            assert c.feed(chunk) == exc.kept
            assert c.error is not None and c.error[2] == exc.offset
            return
        assert c.feed(chunk) == expected
        assert state(c) == state(py)


def test_admit_errors_propagate(core: Any) -> None:
    def boom(opcode: int) -> bool:
        raise RuntimeError("no")

    scanner = core.Scanner(False, LIMIT, False, boom)
    with pytest.raises(RuntimeError):
        scanner.feed(encode_frame(Opcode.TEXT, b"x"))
