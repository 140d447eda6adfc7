"""The per-handshake lines written without a LogRecord (wsgate_common.logs.info_writer) are the
very lines the logging machinery writes, and the shortcut is only taken when nothing else
(another handler, a filter, JSON lines, a higher level) could see a difference."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator

import pytest

from router.analytics import Counts
from router.relay import RelayInfo, log_closed
from wsgate_common import logs
from wsgate_common.logs import info_writer, setup_logging

NOW = 1796154471.2219


class _Off(logging.Filter):
    """A filter that lets every record through: its presence alone forces the usual path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return True


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    monkeypatch.setattr(time, "time", lambda: NOW)
    try:
        setup_logging("router", flush_interval=0)
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(out)
        yield out
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _only_ours() -> None:
    """Take pytest's capture handlers (added to the root around each test) off the root."""
    fast = logs._fast
    assert fast is not None
    logging.getLogger().handlers[:] = [fast.handler]


def _both(out: io.StringIO, logger: logging.Logger, emit: Callable[[], None]) -> list[str]:
    """The lines ``emit`` writes through the shortcut, then through a LogRecord."""
    _only_ours()
    assert info_writer(logger) is not None
    emit()
    off = _Off()
    logger.addFilter(off)
    try:
        assert info_writer(logger) is None
        emit()
    finally:
        logger.removeFilter(off)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    return lines


def test_a_written_line_is_the_logged_line(stream: io.StringIO) -> None:
    logger = logging.getLogger("router.server")

    def emit() -> None:
        message = "handshake 50% done,\n  next line"
        write = info_writer(logger)
        if write is not None:
            write(message)
        else:
            logger.info(message)

    fast, slow = _both(stream, logger, emit)
    assert fast == slow
    assert fast.endswith(" router INFO router.server: handshake 50% done, next line")
    assert ",221 router" in fast  # the milliseconds of the record's time


def test_the_closed_line_is_the_same_on_both_paths(stream: io.StringIO) -> None:
    info = RelayInfo("rid", "Chat:1.0.0", "/rooms/{roomId}", "127.0.0.1")
    counts = Counts(1, 2, 19, 1, 1, 15, 3)
    fast, slow = _both(
        stream,
        logging.getLogger("router.relay"),
        lambda: log_closed(info, "client", 1000, 'x "y"', 0.25, counts, True),
    )
    assert fast == slow
    assert "closed rid api=Chat:1.0.0 topic=/rooms/{roomId} by=client close=1000" in fast
    assert fast.endswith(", throttled: 3 msgs")


def test_no_shortcut_when_something_else_could_see_the_record(stream: io.StringIO) -> None:
    logger = logging.getLogger("router.server")
    root = logging.getLogger()
    _only_ours()
    assert info_writer(logger) is not None
    capture = logging.Handler()
    root.addHandler(capture)
    assert info_writer(logger) is None  # e.g. pytest's caplog
    root.removeHandler(capture)
    assert info_writer(logger) is not None
    logger.setLevel(logging.WARNING)
    try:
        assert info_writer(logger) is None
    finally:
        logger.setLevel(logging.NOTSET)
    child = logging.getLogger("router")
    child.addHandler(capture)
    try:
        assert info_writer(logger) is None  # a handler on the way up
    finally:
        child.removeHandler(capture)
    setup_logging("router", fmt="json")
    assert logs._fast is None and info_writer(logger) is None  # JSON lines show the extras
