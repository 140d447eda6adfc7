"""The WatchConnections client against in-process grpc.aio test doubles of the enforcer:
UNIMPLEMENTED (today's enforcer), a stream that delivers rules, an enforcer that restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest

from router.registry import Identity
from router.rules import RuleWatcher, close_code_of, describe, reason_of, reconcile_batches
from tests.procs import free_port
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc


class Streaming(enforcer_pb2_grpc.HandshakeServiceServicer):
    """Sends the rules in force on every connect, then what the test queues."""

    def __init__(self, in_force: list[enforcer_pb2.ConnectionRule]) -> None:
        self.in_force = in_force
        self.queue: asyncio.Queue[enforcer_pb2.ConnectionRule] = asyncio.Queue()
        self.requests: list[enforcer_pb2.WatchConnectionsRequest] = []

    async def WatchConnections(
        self, request: enforcer_pb2.WatchConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[enforcer_pb2.ConnectionRule]:
        self.requests.append(request)
        for rule in self.in_force:
            yield rule
        while True:
            yield await self.queue.get()


async def start(servicer: enforcer_pb2_grpc.HandshakeServiceServicer, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    enforcer_pb2_grpc.add_HandshakeServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling a plain attribute of the watcher
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def watching(watcher: RuleWatcher) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(watcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("router")
    ]


async def test_unimplemented_is_logged_once_and_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="router.rules")
    port = free_port()
    server = await start(enforcer_pb2_grpc.HandshakeServiceServicer(), port)  # stub: UNIMPLEMENTED
    got: list[enforcer_pb2.ConnectionRule] = []
    watcher = RuleWatcher(f"127.0.0.1:{port}", got.append)
    try:
        async with watching(watcher):
            await asyncio.sleep(1.2)
    finally:
        await server.stop(0)
    assert watcher.attempts >= 3
    assert list(watcher.delays)[:3] == [0.1, 0.2, 0.4]
    assert len(warnings(caplog)) == 1
    assert "does not implement WatchConnections" in warnings(caplog)[0]
    assert got == [] and not watcher.connected.is_set()


async def test_backoff_is_capped() -> None:
    port = free_port()  # nobody listens
    watcher = RuleWatcher(f"127.0.0.1:{port}", print, backoff_initial=0.01, backoff_max=0.04)
    async with watching(watcher):
        await until(lambda: watcher.attempts >= 6)
    assert list(watcher.delays)[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]


async def test_rules_arrive_and_reconnect_replays_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.rules")
    port = free_port()
    in_force = [enforcer_pb2.ConnectionRule(token_id="revoked-1", close_code=1008, reason="r")]
    enforcer = Streaming(in_force)
    server = await start(enforcer, port)
    got: list[enforcer_pb2.ConnectionRule] = []
    watcher = RuleWatcher(f"127.0.0.1:{port}", got.append, "router-a")
    async with watching(watcher):
        await asyncio.wait_for(watcher.connected.wait(), 5)
        await enforcer.queue.put(enforcer_pb2.ConnectionRule(application_id="app1"))
        await until(lambda: len(got) >= 2)
        assert [r.token_id or r.application_id for r in got] == ["revoked-1", "app1"]
        assert enforcer.requests[0].router_id == "router-a"

        await server.stop(0)  # the enforcer restarts
        await until(lambda: not watcher.connected.is_set())
        await asyncio.sleep(0.5)  # a few failed retries: not logged again
        server = await start(Streaming(in_force), port)
        await asyncio.wait_for(watcher.connected.wait(), 5)
        await until(lambda: len(got) >= 3)
        assert got[2].token_id == "revoked-1"  # the rules in force, replayed
    await server.stop(0)
    lost = [m for m in warnings(caplog) if "rules stream to enforcer" in m]
    assert len(lost) == 1


async def test_a_bad_rule_handler_does_not_end_the_stream() -> None:
    port = free_port()
    enforcer = Streaming([enforcer_pb2.ConnectionRule(token_id="a")])
    server = await start(enforcer, port)
    seen: list[str] = []

    def handler(rule: enforcer_pb2.ConnectionRule) -> None:
        seen.append(rule.token_id)
        if rule.token_id == "a":
            raise RuntimeError("bug")

    watcher = RuleWatcher(f"127.0.0.1:{port}", handler)
    try:
        async with watching(watcher):
            await asyncio.wait_for(watcher.connected.wait(), 5)
            await enforcer.queue.put(enforcer_pb2.ConnectionRule(token_id="b"))
            await until(lambda: len(seen) >= 2)
            assert watcher.attempts == 1
    finally:
        await server.stop(0)


def test_rule_fields_are_normalized() -> None:
    rule = enforcer_pb2.ConnectionRule(token_id="t", api_id="x")
    assert close_code_of(rule) == 1008 and reason_of(rule) == "connection closed by policy"
    assert close_code_of(enforcer_pb2.ConnectionRule(close_code=1005)) == 1008  # not sendable
    assert close_code_of(enforcer_pb2.ConnectionRule(close_code=4003)) == 4003
    assert len(reason_of(enforcer_pb2.ConnectionRule(reason="x" * 500)).encode()) == 123
    assert describe(rule) == "token_id=t api_id=x"


class FakeLive:
    """Live identities for Reconcile without any connection behind them."""

    def __init__(self, pairs: list[tuple[Identity, str]]) -> None:
        self.pairs = pairs
        self.closed: list[tuple[Identity, str, int, str]] = []

    def snapshot(self) -> list[tuple[Identity, str]]:
        return list(self.pairs)

    def close_identity(
        self,
        identity: Identity,
        subscription_id: str,
        code: int,
        reason: str,
        cause: str,
        checked_before: float | None = None,
    ) -> int:
        self.closed.append((identity, subscription_id, code, reason))
        return 1


def test_reconcile_batches_keep_order_and_size() -> None:
    pairs = [(Identity.of(f"t{i}", "app", "api", "production"), "s") for i in range(12_001)]
    batches = reconcile_batches(pairs, "r-1", size=5_000)
    assert [len(b.connections) for b in batches] == [5_000, 5_000, 2_001]
    assert all(b.router_id == "r-1" for b in batches)
    sent = [c for b in batches for c in b.connections]
    assert [c.token_id for c in sent] == [f"t{i}" for i in range(12_001)]
    first = sent[0]
    assert (first.application_id, first.api_id, first.key_type, first.subscription_id) == (
        "app",
        "api",
        "PRODUCTION",
        "s",
    )
    assert reconcile_batches([], "r-1") == []


async def test_an_enforcer_without_reconcile_is_told_once_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="router.rules")
    port = free_port()
    # WatchConnections only (the stream opens with one rule): Reconcile answers UNIMPLEMENTED.
    enforcer = Streaming([enforcer_pb2.ConnectionRule(token_id="in-force")])
    server = await start(enforcer, port)
    live = FakeLive([(Identity.of("t", "a", "api", "PRODUCTION"), "s")])
    watcher = RuleWatcher(f"127.0.0.1:{port}", print, "r", live=live)
    try:
        async with watching(watcher):
            await asyncio.wait_for(watcher.connected.wait(), 5)
            await until(lambda: any("does not implement Reconcile" in m for m in warnings(caplog)))
            await enforcer.queue.put(enforcer_pb2.ConnectionRule(token_id="x"))
            await until(lambda: watcher.rules >= 2)
            assert watcher.attempts == 1 and watcher.reconciles == 0 and live.closed == []
    finally:
        await server.stop(0)
