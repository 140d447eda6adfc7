"""Logging set-up shared by the components: one line per event, text or JSON.

A busy router or enforcer logs a few lines per handshake, so the path is kept cheap: no caller
lookup, thread or process names (the formats show none of them), the timestamp text built once
per second, and lines that come close together written in batches (:class:`BatchingStreamHandler`:
within 50 ms; a lone line and WARNING up at once) rather than one write and flush per line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")

FLUSH_INTERVAL = 0.05  # seconds an INFO line may wait before it is written
MAX_BUFFERED = 256  # lines; more are written at once
IDLE_GAP = 0.005  # seconds without a line after which the next one is written at once


class OneLineFormatter(logging.Formatter):
    """The text format with each message on one line (a library's multi-line message, e.g.
    an Alembic revision docstring, would otherwise start lines outside the format); a traceback
    passed with ``exc_info`` still follows on its own lines."""

    _second = -1
    _second_text = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if "\n" in message or "\r" in message:
            record.message = _LINE_BREAKS.sub(" ", message)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The default ``2026-12-01 15:55:06,767`` text, its seconds part built once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"

    def time_text(self, created: float) -> str:
        """:meth:`formatTime`'s text for a record made at ``created`` (LogRecord's msecs)."""
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int((created - second) * 1000):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed with ``extra=`` are kept."""

    _skip = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes lines in batches instead of one write + flush per line.

    A line that comes after :data:`IDLE_GAP` without any is written at once; lines that follow
    it closely (a busy process) are written together by a flusher thread within ``interval``
    (writing once per event loop iteration instead was measured: at a few hundred handshakes/s
    an iteration rarely holds more than one line, so it saved next to nothing). Every
    :data:`MAX_BUFFERED` lines, and at WARNING and above, everything buffered is written at
    once, so a problem is never held back; :meth:`flush` (called by ``logging.shutdown`` at
    exit) writes the rest."""

    def __init__(self, stream: TextIO | None = None, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(stream)
        self.interval = interval
        self._lines: list[str] = []
        self._last = 0.0  # when the previous line was logged
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add_line(line, record.created, record.levelno)

    def add_line(self, line: str, created: float, levelno: int) -> None:
        """Buffer or write one formatted line (the caller holds the handler's lock)."""
        quiet = created - self._last >= IDLE_GAP
        self._last = created
        if quiet and not self._lines:
            # quiet until now: write at once (a lone line is never held back, and it is out
            # before whatever the code does next, e.g. answer the request it describes)
            self._lines.append(line)
            self._write()
            return
        self._lines.append(line)
        if self.interval <= 0 or levelno >= logging.WARNING or len(self._lines) >= MAX_BUFFERED:
            self._write()
        elif len(self._lines) == 1:
            self._start_flusher()
            self._wake.set()

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._flush_loop, name="log-flusher", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)
            self._wake.clear()
            self.flush()

    def _write(self) -> None:
        """Write what is buffered (the caller holds the handler's lock)."""
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            self.stream.write(self.terminator.join(lines) + self.terminator)
            self.stream.flush()
        except Exception:  # a closed or broken stream must not break the logging caller
            if logging.raiseExceptions:
                sys.stderr.write("--- Logging error: could not write buffered log lines ---\n")

    def flush(self) -> None:
        self.acquire()
        try:
            if self._lines:
                self._write()
            elif self.stream and hasattr(self.stream, "flush"):
                with contextlib.suppress(ValueError, OSError):  # closed stream: nothing to do
                    self.stream.flush()
        finally:
            self.release()

    def setStream(self, stream: TextIO) -> TextIO | None:
        self.flush()
        return super().setStream(stream)


class _FastText:
    """The text handler :func:`setup_logging` installed, while it is the only one in use."""

    def __init__(self, handler: BatchingStreamHandler, formatter: OneLineFormatter, component: str):
        self.handler = handler
        self.formatter = formatter
        self.component = component
        self.writers: dict[str, _Writer] = {}


_fast: _FastText | None = None


def info_writer(logger: logging.Logger) -> Callable[[str], None] | None:
    """A writer of INFO lines for ``logger`` that skips the logging machinery (a LogRecord, the
    handler chain, the formatter: most of a line's cost), or None when it must not be skipped.

    The writer gives the very line ``logger.info(message)`` would: it is only handed out while
    ``logger`` logs INFO, no filter is on the way and the only handler is the text
    :class:`BatchingStreamHandler` of :func:`setup_logging` with its formatter (anything else,
    e.g. JSON lines or a test's capture handler: None, and the caller logs as usual). Extra
    fields are not shown by the text format, so the caller may leave them out here.
    """
    fast = _fast
    if fast is None or not logger.isEnabledFor(logging.INFO) or logger.filters:
        return None
    handler = fast.handler
    node: logging.Logger | None = logger
    while node is not None:
        if node.handlers:
            if node is not logging.root or node.handlers != [handler]:
                return None
            break
        if not node.propagate:
            return None
        node = node.parent
    if node is None or handler.filters or handler.level > logging.INFO:
        return None
    if handler.formatter is not fast.formatter:
        return None
    writer = fast.writers.get(logger.name)
    if writer is None:
        writer = fast.writers[logger.name] = _Writer(fast, logger.name)
    return writer


class _Writer:
    __slots__ = ("fast", "prefix")

    def __init__(self, fast: _FastText, name: str) -> None:
        self.fast = fast
        self.prefix = f" {fast.component} INFO {name}: "

    def __call__(self, message: str) -> None:
        if "\n" in message or "\r" in message:
            message = _LINE_BREAKS.sub(" ", message)
        created = time.time()
        fast = self.fast
        line = fast.formatter.time_text(created) + self.prefix + message
        handler = fast.handler
        handler.acquire()
        try:
            handler.add_line(line, created, logging.INFO)
        finally:
            handler.release()


def setup_logging(
    component: str, level: str = "INFO", fmt: str = "text", flush_interval: float = FLUSH_INTERVAL
) -> None:
    """Configure the root logger for one component process (idempotent)."""
    # None of these is in the formats: do not pay for them on every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (file, line)
    global _fast
    handler = BatchingStreamHandler(sys.stderr, flush_interval)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
        _fast = None
    else:
        text = OneLineFormatter(f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s")
        handler.setFormatter(text)
        _fast = _FastText(handler, text, component)
    root = logging.getLogger()
    old = list(root.handlers)
    root.handlers[:] = [handler]
    for previous in old:
        if isinstance(previous, BatchingStreamHandler):
            previous.flush()
    root.setLevel(level.upper())
