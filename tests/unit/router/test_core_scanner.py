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
from tests.unit.router.frame_streams import BAD, LIMIT, cut, ok, prefix, streams


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


@pytest.mark.parametrize("masked", [True, False], ids=["client", "backend"])
@pytest.mark.parametrize("answers", [None, [True], [False], [True, False, False]])
def test_valid_stream_split_everywhere(core: Any, masked: bool, answers: list[bool] | None) -> None:
    data = ok(masked, big=True)
    head = data[:400]  # every cut of the small frames, the big one whole and in two
    for at in range(len(head) + 1):
        out, error = compare(core, [data[:at], data[at:]], masked, answers)
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


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("answers", [None, [False, True]])
def test_bad_stream_split_everywhere(core: Any, name: str, answers: list[bool] | None) -> None:
    bad, masked = BAD[name]
    data = prefix(masked) + bad
    cuts = range(1, len(data)) if len(data) < 400 else [*range(1, 300), len(data) - 1]
    errors = set()
    for at in cuts:
        _, error = compare(core, [data[:at], data[at:]], masked, answers)
        errors.add(error is not None)
    _, error = compare(core, [data[i : i + 1] for i in range(len(data))], masked, answers)
    assert error is not None
    assert errors == {True}, f"{name} was not refused"


@settings(max_examples=400, deadline=None)
@given(
    streams(max_frames=12, rsv1=True),
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
@given(
    streams(max_frames=12, rsv1=True),
    st.integers(0, 2**32),
    st.lists(st.booleans(), min_size=1, max_size=8),
)
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
