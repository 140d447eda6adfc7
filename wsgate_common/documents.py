"""Reading YAML and JSON that came from outside, within a budget.

Every document the product reads from a user (AsyncAPI imports, API project files, the CLI's
config) goes through :func:`load`: aliases and anchors are refused (a few hundred bytes of
nested aliases expand to 10⁸ values), and the size, the number of values, the nesting depth and
the time spent are capped. Pure apart from the clock; run it in a worker process when the caller
is an event loop (:func:`load_in_worker`).

Errors never quote more than a short prefix of what they were given (:func:`clip`).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

#: libyaml's parser when PyYAML was built with it (much faster), else the pure-Python one.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """How much one document may cost; the defaults fit a real API many times over."""

    max_bytes: int = 5 * 1024 * 1024
    #: YAML nodes (every scalar, list and mapping counts one) or JSON values.
    max_nodes: int = 100_000
    max_depth: int = 64
    max_seconds: float = 5.0


#: The budget of callers that do not pass one.
DEFAULT_BUDGET = Budget()


class DocumentError(ValueError):
    """The document is not usable. ``too_large`` marks a budget hit (HTTP 413) rather than a
    syntax or shape error (HTTP 400)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large

    def __reduce__(self) -> tuple[type[DocumentError], tuple[str, bool]]:
        # raised in a parse worker (load_in_worker): keep too_large across the pickle
        return (type(self), (self.message, self.too_large))


def clip(value: object, limit: int = 40) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters, for error messages."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return repr(text) if isinstance(value, str) else text


class _Meter:
    """Counts nodes and depth and watches the clock while a document is read."""

    def __init__(self, budget: Budget, clock: Callable[[], float]) -> None:
        self.budget = budget
        self.clock = clock
        self.deadline = clock() + budget.max_seconds
        self.nodes = 0

    def node(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.budget.max_nodes:
            raise DocumentError(
                f"has more than {self.budget.max_nodes} values (the limit)", too_large=True
            )
        if depth > self.budget.max_depth:
            raise DocumentError(
                f"is nested deeper than {self.budget.max_depth} levels (the limit)",
                too_large=True,
            )
        if self.nodes % 512 == 0:
            self.check_time()

    def check_time(self) -> None:
        time.sleep(0)  # let an event loop waiting for the GIL have it now, not in 5 ms
        if self.clock() > self.deadline:
            raise DocumentError(
                f"took longer than {self.budget.max_seconds:g} s to read (the limit)",
                too_large=True,
            )


class _MeteredLoader(_BaseLoader):
    """The second pass: builds the values, still watching the clock (and yielding the GIL)."""

    meter: _Meter
    constructed = 0

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        self.constructed += 1
        if self.constructed % 512 == 0:
            self.meter.check_time()
        return super().construct_object(node, deep)


def _scan_events(text: str, meter: _Meter) -> None:
    """First pass over the parser's events (no tree is built): refuse aliases, anchors,
    too many nodes and too deep nesting before anything is constructed."""
    depth = 0
    loader = _BaseLoader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                raise DocumentError(
                    "uses a YAML alias (*name); aliases and anchors are not accepted"
                )
            if isinstance(event, yaml.NodeEvent):
                if event.anchor is not None:
                    raise DocumentError(
                        f"uses a YAML anchor (&{clip(event.anchor, 20)}); aliases and anchors"
                        " are not accepted"
                    )
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                meter.node(depth)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.DocumentStartEvent) and depth == 0 and meter.nodes:
                raise DocumentError("holds more than one YAML document")
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.YAMLError) -> DocumentError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
    detail = f": {clip(problem, 80)}" if isinstance(problem, str) else ""
    return DocumentError(f"is not valid YAML{where}{detail}")


def _count_json(value: Any, meter: _Meter) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        meter.node(depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _text(content: bytes | str, budget: Budget) -> str:
    size = len(content.encode() if isinstance(content, str) else content)
    if size > budget.max_bytes:
        raise DocumentError(f"is larger than {budget.max_bytes} bytes (the limit)", too_large=True)
    if isinstance(content, str):
        return content
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError("is not UTF-8 text") from None


def load(
    content: bytes | str,
    budget: Budget = DEFAULT_BUDGET,
    *,
    json_only: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Parse YAML (or JSON, which is YAML too) within ``budget``.

    Raises:
        DocumentError: not UTF-8, not parseable, uses aliases/anchors, several documents, or
            over budget (``too_large``).
    """
    text = _text(content, budget)
    meter = _Meter(budget, clock)
    if json_only:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(
                f"is not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:
            raise DocumentError(
                f"is nested deeper than {budget.max_depth} levels (the limit)", too_large=True
            ) from None
        _count_json(value, meter)
        return value
    try:
        _scan_events(text, meter)
        meter.check_time()
        loader = _MeteredLoader(text)
        loader.meter = meter
        try:
            value = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from None
    except RecursionError:
        raise DocumentError(
            f"is nested deeper than {budget.max_depth} levels (the limit)", too_large=True
        ) from None
    meter.check_time()
    return value


#: Documents are parsed in worker processes, two at a time: a thread would hold the GIL for the
#: whole parse and keep the event loop (every other request) waiting on it, and could not be
#: stopped at the time budget. Started on first use; a worker over its time is killed.
_WORKERS = 2
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker_start() -> None:
    """A parse may take seconds of CPU: the process serving requests comes first."""
    try:
        os.nice(5)
    except OSError:
        pass


#: Seconds a new pool's workers may take to start (a forkserver, then the worker importing
#: this module: 0.5 to 2 s on a loaded 2-core box), not counted in the document's budget.
STARTUP_ALLOWANCE = 10.0


def _workers() -> tuple[ProcessPoolExecutor, bool]:
    """The pool, and whether it was started just now (its workers are still starting)."""
    global _pool
    with _pool_lock:  # sync handlers call from several threads
        if _pool is None:
            # forkserver: workers are not forks of a process running threads and an event loop
            context = multiprocessing.get_context("forkserver")
            _pool = ProcessPoolExecutor(_WORKERS, mp_context=context, initializer=_worker_start)
            return _pool, True
        return _pool, False


def _discard_workers(pool: ProcessPoolExecutor) -> None:
    """Kill ``pool``'s workers (one is still parsing past its time); the next call starts anew.
    Python 3.11's executor has no public way to stop a running task, hence ``_processes``."""
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown_workers() -> None:
    """Stop the parse workers (at process exit; harmless when none were started)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _submit(
    work: Callable[..., T], args: tuple[Any, ...], budget: Budget
) -> tuple[ProcessPoolExecutor, Future[T], float]:
    """Submit ``work``; the pool, the future and how long to wait for it: the budget plus a
    grace second (:func:`load` stops itself at the budget; this only catches a stuck worker),
    plus the workers' start-up when they are new."""
    pool, fresh = _workers()
    try:
        future = pool.submit(work, *args)
    except BrokenProcessPool:  # a worker was killed since: start anew
        _discard_workers(pool)
        pool, fresh = _workers()
        future = pool.submit(work, *args)
    return pool, future, budget.max_seconds + 1.0 + (STARTUP_ALLOWANCE if fresh else 0.0)


def _failed(pool: ProcessPoolExecutor, budget: Budget, timed_out: bool) -> DocumentError:
    """Kill the workers and say why: this document's worker ran over its time (``timed_out``),
    or another document's worker was killed while this one waited or ran."""
    _discard_workers(pool)
    if timed_out:
        return DocumentError(
            f"took longer than {budget.max_seconds:g} s to read (the limit)", too_large=True
        )
    return DocumentError("could not be read: its parser was stopped; send it again")


async def load_in_worker(work: Callable[..., T], *args: Any, budget: Budget) -> T:
    """``work(*args)`` (a module-level function: :func:`load` and what follows) in a worker
    process; :class:`DocumentError` when it takes more than the budget's time (plus a grace
    second, since :func:`load` stops itself at the budget) — the worker is killed then.

    What ``work`` returns or raises crosses a process boundary: it must pickle (DocumentError
    does)."""
    pool, future, wait = _submit(work, args, budget)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), wait)
    except TimeoutError:
        raise _failed(pool, budget, timed_out=True) from None
    except BrokenProcessPool:
        raise _failed(pool, budget, timed_out=False) from None


def load_in_worker_sync(work: Callable[..., T], *args: Any, budget: Budget) -> T:
    """:func:`load_in_worker` for code already off the event loop (a sync request handler,
    run in a thread): the parse still holds no GIL of this process and stops at its time."""
    pool, future, wait = _submit(work, args, budget)
    try:
        return future.result(timeout=wait)
    except FutureTimeout:
        raise _failed(pool, budget, timed_out=True) from None
    except BrokenProcessPool:
        raise _failed(pool, budget, timed_out=False) from None
