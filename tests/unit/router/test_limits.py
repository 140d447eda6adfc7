"""The router's limits end to end, in-process on free ports (real sockets, real `websockets`
backend, an enforcer test double): idle timeout, connection limit, backend connect timeout,
and bounded memory with a client that stops reading. Max message size, handshake timeout,
backend refused, client gone and backend gone are in test_server.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from router.relay import HIGH_WATER
from tests.unit.router.test_server import (
    FLOOD_TOTAL,
    Env,
    active,
    event_loop_policy,
    open_env,
    packed,
    raw_request,
    upgrade,
    wait_until,
)
from wsgate_common.metrics import parse_samples
from wsgate_proto import config_pb2

__all__ = ["event_loop_policy"]  # every test here runs on uvloop and on the stock loop

pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')


# -- idle timeout --------------------------------------------------------------------------


async def test_idle_connection_is_closed_1001_both_ways(tmp_path: Path, relay_path: str) -> None:
    async with open_env(tmp_path, relay=relay_path, idle_timeout=1.0) as env:
        async with connect(env.url(), ping_interval=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            last_activity = time.monotonic()
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
            closed_after = time.monotonic() - last_activity
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "idle timeout")
        # Sweeps every 0.5 s: closed between the timeout and timeout + 2 sweeps (+ slack).
        assert 0.9 <= closed_after < 5.0, closed_after
        await wait_until(lambda: len(env.backend.closes) == 1, within=5)
        assert env.backend.closes[0] == (1001, "idle timeout")
        assert env.router.idle_closed == 1


async def test_pings_keep_an_idle_connection_open(tmp_path: Path, relay_path: str) -> None:
    async with open_env(tmp_path, relay=relay_path, idle_timeout=1.5) as env:
        # websockets pings every 0.2 s and the backend answers pongs: no data message at all.
        async with connect(env.url(), ping_interval=0.2, ping_timeout=10) as ws:
            await asyncio.sleep(4.5)  # three idle timeouts
            await ws.send("still here")
            assert await ws.recv() == "still here"
        assert env.router.idle_closed == 0
        assert env.backend.closes and env.backend.closes[0][0] == 1000


async def test_idle_timeout_zero_disables_the_sweep(tmp_path: Path, relay_path: str) -> None:
    async with open_env(tmp_path, relay=relay_path, idle_timeout=0) as env:
        assert env.router._sweeper is None
        async with connect(env.url(), ping_interval=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"


# -- connection limit ----------------------------------------------------------------------


async def test_connection_limit_is_503_and_spares_established_ones(
    tmp_path: Path, relay_path: str
) -> None:
    async with open_env(tmp_path, relay=relay_path, max_connections=2) as env:
        async with connect(env.url()) as first, connect(env.url()) as second:
            status, headers, body = await raw_request(env.port, upgrade("/echo/1.0.0"))
            assert status == 503 and headers["content-type"] == "application/json"
            payload = json.loads(body)
            assert payload["code"] == 503 and "connection limit (2)" in payload["description"]
            for ws in (first, second):  # untouched
                await ws.send("alive")
                assert await ws.recv() == "alive"
            assert len(env.enforcer.requests) == 2  # the refused one was not even checked
        await wait_until(lambda: active(env.router) == 0)
        async with connect(env.url()) as again:  # room again once they are gone
            await again.send("y")
            assert await again.recv() == "y"


# -- backend connect timeout ---------------------------------------------------------------


async def test_backend_that_never_answers_is_504(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = config_pb2.Route(
        api_id="silent",
        api_name="Silent",
        api_version="1.0.0",
        vhost="localhost",
        base_path="/silent/1.0.0",
        topics=[config_pb2.RouteTopic(path="/", production_url=f"ws://127.0.0.1:{port}")],
    )
    try:
        async with open_env(tmp_path, backend_connect_timeout=0.5) as env:
            env.store.apply("v2", packed([route]))
            started = time.monotonic()
            status, _, body = await raw_request(env.port, upgrade("/silent/1.0.0"))
            took = time.monotonic() - started
            assert status == 504
            assert json.loads(body)["message"] == "Gateway Timeout"
            assert json.loads(body)["code"] == 101503
            assert 0.4 <= took < 4.0
            assert accepted  # it was the upgrade that timed out, not the TCP connect
    finally:
        server.close()
        for writer in accepted:
            writer.close()


# -- slow reader ---------------------------------------------------------------------------


async def test_slow_reader_keeps_router_buffers_bounded(tmp_path: Path, relay_path: str) -> None:
    """The client stops reading while the backend floods 50 MB: the router stops reading from
    the backend once the client's side is backed up, so it never holds more than about that
    (plus one read) and the backend is held back by TCP flow control. What the router relayed
    is read from /metrics on both paths; the Python relay's own buffers are checked too."""
    async with open_env(tmp_path, relay=relay_path) as env:
        await _slow_reader(env, relay_path)


def _sample(env: Env, name: str) -> float:
    return parse_samples(env.router.metrics_text().decode()).get(name, 0.0)


async def _slow_reader(env: Env, relay_path: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", env.port))
    await loop.sock_sendall(sock, upgrade("/echo/1.0.0/flood"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1), 5)  # the 101 head, no more
    assert head.startswith(b"HTTP/1.1 101 ")
    try:
        await wait_until(lambda: _sample(env, "wsgate_router_connections_active") == 1, within=5)
        relay = next(iter(env.router.relays))
        largest = 0
        previous, stable_since = -1.0, time.monotonic()
        deadline = time.monotonic() + 30
        # Wait until the flood has stalled: the router received nothing more for 1 s.
        while time.monotonic() < deadline:
            largest = max(largest, relay.flow().to_client)
            received = relay.counts().bytes_down
            if received != previous:
                previous, stable_since = received, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"the flood never stalled ({previous} bytes relayed)")
        pending = relay.flow().to_client
        # One read of at most 256 KiB may land on top of the high-water mark.
        assert pending <= HIGH_WATER + 256 * 1024, pending
        assert largest <= HIGH_WATER + 256 * 1024, largest
        assert not relay.flow().reading_backend
        assert env.backend.flooded < FLOOD_TOTAL  # the backend is blocked, not done
        assert relay.counts().bytes_down < FLOOD_TOTAL / 2
    finally:
        sock.close()
    await wait_until(lambda: _sample(env, "wsgate_router_connections_active") == 0, within=5)
