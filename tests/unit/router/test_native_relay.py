"""The compiled relay path (router/native.py + router._core.Core), in-process with real sockets.

The router behaviour suites (test_server, test_live, test_limits, ...) run over both relay
paths; this module holds what is specific to the native one: the hand-over of the sockets
(early data on both sides, no byte lost or duplicated, no FIN), the same counters as the
Python relay for the same traffic, the path switch and its reporting. Under ``CI=true`` a
missing native build fails these tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from router import native
from router.frames import Opcode, close_frame, encode_frame, unmask
from router.http11 import accept_key
from router.native import NativeRelay, NativeUnavailable
from router.relay import Relay
from router.server import Router, RouterConfig
from tests.procs import import_or_unavailable
from tests.unit.router.test_server import (  # noqa: F401 - event_loop_policy: uvloop + asyncio
    Env,
    event_loop_policy,
    make_routes,
    open_env,
    packed,
    upgrade,
)

ROUNDS = 40
pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')


@pytest.fixture(autouse=True)
def built() -> Any:
    return import_or_unavailable("router._core")


@pytest.fixture
async def nenv(tmp_path: Path) -> AsyncIterator[Env]:
    async with open_env(tmp_path, relay="native") as opened:
        yield opened


def frames_in(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete frames off the front of ``buf`` (masked or not); (opcode, payload)."""
    out = []
    while len(buf) >= 2:
        length, pos = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                break
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                break
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        mask = b""
        if buf[1] & 0x80:
            mask, pos = bytes(buf[pos : pos + 4]), pos + 4
        if len(buf) < pos + length:
            break
        payload = bytes(buf[pos : pos + length])
        out.append((buf[0] & 0x0F, unmask(payload, mask) if mask else payload))
        del buf[: pos + length]
    return out


class Peer:
    """One raw end of the connection: what it received, and whether it saw EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.got: list[tuple[int, bytes]] = []
        self.eof = False

    async def until(self, count: int) -> None:
        """Read until ``count`` frames came in (EOF is recorded, not raised)."""
        async with asyncio.timeout(5.0):
            while len(self.got) < count and not self.eof:
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    break
                self.buf += data
                self.got += frames_in(self.buf)


async def raw_backend(accepted: asyncio.Queue[Peer]) -> tuple[asyncio.Server, int]:
    """A backend answering the upgrade by hand: the 101 and its first frames in ONE write, so
    the router reads them together with the head (they are early data at the hand-over)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = accept_key(key.decode()).encode()
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        first = b"".join(encode_frame(Opcode.TEXT, f"B{i}".encode()) for i in range(3))
        writer.write(response + first)
        await accepted.put(Peer(reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("relay", ["native", "python"])
async def test_hand_over_loses_nothing_duplicates_nothing_sends_no_fin(
    tmp_path: Path, relay: str
) -> None:
    """Early bytes on both sides when the sockets change hands, then traffic both ways at once:
    every frame arrives once, in order, and neither peer sees EOF before the closing handshake."""
    accepted: asyncio.Queue[Peer] = asyncio.Queue()
    server, port = await raw_backend(accepted)
    async with open_env(tmp_path, relay=relay) as env:
        env.store.apply("raw", packed(make_routes(port)))
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        # The upgrade and the client's first frames in one write: early data for the router.
        early = b"".join(encode_frame(Opcode.TEXT, f"C{i}".encode(), mask=True) for i in range(3))
        writer.write(upgrade("/echo/1.0.0") + early)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        client = Peer(reader, writer)
        backend = await asyncio.wait_for(accepted.get(), 5)
        kind = NativeRelay if relay == "native" else Relay
        assert [type(r) for r in env.router.relays] == [kind]
        for i in range(3, ROUNDS):  # both directions at once, frames of several sizes
            size = (i * 997) % 70000
            client.writer.write(
                encode_frame(Opcode.BINARY, f"C{i}:".encode() + b"c" * size, mask=True)
            )
            backend.writer.write(encode_frame(Opcode.BINARY, f"B{i}:".encode() + b"b" * size))
            if i % 7 == 0:
                await asyncio.gather(client.writer.drain(), backend.writer.drain())
        await asyncio.gather(client.until(ROUNDS), backend.until(ROUNDS))
        assert not client.eof and not backend.eof, "a peer saw EOF: the hand-over sent a FIN"
        for peer, name in ((client, "B"), (backend, "C")):
            tags = [payload.split(b":")[0].decode() for _, payload in peer.got]
            assert tags == [f"{name}{i}" for i in range(ROUNDS)]
            assert [len(p) for _, p in peer.got[3:]] == [
                len(f"{name}{i}:") + (i * 997) % 70000 for i in range(3, ROUNDS)
            ]
        # The closing handshake still works end to end, and only then does EOF come.
        client.writer.write(close_frame(1000, "done", mask=True))
        await backend.until(ROUNDS + 1)
        assert backend.got[-1] == (Opcode.CLOSE, (1000).to_bytes(2, "big") + b"done")
        backend.writer.write(close_frame(1000, "done"))
        await client.until(ROUNDS + 1)
        assert client.got[-1][0] == Opcode.CLOSE
        backend.writer.close()
        await client.until(ROUNDS + 2)
        assert client.eof
        client.writer.close()
        for _ in range(100):
            if not env.router.relays:
                break
            await asyncio.sleep(0.05)
        assert not env.router.relays
        up_bytes = (
            len(early)
            + sum(
                len(
                    encode_frame(
                        Opcode.BINARY, f"C{i}:".encode() + b"c" * ((i * 997) % 70000), mask=True
                    )
                )
                for i in range(3, ROUNDS)
            )
            + len(close_frame(1000, "done", mask=True))
        )
        assert env.router.finished.bytes_up == up_bytes
        assert env.router.finished.messages_up == ROUNDS
    server.close()


@pytest.mark.parametrize("relay", ["native", "python"])
async def test_what_arrives_while_not_reading_is_all_relayed_then_the_eof(
    tmp_path: Path, relay: str
) -> None:
    """The backend stops reading, so the router stops reading the client (backpressure); the
    client meanwhile sends megabytes, its close frame and its FIN. Once the backend reads again,
    everything queued on the client's socket (many read buffers' worth, then the EOF behind the
    data, with no new arrival to announce them) reaches the backend, in order, then the EOF."""
    accepted: asyncio.Queue[Peer] = asyncio.Queue()
    server, port = await raw_backend(accepted)
    async with open_env(tmp_path, relay=relay) as env:
        env.store.apply("raw", packed(make_routes(port)))
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        writer.write(upgrade("/echo/1.0.0"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        backend = await asyncio.wait_for(accepted.get(), 5)
        backend.writer.transport.pause_reading()
        count, size = 300, 60_000  # 18 MB: more than loopback's socket buffers hold
        for i in range(count):
            writer.write(encode_frame(Opcode.BINARY, f"C{i}:".encode() + b"c" * size, mask=True))
        writer.write(close_frame(1000, "done", mask=True))
        writer.write_eof()
        [relay_] = env.router.relays
        async with asyncio.timeout(10):
            while relay_.flow().reading_client:  # noqa: ASYNC110 (the relay's own state)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the rest of the client's bytes and its FIN queue up
        backend.writer.transport.resume_reading()
        async with asyncio.timeout(20):
            while not backend.eof:
                data = await backend.reader.read(1 << 20)
                if not data:
                    backend.eof = True
                backend.buf += data
                backend.got += frames_in(backend.buf)
        tags = [payload.split(b":")[0].decode() for _, payload in backend.got[:count]]
        assert tags == [f"C{i}" for i in range(count)]
        assert backend.got[-1] == (Opcode.CLOSE, (1000).to_bytes(2, "big") + b"done")
        assert len(backend.got) == count + 1
        backend.writer.close()
        writer.close()
    server.close()


async def traffic(env: Env) -> None:
    """The same script for both paths: sizes across the length encodings, a fragmented
    message, a ping, a normal close."""
    async with connect(env.url(), max_size=None, ping_interval=None, compression=None) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 300_000):
            await ws.send(b"x" * size)
            assert len(await ws.recv()) == size
        await ws.send(["frag", "ment", "ed"])
        assert await ws.recv() == "fragmented"
        await asyncio.wait_for(await ws.ping(b"p"), 3)


async def test_counters_equal_the_python_relay(tmp_path: Path) -> None:
    finished = {}
    for relay in ("python", "native"):
        async with open_env(tmp_path / relay, relay=relay) as env:
            await traffic(env)
            for _ in range(100):
                if not env.router.relays:
                    break
                await asyncio.sleep(0.05)
            assert not env.router.relays
            finished[relay] = env.router.finished
    assert finished["native"] == finished["python"]
    # 7 + 1 fragmented (3 frames and websockets' empty last one) + a ping + the close
    assert finished["native"].messages_up == 8 and finished["native"].frames_up == 13
    assert finished["native"].bytes_up > 300_000 + 65536 + 65535


async def test_metrics_and_log_name_the_path(nenv: Env) -> None:
    async with connect(nenv.url()) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        text = nenv.router.metrics_text().decode()
        assert 'wsgate_router_relay_info{path="native"} 1.0' in text
        assert 'wsgate_router_connections_by_relay{path="native"} 1.0' in text
        assert 'wsgate_router_messages_total{direction="up"} 1.0' in text


async def test_wss_stays_on_the_python_relay(nenv: Env) -> None:
    assert nenv.ca is not None
    ctx = ssl.create_default_context(cafile=str(nenv.ca))
    async with connect(f"wss://localhost:{nenv.tls_port}/echo/1.0.0", ssl=ctx) as secure:
        async with connect(nenv.url()) as plain:
            for ws in (secure, plain):
                await ws.send("x")
                assert await ws.recv() == "x"
            kinds = sorted(type(r).__name__ for r in nenv.router.relays)
            assert kinds == ["NativeRelay", "Relay"]


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert native.choose("auto") == "native" and native.choose("python") == "python"
    with pytest.raises(ValueError, match="relay must be one of"):
        native.choose("fast")
    monkeypatch.setattr(native, "_core", None)
    monkeypatch.setattr(native, "IMPORT_ERROR", "No module named 'router._core'")
    assert native.choose("auto") == "python"
    with pytest.raises(NativeUnavailable, match="WSGATE_RELAY=native but"):
        native.choose("native")
    with pytest.raises(NativeUnavailable):
        Router(RouterConfig(relay="native"), None, None)  # type: ignore[arg-type]


def relay_policies() -> list[int]:
    """The scheduling policies of this process's threads."""
    return sorted(os.sched_getscheduler(int(tid)) for tid in os.listdir("/proc/self/task"))


@pytest.mark.parametrize("relay_sched", ["batch", "normal"])
async def test_the_relay_thread_runs_under_the_policy_set(tmp_path: Path, relay_sched: str) -> None:
    """WSGATE_ROUTER_RELAY_SCHED reaches the relay thread (SCHED_BATCH by default), which
    relays as under the normal policy."""
    batch_before = relay_policies().count(os.SCHED_BATCH)
    async with open_env(tmp_path, relay="native", relay_sched=relay_sched) as env:
        assert env.router.native is not None
        assert env.router.native.core.sched() == relay_sched
        batch = relay_policies().count(os.SCHED_BATCH) - batch_before
        assert batch == (1 if relay_sched == "batch" else 0)
        async with connect(env.url()) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert RouterConfig().relay_sched == "auto"


async def test_auto_scheduling_is_batch_while_many_connections_are_active(tmp_path: Path) -> None:
    """WSGATE_ROUTER_RELAY_SCHED=auto (the default): normal with one busy connection, batch
    while eight are, normal again when one is left."""

    async def ping_pong(ws: Any, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            await ws.send(b"x" * 64)
            await ws.recv()

    async def seen(core: Any, busy: list[Any], policy: str) -> bool:
        for _ in range(20):  # while the traffic runs, up to ~1 s
            await asyncio.gather(*(ping_pong(ws, 0.05) for ws in busy))
            if core.sched() == policy:
                return True
        return False

    async with open_env(tmp_path, relay="native") as env:
        assert env.router.native is not None
        core = env.router.native.core
        assert core.sched() == "normal"
        conns = [await connect(env.url(), compression=None) for _ in range(8)]
        try:
            assert await seen(core, conns[:1], "normal")
            assert await seen(core, conns, "batch")
            assert await seen(core, conns[:1], "normal")
        finally:
            for ws in conns:
                await ws.close()


def test_settings_read_wsgate_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.settings import RouterSettings

    monkeypatch.setenv("WSGATE_RELAY", "python")
    assert RouterSettings().relay == "python"
    assert os.environ["WSGATE_RELAY"] == "python"
    assert RouterSettings().router_relay_sched == "auto"
    monkeypatch.setenv("WSGATE_ROUTER_RELAY_SCHED", "normal")
    assert RouterSettings().router_relay_sched == "normal"


@pytest.mark.parametrize("relay", ["native", "python"])
async def test_bad_framing_closes_both_ends_with_1002(tmp_path: Path, relay: str) -> None:
    """A good frame, then an unmasked one in the same write: both ends get 1002 with the
    scanner's reason (what passes before the bad frame: the differential scanner tests)."""
    async with open_env(tmp_path, relay=relay) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        writer.write(upgrade("/echo/1.0.0"))
        await reader.readuntil(b"\r\n\r\n")
        client = Peer(reader, writer)
        writer.write(encode_frame(Opcode.TEXT, b"fine", mask=True))
        await client.until(1)
        assert client.got == [(Opcode.TEXT, b"fine")]
        writer.write(encode_frame(Opcode.TEXT, b"ok", mask=True) + encode_frame(Opcode.TEXT, b"x"))
        await client.until(2)
        assert client.got[1][0] == Opcode.CLOSE
        code, reason = int.from_bytes(client.got[1][1][:2], "big"), client.got[1][1][2:]
        assert (code, reason) == (1002, b"unmasked frame from the client")
        for _ in range(100):
            if env.backend.closes:
                break
            await asyncio.sleep(0.05)
        assert env.backend.closes == [(1002, "unmasked frame from the client")]
        writer.close()


def test_both_paths_share_one_counter_per_quota_key() -> None:
    """While the core runs, the Python relay's connections (wss) count in the core's table:
    a key has one counter whichever path its connections take."""
    from router.native import NativeHub
    from router.throttle import connection_throttle
    from wsgate_proto import enforcer_pb2

    hub = NativeHub()
    try:
        quotas = [enforcer_pb2.Quota(key="sub:a:b", message_count=3, window_seconds=60.0)]
        python_side = connection_throttle(quotas, hub.store, 0.0)  # a wss connection
        native_side = hub.throttle(quotas, 0.0)  # a ws connection, relayed by the core
        assert python_side is not None and native_side is not None
        handles = tuple(limit.handle for limit in native_side.limits)
        assert python_side.admit(1.0) is None and python_side.admit(1.0) is None
        assert hub.core.admit(handles, 1.0) == -1  # the third message, on the other path
        assert hub.core.admit(handles, 1.0) == 0
        refused = python_side.admit(1.0)
        assert refused is not None and refused.key == "sub:a:b"
        assert len(hub.store) == 1
        python_side.release(2.0)
        native_side.release(2.0)
        assert len(hub.store) == 1  # kept until idle: reconnecting does not reset the quota
        hub.store.acquire("api:x", 1, 1.0, 100.0)  # a sweep is due
        assert len(hub.store) == 1
    finally:
        hub.close()


async def test_many_connections_ending_every_way_leave_nothing_behind(nenv: Env) -> None:
    """Connections in parallel, each ending its own way (client close, client abort mid-frame,
    bad framing, backend close, backend drop, router terminate, a message over the limit):
    the core reports every one, the router keeps serving, nothing is left open."""
    rng = random.Random(1234)
    ends = ["close", "abort", "bad", "backend_close", "backend_drop", "terminate", "too_big"]

    async def one(i: int, end: str) -> None:
        path = {"backend_close": "/echo/1.0.0/close", "backend_drop": "/echo/1.0.0/drop"}.get(
            end, "/echo/1.0.0"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", nenv.port)
        writer.write(upgrade(path))
        await reader.readuntil(b"\r\n\r\n")
        peer = Peer(reader, writer)
        size = rng.choice([0, 10, 200, 70_000])
        writer.write(encode_frame(Opcode.BINARY, bytes([i % 256]) * size, mask=True))
        if end == "abort":
            writer.write(encode_frame(Opcode.BINARY, b"y" * 5000, mask=True)[:3000])
            await asyncio.sleep(rng.random() * 0.05)
            writer.transport.abort()
            return
        await peer.until(1)
        if end == "bad":
            writer.write(encode_frame(Opcode.TEXT, b"unmasked"))
        elif end == "too_big":
            writer.write(
                encode_frame(Opcode.BINARY, b"z" * (nenv.router.config.max_message + 1), mask=True)
            )
        elif end == "terminate":
            relays = [r for r in nenv.router.relays if isinstance(r, NativeRelay)]
            for relay in relays:
                relay.terminate(1008, "rule", cause="rule")
        elif end in ("close", "backend_close"):
            writer.write(close_frame(1000, "bye", mask=True))
        elif end == "backend_drop":
            writer.write(encode_frame(Opcode.TEXT, b"now", mask=True))
        await peer.until(10)  # until the router closes (EOF) or 5 s
        writer.close()

    tasks = [one(i, ends[i % len(ends)]) for i in range(70)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, OSError)]
    assert not failures, failures
    for _ in range(200):
        if not nenv.router.relays:
            break
        await asyncio.sleep(0.05)
    assert not nenv.router.relays
    assert nenv.router.native is not None and nenv.router.native.core.stats()["live"] == 0
    async with connect(nenv.url()) as ws:  # still serving
        await ws.send("alive")
        assert await ws.recv() == "alive"
