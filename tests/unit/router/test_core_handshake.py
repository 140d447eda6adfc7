"""Handshakes done by the relay core (Core.listen, router.server.CoreHandshakes): a request
whose allow is cached is upgraded with the core's I/O, Python deciding each step; everything
else is handed back to asyncio. Real router, real backends, the enforcer double of
test_server; raw sockets where the test needs to control bytes and timing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.procs import eventually
from tests.unit.router.test_server import KEY, Env, make_routes, open_env, packed
from tests.unit.router.test_server_decisions import handshake, stream_up
from wsgate_proto import config_pb2, enforcer_pb2

ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # of KEY (RFC 6455's example)


def stats(env: Env) -> dict[str, int]:
    assert env.router.native is not None
    return dict(env.router.native.core.stats())


def head(env: Env, path: str = "/echo/1.0.0", token: str = "alice") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{env.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


def masked(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status of an HTTP answer and what follows its head (to EOF for an error)."""
    got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(got.split(b" ", 2)[1])
    body = b"" if status == 101 else await asyncio.wait_for(reader.read(), 5)
    return status, body


@contextlib.asynccontextmanager
async def raw(env: Env) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def core_env(tmp_path: Path, **overrides: Any) -> AsyncIterator[Env]:
    """A native router with its decision cache usable (the rules stream "up")."""
    async with open_env(tmp_path, relay="native", **overrides) as env:
        stream_up(env)
        yield env


@contextlib.asynccontextmanager
async def fake_backend(
    answer_with: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await answer_with(reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def add_topic(env: Env, path: str, url: str) -> None:
    routes = make_routes(env.backend_port)
    routes[0].topics.append(config_pb2.RouteTopic(path=path, production_url=url))
    env.store.apply(f"v-{path}", packed(routes))


async def error_twice(env: Env, path: str) -> list[tuple[int, dict[str, Any]]]:
    """The same failing handshake twice: a miss (the enforcer's allow is cached), then a hit.
    Both answers, parsed."""
    out = []
    for _ in range(2):
        async with raw(env) as (reader, writer):
            writer.write(head(env, path))
            status, body = await answer(reader)
            out.append((status, json.loads(body.partition(b"\r\n\r\n")[2] or body)))
    return out


async def test_a_cached_allow_is_upgraded_and_relayed_by_the_core(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        assert await handshake(env) == 101  # a miss: the enforcer is asked, the core waits
        assert stats(env)["handed_back"] == 0 and stats(env)["fast_started"] == 1
        for _ in range(3):
            assert await handshake(env) == 101  # hits: no task, no enforcer
        assert stats(env)["fast_started"] == 4
        assert stats(env)["handed_back"] == 0
        assert len(env.enforcer.requests) == 1
        assert env.router.decisions.hits == 3
        # the backend got what the asyncio path sends it
        assert env.backend.headers[-1]["x-forwarded-for"] == "127.0.0.1"
        assert "authorization" not in env.backend.headers[-1]
        metrics = env.router.metrics_text().decode()
        assert 'wsgate_router_handshakes_total{result="allowed",status="101"} 4.0' in metrics
        assert 'wsgate_router_core_handshakes_total{outcome="relayed"} 4.0' in metrics
        assert 'wsgate_router_core_handshakes_total{outcome="handed_back"} 0.0' in metrics
        await eventually(lambda: not env.router.relays and env.router.upgrading == 0)


async def test_health_and_misses_go_back_to_asyncio(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        async with raw(env) as (reader, writer):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = await answer(reader)
        assert status == 200 and b"healthy" in body
        assert stats(env)["handed_back"] == 1


async def test_a_head_sent_byte_by_byte_is_read_whole(tmp_path: Path) -> None:
    async with core_env(tmp_path, handshake_timeout=5.0) as env:
        assert await handshake(env) == 101
        async with raw(env) as (reader, writer):
            for byte in head(env):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.001)
            status, _ = await answer(reader)
            assert status == 101
            writer.write(masked(b"slow"))
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"\x81\x04slow"
        assert stats(env)["fast_started"] == 2


async def test_a_head_not_complete_in_time_is_answered_408(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:  # handshake_timeout 0.5 s
        async with raw(env) as (reader, writer):
            writer.write(head(env)[:20])
            status, body = await answer(reader)
        assert status == 408 and json.loads(body)["code"] == 408


async def test_an_oversized_head_is_answered_431(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        async with raw(env) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            status, _ = await answer(reader)
        assert status == 431


async def test_a_refused_backend_is_answered_502_by_either_path(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        answers = await error_twice(env, "/echo/1.0.0/dead")
        assert [status for status, _ in answers] == [502, 502]
        assert answers[0][1]["code"] == answers[1][1]["code"] == 101503
        assert "cannot connect to the backend" in answers[1][1]["description"]
        assert env.router.decisions.hits == 1 and stats(env)["handed_back"] == 0
        assert env.router.upgrading == 0 and not env.router.live.snapshot()


async def test_a_silent_backend_is_answered_504(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100_000)
        await asyncio.sleep(5)

    async with core_env(tmp_path, backend_connect_timeout=0.3) as env:
        async with fake_backend(silent) as port:
            add_topic(env, "/silent", f"ws://127.0.0.1:{port}/")
            answers = await error_twice(env, "/echo/1.0.0/silent")
        assert [status for status, _ in answers] == [504, 504]
        assert answers[1][1]["message"] == "Gateway Timeout"
        assert env.router.decisions.hits == 1


async def test_a_backend_without_a_proper_101_is_answered_502(tmp_path: Path) -> None:
    async def wrong_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(1)

    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with core_env(tmp_path) as env:
        async with fake_backend(wrong_accept) as bad, fake_backend(not_found) as missing:
            add_topic(env, "/bad", f"ws://127.0.0.1:{bad}/")
            answers = await error_twice(env, "/echo/1.0.0/bad")
            assert [status for status, _ in answers] == [502, 502]
            assert answers[0][1]["description"] == answers[1][1]["description"]
            add_topic(env, "/missing", f"ws://127.0.0.1:{missing}/")
            answers = await error_twice(env, "/echo/1.0.0/missing")
            assert [status for status, _ in answers] == [502, 502]
            assert answers[0][1]["description"] == answers[1][1]["description"]
        assert env.router.decisions.hits == 2


async def test_a_client_leaving_mid_handshake_ends_it(tmp_path: Path) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100_000)
        await asyncio.sleep(5)

    async with core_env(tmp_path, backend_connect_timeout=3.0) as env:
        async with fake_backend(slow) as port:
            add_topic(env, "/slow", f"ws://127.0.0.1:{port}/")
            assert env.router.native is not None
            # prime the cache (the backend times out: 504)
            async with raw(env) as (reader, writer):
                writer.write(head(env, "/echo/1.0.0/slow"))
                assert (await answer(reader))[0] == 504
            async with raw(env) as (reader, writer):
                writer.write(head(env, "/echo/1.0.0/slow"))
                await eventually(lambda: env.router.upgrading == 1)
            await eventually(lambda: env.router.upgrading == 0)
            await eventually(lambda: stats(env)["handshaking"] == 0)
            assert not env.router.live.snapshot()
            metrics = env.router.metrics_text().decode()
            assert 'result="denied",status="499"} 1.0' in metrics


async def test_early_data_after_the_head_reaches_the_backend_once(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        assert await handshake(env) == 101
        async with raw(env) as (reader, writer):
            writer.write(head(env) + masked(b"one") + masked(b"two"))
            status, _ = await answer(reader)
            assert status == 101
            got = await asyncio.wait_for(reader.readexactly(10), 5)
            assert got == b"\x81\x03one\x81\x03two"
            writer.write(masked(b"three"))
            assert await asyncio.wait_for(reader.readexactly(7), 5) == b"\x81\x05three"
        assert stats(env)["fast_started"] == 2


async def test_a_rule_evicts_the_allow_and_the_enforcer_refuses_next(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        assert await handshake(env) == 101
        assert await handshake(env) == 101
        assert stats(env)["fast_started"] == 2 and env.router.decisions.hits == 1
        env.enforcer.denied.add("Bearer alice")
        env.router.apply_rule(enforcer_pb2.ConnectionRule(token_id="alice", reason="revoked"))
        assert await handshake(env) == 403
        assert stats(env)["fast_started"] == 2 and env.router.decisions.hits == 1
        assert len(env.enforcer.requests) == 2


async def test_remembered_credentials_are_per_token(tmp_path: Path) -> None:
    """CoreHandshakes remembers each request's credentials and decision key: one token's
    allow never answers for another, and a refused token stays refused while others hit."""
    async with core_env(tmp_path) as env:
        env.enforcer.denied.add("Bearer bob")
        assert await handshake(env) == 101  # alice: a miss, cached
        assert await handshake(env, "bob") == 403  # asked, refused
        assert await handshake(env) == 101  # alice: a hit
        assert await handshake(env, "bob") == 403  # asked again, not alice's allow
        assert await handshake(env, "carol") == 101  # a miss of its own
        assert await handshake(env, "carol") == 101
        assert env.router.decisions.hits == 2
        assert len(env.enforcer.requests) == 4
        assert stats(env)["fast_started"] == 4


async def test_the_switch_off_keeps_asyncio_accepting(tmp_path: Path) -> None:
    async with open_env(tmp_path, relay="native", native_handshake=False) as env:
        stream_up(env)
        assert await handshake(env) == 101
        assert await handshake(env) == 101
        assert stats(env)["accepted"] == 0 and env.router.decisions.hits == 1


async def test_a_client_leaving_while_the_enforcer_decides(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        slow = asyncio.Event()
        env.enforcer.gate = slow  # see EnforcerDouble.Check
        async with raw(env) as (_reader, writer):
            writer.write(head(env))
            await eventually(lambda: env.router.upgrading == 1)
        await eventually(lambda: env.router.upgrading == 0)
        slow.set()
        assert not env.router.live.snapshot() and stats(env)["fast_started"] == 0
        metrics = env.router.metrics_text().decode()
        assert 'result="denied",status="499"} 1.0' in metrics
        assert await handshake(env) == 101


async def test_accepting_resumes_after_running_out_of_fds(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        loop = asyncio.get_running_loop()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with socket.socket() as client:
            client.setblocking(False)
            lowest_free = os.dup(0)  # new fds take the lowest free number: none below the limit
            os.close(lowest_free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
            try:
                await loop.sock_connect(client, ("127.0.0.1", env.port))
                await loop.sock_sendall(client, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                await asyncio.sleep(0.3)
                assert stats(env)["accepted"] == 0  # it waits in the backlog
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            got = b""
            while b"healthy" not in got:
                chunk = await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
                assert chunk, got
                got += chunk
        assert got.startswith(b"HTTP/1.1 200")
        assert stats(env)["accepted"] == 1
