"""Every shell block of README.md and docs/*.md runs as written after `make run` (issue 13).

The stack is `wsgate up` (what `make run` runs) on free ports, started as a new user would:
from a working directory that looks like a fresh clone (``examples/``, ``node_modules``,
``package.json``; ``.wsgate/`` is created there), with a fresh ``HOME`` and no ``WSGATE_*``
variables. Then each document's command blocks run in bash, in order, in one shell per document
(README.md first, then docs/*.md by name), with ``wsgate`` on PATH as `source
.venv/bin/activate` puts it. The only change to the documented text is the port: the defaults
(``localhost:9443`` ...) become this stack's, in the commands and in the example files they read
(tests/doc_blocks.py says how blocks are found, skipped and run). A failure names the file, the
line of the block's opening fence and the block's output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.doc_blocks import Block, extract, outcome, rewrite_ports, script
from tests.integration.conftest import distinct_free_ports
from tests.procs import REPO
from wsgate.stack import Ports
from wsgate.up import PORT_FLAGS

pytestmark = pytest.mark.integration

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
READY_MARK = "wsgate is up"
START_LIMIT = 120.0
DOCUMENT_LIMIT = 180.0  # seconds for all blocks of one document


@dataclass
class DocStack:
    """`wsgate up` running for the docs, and the shell environment a reader has."""

    ports: Ports
    work: Path
    env: dict[str, str]
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)


def _user_env(work: Path) -> dict[str, str]:
    """The environment of a new user: a fresh HOME, no WSGATE_* settings, the venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    env.update(
        HOME=str(work / "home"),
        PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        TMPDIR=str(work / "tmp"),
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        NPM_CONFIG_UPDATE_NOTIFIER="false",
        NPM_CONFIG_AUDIT="false",
        NPM_CONFIG_FUND="false",
        NPM_CONFIG_OFFLINE="true",  # wscat comes from node_modules; never from the registry
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _clone_like(work: Path, ports: Ports) -> None:
    """A working directory like the repository root, whose example files name this stack's
    ports where they name the defaults (so a project the docs deploy reaches this echo backend)."""
    (work / "home").mkdir()
    (work / "tmp").mkdir()
    for name in ("node_modules", "package.json"):
        (work / name).symlink_to(REPO / name)
    for source in sorted((REPO / "examples").rglob("*")):
        target = work / source.relative_to(REPO)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rewrite_ports(source.read_text(), ports))


def _stop(popen: subprocess.Popen[str]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


@pytest.fixture(scope="module")
def doc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocStack]:
    ports = distinct_free_ports()
    work = tmp_path_factory.mktemp("docs-clone")
    _clone_like(work, ports)
    env = _user_env(work)
    argv = [sys.executable, "-m", "wsgate", "up"]
    for name, port in ports.items():
        argv += [PORT_FLAGS[name], str(port)]
    popen = subprocess.Popen(
        argv,
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    stack = DocStack(ports, work, env, popen)

    def collect() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            stack.lines.append(line.rstrip("\n"))

    threading.Thread(target=collect, daemon=True).start()
    try:
        deadline = time.monotonic() + START_LIMIT
        while not any(READY_MARK in line for line in stack.lines):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"wsgate up did not start:\n{stack.output()[-6000:]}")
            time.sleep(0.1)
        yield stack
    finally:
        _stop(popen)


def _blocks() -> list[Block]:
    found: list[Block] = []
    for document in DOCUMENTS:
        found += extract(str(document.relative_to(REPO)), document.read_text())
    return found


def _numbered(text: str, first: int) -> str:
    return "\n".join(f"{first + i:5d}  {line}" for i, line in enumerate(text.splitlines()))


def _run_document(stack: DocStack, path: str, blocks: list[Block]) -> tuple[float, str | None]:
    """Run one document's command blocks in one bash; the time taken, and a failure report."""
    runnable = [b for b in blocks if b.runs]
    log = stack.work / "tmp" / (path.replace("/", "_") + ".out")
    started = time.monotonic()
    with open(log, "wb") as out:
        bash = subprocess.Popen(
            ["bash", "-c", script(runnable, stack.ports)],
            cwd=stack.work,
            env=stack.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = bash.wait(DOCUMENT_LIMIT)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            # wscat, sleeps or anything else a block left behind goes with the session.
            try:
                os.killpg(bash.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            bash.wait()
    took = time.monotonic() - started
    result = outcome(log.read_text(errors="replace"))
    if status == 0 and result.finished:
        return took, None
    block = next((b for b in runnable if b.where == result.last_block), None)
    why = "timed out" if status is None else f"exited with status {status}"
    report = [
        f"{result.last_block or path}: the block {why}",
        "--- block (as documented) ---",
        _numbered(block.text, block.line + 1) if block else "(before the first block)",
        "--- its output ---",
        result.output[-6000:],
    ]
    return took, "\n".join(report)


def test_every_shell_block_of_the_docs_runs_in_order(doc_stack: DocStack) -> None:
    blocks = _blocks()
    timings = []
    for document in DOCUMENTS:
        path = str(document.relative_to(REPO))
        mine = [b for b in blocks if b.path == path]
        if not any(b.runs for b in mine):
            continue
        took, failure = _run_document(doc_stack, path, mine)
        timings.append(f"{path}: {took:.1f} s")
        if failure is not None:
            stack_tail = "\n".join(doc_stack.lines[-40:])
            pytest.fail(f"--- wsgate up (last lines) ---\n{stack_tail}\n{failure}", pytrace=False)
    print("doc blocks:", ", ".join(timings))
