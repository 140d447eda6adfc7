"""Handshakes done by the relay core (Core.listen, router.server.CoreHandshakes): a request
whose allow is cached is upgraded with the core's I/O, Python deciding each step; everything
else is handed back to asyncio. Real router, real backends, the enforcer double of
test_server; raw sockets where the test needs to control bytes and timing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
    """A native router with its decision cache usable (the rules stream "up"); handshake
    plans off unless asked (here Python decides every handshake: test_core_plans.py)."""
    overrides.setdefault("native_plans", False)
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


# -- the core's fast start: a backend's plain 101 checked and relayed without Python ----------


def rfc_accept(key: bytes) -> bytes:
    """Sec-WebSocket-Accept of a key, computed here (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


def backend_key(request: bytes) -> bytes:
    found = re.search(rb"(?im)^sec-websocket-key: *(\S+)\r$", request)
    assert found is not None, request
    return found.group(1)


def answering(
    template: bytes,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A fake backend answering ``template`` ({accept}: the right Sec-WebSocket-Accept)."""

    async def answer_with(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(template.replace(b"{accept}", rfc_accept(backend_key(request))))
        await writer.drain()
        await reader.read()

    return answer_with


async def client_answer(env: Env, path: str, extra: str = "") -> bytes:
    """What a raw client is answered: the 101's head, or an error's whole answer."""
    request = head(env, path)
    if extra:
        request = request[:-2] + extra.encode() + b"\r\n\r\n"
    async with raw(env) as (reader, writer):
        writer.write(request)
        got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if not got.startswith(b"HTTP/1.1 101 "):
            got += await asyncio.wait_for(reader.read(), 5)
        return got


def held(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` with the event loop held: the router's Python does nothing
    meanwhile, only the core's thread runs."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the core did not get there"
        time.sleep(0.002)


PLAIN = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


async def test_a_plain_101_is_checked_and_relayed_by_the_core_alone(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        for _ in range(2):  # a miss, then a hit
            got = await client_answer(env, "/echo/1.0.0")
            assert got == PLAIN + f"Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n".encode()
        assert stats(env)["self_started"] == 2 and stats(env)["fast_started"] == 2
        # and the same answer by Python (the switch off)
        env.router.config.native_fast_start = False
        assert await client_answer(env, "/echo/1.0.0") == got
        assert stats(env)["self_started"] == 2 and stats(env)["fast_started"] == 3
        env.router.config.native_fast_start = True
        async with raw(env) as (reader, writer):
            writer.write(head(env) + masked(b"early"))
            assert (await answer(reader))[0] == 101
            assert await asyncio.wait_for(reader.readexactly(7), 5) == b"\x81\x05early"
            writer.write(masked(b"more"))
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"\x81\x04more"
        assert stats(env)["self_started"] == 3
        metrics = env.router.metrics_text().decode()
        assert 'wsgate_router_handshakes_total{result="allowed",status="101"} 4.0' in metrics
        assert 'wsgate_router_core_handshakes_total{outcome="relayed"} 4.0' in metrics
        assert 'wsgate_router_core_handshakes_total{outcome="relayed_alone"} 3.0' in metrics
        await eventually(lambda: not env.router.relays and env.router.upgrading == 0)
        assert not env.router.live.snapshot() and stats(env)["live"] == 0


# (template, whether the core may start it alone)
ANSWERS = {
    "plain": (PLAIN + b"Sec-WebSocket-Accept: {accept}\r\n\r\n", True),
    "spelt otherwise": (
        b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nCONNECTION:keep-alive , upgrade\r\n"
        b"X-Other: y\r\nsec-websocket-accept: \t{accept} \r\n\r\n",
        True,
    ),
    "no reason": (
        PLAIN.replace(b" Switching Protocols", b"") + b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        True,
    ),
    "extensions": (
        PLAIN + b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-test\r\n\r\n",
        False,
    ),
    "empty extensions": (
        PLAIN + b"Sec-WebSocket-Extensions:\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "protocol": (
        PLAIN + b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "wrong accept": (PLAIN + b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n", False),
    "two accepts": (
        PLAIN + b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "no upgrade": (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "upgrade to other": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websockets\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "no connection": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "HTTP/1.0": (
        PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
    "200": (PLAIN.replace(b"101", b"200") + b"Sec-WebSocket-Accept: {accept}\r\n\r\n", False),
    "1010": (PLAIN.replace(b"101", b"1010") + b"Sec-WebSocket-Accept: {accept}\r\n\r\n", False),
    "no colon": (PLAIN + b"Sec-WebSocket-Accept: {accept}\r\nX-Broken\r\n\r\n", False),
    "folded": (PLAIN + b"Sec-WebSocket-Accept: {accept}\r\n X-Folded: a\r\n\r\n", False),
    "bare LF": (PLAIN + b"X-A: b\nc\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", False),
    "NUL": (PLAIN + b"X-A: b\x00c\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", False),
    "garbage": (b"\x16\x03\x01 hello\r\n\r\n", False),
    "too many headers": (
        PLAIN + b"X-A: b\r\n" * 99 + b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        False,
    ),
}


async def test_every_other_backend_answer_is_judged_by_python_as_before(tmp_path: Path) -> None:
    """The core starts only what Python would have answered the same way; anything else goes
    to Python (EV_UPSTREAM), and the client's answer is the same with the fast start off."""
    async with core_env(tmp_path) as env:
        for name, (template, alone) in ANSWERS.items():
            async with fake_backend(answering(template)) as port:
                path = "/" + name.replace(" ", "-").replace("/", "")
                add_topic(env, path, f"ws://127.0.0.1:{port}/")
                for extra in ("", "Sec-WebSocket-Protocol: chat, choreo-oauth2-key, alice"):
                    answers = []
                    for fast in (True, False):
                        env.router.config.native_fast_start = fast
                        before = stats(env)["self_started"]
                        answers.append(await client_answer(env, "/echo/1.0.0" + path, extra))
                        started = stats(env)["self_started"] - before
                        assert started == (fast and alone), (name, extra, answers[-1])
                    assert answers[0] == answers[1], (name, extra)
                    if alone and extra:  # the marker is echoed, as Python does
                        assert b"Sec-WebSocket-Protocol: choreo-oauth2-key\r\n" in answers[0]
        await eventually(lambda: not env.router.relays and env.router.upgrading == 0)
        assert not env.router.live.snapshot()


async def test_backend_bytes_right_after_its_101_reach_the_client(tmp_path: Path) -> None:
    template = PLAIN + b"Sec-WebSocket-Accept: {accept}\r\n\r\n\x81\x05hello\x81\x05again"
    async with core_env(tmp_path) as env, fake_backend(answering(template)) as port:
        add_topic(env, "/eager", f"ws://127.0.0.1:{port}/")
        async with raw(env) as (reader, writer):
            writer.write(head(env, "/echo/1.0.0/eager"))
            assert (await answer(reader))[0] == 101
            got = await asyncio.wait_for(reader.readexactly(14), 5)
            assert got == b"\x81\x05hello\x81\x05again"
        assert stats(env)["self_started"] == 1


class ThreadBackend:
    """A backend on a thread of its own: it answers while the test holds the router's loop.
    It sends its 101 once ``go`` is set and keeps what it receives after it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.go = threading.Event()
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            self.go.wait(10)
            accept = rfc_accept(backend_key(request))
            conn.sendall(PLAIN + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n\x81\x02hi")
            with contextlib.suppress(OSError):
                while chunk := conn.recv(4096):
                    self.received += chunk

    def close(self) -> None:
        self.go.set()
        self.thread.join(10)
        self.listener.close()


@contextlib.contextmanager
def thread_backend() -> Iterator[ThreadBackend]:
    backend = ThreadBackend()
    try:
        yield backend
    finally:
        backend.close()


def blocking_client(env: Env, path: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    client.sendall(head(env, path))
    return client


def read_101(client: socket.socket) -> bytes:
    """The 101's head and the backend's first frame (b"\\x81\\x02hi")."""
    got = b""
    while not (b"\r\n\r\n" in got and got.endswith(b"hi")):
        chunk = client.recv(4096)
        assert chunk, got
        got += chunk
    return got


async def test_a_client_gone_before_python_hears_of_its_start(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        assert env.router.core_handshakes is not None
        upgrades = env.router.core_handshakes.upgrades
        with thread_backend() as backend:
            add_topic(env, "/held", f"ws://127.0.0.1:{backend.port}/")
            client = blocking_client(env, "/echo/1.0.0/held")
            await eventually(lambda: bool(upgrades))  # Core.connect was called
            # from here Python sleeps: the core checks the 101, answers, relays, and sees
            # the client go, all before Python reads EV_STARTED
            backend.go.set()
            held(lambda: stats(env)["self_started"] == 1)
            assert read_101(client).startswith(PLAIN)
            client.close()
            held(lambda: stats(env)["live"] == 0)
            assert upgrades and env.router.upgrading == 1 and not env.router.relays
        await eventually(lambda: not env.router.relays and env.router.upgrading == 0)
        assert not upgrades and not env.router.live.snapshot()
        metrics = env.router.metrics_text().decode()
        assert 'wsgate_router_handshakes_total{result="allowed",status="101"} 1.0' in metrics
        assert 'by="client"' in metrics


async def test_a_rule_for_a_connection_the_core_just_started(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        assert env.router.core_handshakes is not None
        upgrades = env.router.core_handshakes.upgrades
        with thread_backend() as backend:
            add_topic(env, "/held", f"ws://127.0.0.1:{backend.port}/")
            client = blocking_client(env, "/echo/1.0.0/held")
            with client:
                await eventually(lambda: bool(upgrades))
                backend.go.set()
                held(lambda: stats(env)["self_started"] == 1)
                assert read_101(client).startswith(PLAIN)
                # the rule arrives before Python knows the relay: it must still close it
                rule = enforcer_pb2.ConnectionRule(token_id="alice", reason="revoked")
                env.router.apply_rule(rule)
                assert stats(env)["live"] == 1
                loop = asyncio.get_running_loop()
                frame = await loop.run_in_executor(None, client.recv, 4096)
                assert frame[:1] == b"\x88", frame
                reason = frame[4:].decode()
                assert "revoked" in reason
        await eventually(lambda: not env.router.relays and stats(env)["live"] == 0)
        assert env.router.live.stats["closed_by_rule"] == 1
        assert not env.router.live.snapshot() and env.router.upgrading == 0


async def test_a_relay_the_core_started_alone_counts_its_quota(tmp_path: Path) -> None:
    async with core_env(tmp_path) as env:
        env.enforcer.quotas = [
            enforcer_pb2.Quota(
                key="sub:q", message_count=3, window_seconds=60, stop_on_quota_reach=True
            )
        ]
        async with raw(env) as (reader, writer):
            writer.write(head(env))
            assert (await answer(reader))[0] == 101
            writer.write(masked(b"a"))  # up 1, its echo 2
            assert await asyncio.wait_for(reader.readexactly(3), 5) == b"\x81\x01a"
            writer.write(masked(b"b"))  # up 3, its echo refused: the connection is stopped
            close = await asyncio.wait_for(reader.readexactly(4), 5)
            assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1008
        assert stats(env)["self_started"] == 1
        await eventually(lambda: not env.router.relays and stats(env)["live"] == 0)
        assert not env.router.live.snapshot() and env.router.upgrading == 0


async def test_a_backend_name_is_tried_address_after_address(tmp_path: Path) -> None:
    """A name with two addresses, the first refusing (``localhost`` as ::1 then 127.0.0.1 with
    a backend on IPv4 only): the core tries the next one, as backend.connect does."""
    from router import backend

    async with core_env(tmp_path) as env:
        name = "dual.wsgate.test"
        known = (time.monotonic() + 3600, ["127.0.0.3", "127.0.0.1"])  # nothing on 127.0.0.3
        backend.RESOLVER._known[(name, env.backend_port)] = known
        try:
            add_topic(env, "/dual", f"ws://{name}:{env.backend_port}/echo")
            for _ in range(2):  # a miss, then a cached allow: both through Core.connect
                async with raw(env) as (reader, writer):
                    writer.write(head(env, "/echo/1.0.0/dual"))
                    status, _ = await answer(reader)
                    assert status == 101
                    writer.write(masked(b"via the second address"))
                    echoed = await asyncio.wait_for(reader.readexactly(2 + 22), 5)
                    assert echoed[2:] == b"via the second address"
            assert env.router.decisions.hits == 1 and stats(env)["handed_back"] == 0
        finally:
            backend.RESOLVER.forget(name, env.backend_port)
