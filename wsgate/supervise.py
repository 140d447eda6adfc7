"""Child processes for `wsgate up`: output prefixed with the child's name, restarts with
backoff when a child dies on its own, SIGTERM-then-SIGKILL when we stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import BinaryIO

log = logging.getLogger("wsgate.up")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
# A child that stayed up this long is considered healthy again: the next crash restarts fast.
STABLE_AFTER = 60.0
STOP_GRACE = 10.0
LINE_LIMIT = 1 << 20
READ_CHUNK = 1 << 16
# A child whose health check fails this many times in a row is restarted.
HEALTH_FAILURES = 3
HEALTH_INTERVAL = 5.0

PR_SET_PDEATHSIG = 1


def next_backoff(current: float) -> float:
    """1 s, 2 s, 4 s ... capped at 30 s."""
    return min(current * 2, BACKOFF_MAX)


def _die_with_parent() -> None:
    """Runs in the child before exec: if `wsgate up` is killed outright, take the child along."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def prefixed(name: str, width: int, line: bytes) -> bytes:
    """``adapter       | <line>``: one child's output line as `wsgate up` prints it."""
    text = line.rstrip(b"\r\n")
    return name.ljust(width).encode() + b" | " + text + b"\n"


class LineRelay:
    """Turns a child's output, read in chunks of any size, into prefixed lines (pure).

    A busy router writes several lines per handshake; relaying them line by line (one read, one
    write and one flush each) cost the supervisor about as much CPU as the enforcer. Whatever
    complete lines a chunk holds go out as one block; a partial line waits for its end (or is
    cut at :data:`LINE_LIMIT`)."""

    def __init__(self, name: str, width: int, limit: int = LINE_LIMIT) -> None:
        self.prefix = name.ljust(width).encode() + b" | "
        self.limit = limit
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        """The prefixed complete lines ``chunk`` ends (possibly b"")."""
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) < self.limit:
                self._partial = data
                return b""
            self._partial = b""
            return prefixed_block(self.prefix, [data])
        self._partial = data[end + 1 :]
        block = prefixed_block(self.prefix, data[:end].split(b"\n"))
        if len(self._partial) >= self.limit:
            block += prefixed_block(self.prefix, [self._partial])
            self._partial = b""
        return block

    def end(self) -> bytes:
        """What is left when the child's output ends (a last line without newline)."""
        rest, self._partial = self._partial, b""
        return prefixed_block(self.prefix, [rest]) if rest else b""


def prefixed_block(prefix: bytes, lines: list[bytes]) -> bytes:
    joiner = b"\n" + prefix
    return prefix + joiner.join(line.rstrip(b"\r") for line in lines) + b"\n"


class Child:
    """One supervised component: ``argv`` run again and again until :meth:`stop`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None = None,
        width: int = 14,
        out: BinaryIO | None = None,
        sleep: Callable[[float], object] = asyncio.sleep,
        health: Callable[[], Awaitable[bool]] | None = None,
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.width = width
        self.out = out if out is not None else sys.stdout.buffer
        self.sleep = sleep
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.health = health
        self.health_interval = health_interval
        self.health_restarts = 0
        self._stopping = asyncio.Event()

    async def _watch_health(self, proc: asyncio.subprocess.Process) -> None:
        """Kill ``proc`` (so :meth:`run` restarts it) after HEALTH_FAILURES failed checks in a
        row; a check that raises counts as failed."""
        assert self.health is not None
        failures = 0
        while proc.returncode is None:
            await self._sleep(self.health_interval)
            try:
                ok = await self.health()
            except Exception:
                ok = False
            failures = 0 if ok else failures + 1
            if failures >= HEALTH_FAILURES and proc.returncode is None:
                log.warning(
                    "%s failed %d health checks in a row; restarting it", self.name, failures
                )
                self.health_restarts += 1
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                return

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        relay = LineRelay(self.name, self.width)
        while True:
            chunk = await proc.stdout.read(READ_CHUNK)
            block = relay.feed(chunk) if chunk else relay.end()
            if block:
                self.out.write(block)
                self.out.flush()
            if not chunk:
                return

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=LINE_LIMIT,
        )

    async def run(self) -> None:
        """Keep the child running; returns once :meth:`stop` was called and it has exited."""
        backoff = BACKOFF_START
        while not self._stopping.is_set():
            started = time.monotonic()
            self.proc = await self._spawn()
            if self._stopping.is_set():  # stop() ran while we were spawning
                self.signal(signal.SIGTERM)
            watcher = asyncio.create_task(self._watch_health(self.proc)) if self.health else None
            await asyncio.gather(self._pump(self.proc), self.proc.wait())
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if self._stopping.is_set():
                return
            code = self.proc.returncode
            if time.monotonic() - started > STABLE_AFTER:
                backoff = BACKOFF_START
            self.restarts += 1
            log.warning("%s exited with status %s; restarting in %.0f s", self.name, code, backoff)
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait(
                [stop_wait, asyncio.ensure_future(self._sleep(backoff))],
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop_wait.cancel()
            backoff = next_backoff(backoff)

    async def _sleep(self, seconds: float) -> None:
        result = self.sleep(seconds)
        if asyncio.iscoroutine(result):
            await result

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", self.name, grace)
            self.signal(signal.SIGKILL)
            return await proc.wait()
