"""Starting real wsgate processes for integration tests: free ports, readiness, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
WSCAT = REPO / "node_modules" / ".bin" / "wscat"


# Timing: the product aims at about a second for propagation and closes; tests assert PROMPT, a
# margin that survives a loaded 2-core machine shared by several jobs, and print the real figure.
PROMPT = 3.0


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(message: str) -> NoReturn:
    """A service a test needs is missing: skip on a developer's machine, fail under ``CI=true``
    (PostgreSQL at 127.0.0.1:5432 and Redis at :6379 run on every machine of this project, so
    in CI a skip would hide a broken setup)."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing service fails, it does not skip)")
    pytest.skip(message)


def import_or_unavailable(module: str) -> Any:
    """``pytest.importorskip`` that fails under ``CI=true``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(f"cannot import {module}: {exc}")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stable_port() -> int:
    """A free TCP port below the kernel's ephemeral range, for a server a test restarts on the
    same port: a port the kernel picked (:func:`free_port`) may meanwhile become the local port
    of any outgoing connection on the machine, and the restarted server then cannot bind it."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``check`` until it returns True; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def eventually(
    check: Callable[[], bool],
    timeout: float = 10.0,  # noqa: ASYNC109 - a bound on polling, named like wait_for's
    what: str = "condition",
) -> float:
    """Await until ``check()`` is true (polled every 10 ms on the running loop); returns the
    seconds it took. The timeout is generous on purpose: it only bounds a test that would
    otherwise hang, it is not what the test measures.

    Raises:
        TimeoutError: naming ``what``.
    """
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    return httpx.get(url, verify=False, timeout=1.0).status_code == 200


class Proc:
    """One component process; its output goes to a log file that failures print."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, **env}
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "wsgate", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting: :meth:`stop` waits."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


@contextlib.contextmanager
def running(
    name: str,
    args: list[str],
    env: dict[str, str],
    log_dir: Path,
    ready: Callable[[], bool],
    timeout: float = 30.0,
) -> Iterator[Proc]:
    """Start ``wsgate <args>``, wait for ``ready()``, stop it on exit; show its log on failure."""
    proc = Proc(name, args, env, log_dir)
    try:
        try:
            wait_for(lambda: proc.alive() and ready(), timeout, f"{name} to be ready")
        except TimeoutError:
            raise RuntimeError(f"{name} did not become ready; log:\n{proc.log()}") from None
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def own_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A private redis-server on ``port`` (never the shared one on 6379): tests may kill it."""
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server is not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), 10, "redis-server")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
