"""The router's listeners and relay, in-process on free ports.

The backend is a real `websockets` server; the enforcer is a TEST DOUBLE (an in-process grpc.aio
HandshakeService that decides by the Authorization header). Process-level tests with the real
enforcer and adapter live in tests/integration/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import uvloop
from google.protobuf import any_pb2
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from router.analytics import Sink
from router.config import RouteStore
from router.enforcer_client import EnforcerClient
from router.server import Router, RouterConfig, server_ssl_context
from tests.procs import PROMPT, free_port
from tests.relay_paths import active_connections, check_reported, python_relay_only
from wsgate_common.pki import ensure_pki
from wsgate_proto import config_pb2, enforcer_pb2, enforcer_pb2_grpc

pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MIB = 1024 * 1024
FLOOD_CHUNK = 256 * 1024
FLOOD_TOTAL = 50 * MIB


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test runs on uvloop (what `wsgate router` uses) and on the stock loop."""
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@dataclass
class BackendLog:
    """What the echo backend saw, for assertions about the far side of the relay."""

    closes: list[tuple[int | None, str]] = field(default_factory=list)
    closed_at: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    flooded: int = 0  # bytes the /flood backend managed to send


class EnforcerDouble(enforcer_pb2_grpc.HandshakeServiceServicer):
    """Test double for the enforcer: 'Bearer deny' -> 403, 'Bearer sandbox' -> SANDBOX."""

    def __init__(self) -> None:
        self.requests: list[enforcer_pb2.HandshakeRequest] = []
        self.data_version = ""  # what a real enforcer stamps its answers with
        self.denied: set[str] = set()  # more Authorization values refused like 'Bearer deny'
        self.gate: asyncio.Event | None = None  # set: Check answers once it is set
        self.quotas: list[enforcer_pb2.Quota] = []  # given with every allow

    async def Check(
        self, request: enforcer_pb2.HandshakeRequest, context: grpc.aio.ServicerContext
    ) -> enforcer_pb2.HandshakeResponse:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if request.authorization == "Bearer deny" or request.authorization in self.denied:
            return enforcer_pb2.HandshakeResponse(
                allowed=False,
                http_status=403,
                error_code=900910,
                message="The access token does not allow you to access the requested resource",
                description="User is NOT authorized to access the Resource: /. "
                "Scope validation failed.",
                data_version=self.data_version,
            )
        key_type = "SANDBOX" if request.authorization == "Bearer sandbox" else "PRODUCTION"
        return enforcer_pb2.HandshakeResponse(
            allowed=True,
            key_type=key_type,
            token_id=request.authorization.removeprefix("Bearer "),
            data_version=self.data_version,
            quotas=self.quotas,
        )


@dataclass
class Env:
    port: int
    backend_port: int
    backend: BackendLog
    enforcer: EnforcerDouble
    router: Router
    store: RouteStore
    tls_port: int = 0
    ca: Path | None = None

    def url(self, path: str = "/echo/1.0.0") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


async def backend_handler(ws: ServerConnection, log: BackendLog) -> None:
    assert ws.request is not None
    path = ws.request.path
    log.paths.append(path)
    log.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
    try:
        if path.startswith("/close4001"):
            await ws.recv()
            await ws.close(4001, "backend says bye")
            return
        if path.startswith("/flood"):  # sends FLOOD_TOTAL bytes as fast as it is let
            chunk = b"f" * FLOOD_CHUNK
            while log.flooded < FLOOD_TOTAL:
                await ws.send(chunk)
                log.flooded += len(chunk)
            await ws.wait_closed()
            return
        if path.startswith("/drop"):
            await ws.recv()
            assert ws.transport is not None
            ws.transport.abort()
            return
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        log.closed_at.append(time.monotonic())
        log.closes.append((ws.close_code, ws.close_reason or ""))


def make_routes(backend_port: int) -> list[config_pb2.Route]:
    backend = f"ws://127.0.0.1:{backend_port}"
    return [
        config_pb2.Route(
            api_id="echo",
            api_name="Echo",
            api_version="1.0.0",
            vhost="localhost",
            base_path="/echo/1.0.0",
            topics=[
                config_pb2.RouteTopic(path="/", production_url=backend + "/echo"),
                config_pb2.RouteTopic(path="/close", production_url=backend + "/close4001"),
                config_pb2.RouteTopic(path="/drop", production_url=backend + "/drop"),
                config_pb2.RouteTopic(path="/flood", production_url=backend + "/flood"),
                config_pb2.RouteTopic(path="/dead", production_url=f"ws://127.0.0.1:{free_port()}"),
                config_pb2.RouteTopic(
                    path="/sandboxed", production_url=backend, sandbox_url=backend + "/sb"
                ),
            ],
        )
    ]


def packed(routes: list[config_pb2.Route]) -> list[any_pb2.Any]:
    out = []
    for route in routes:
        resource = any_pb2.Any()
        resource.Pack(route)
        out.append(resource)
    return out


def select_graphql(conn: ServerConnection, offered: Sequence[str]) -> Any:
    """The backend speaks one subprotocol, graphql-transport-ws, and chooses it when offered."""
    return "graphql-transport-ws" if "graphql-transport-ws" in offered else None


@contextlib.asynccontextmanager
async def open_env(
    tmp_path: Path, sinks: Sequence[Sink] = (), **overrides: Any
) -> AsyncIterator[Env]:
    """Backend, enforcer double and a router on free ports; ``overrides`` go to RouterConfig
    (``relay="python"|"native"``: the router must report that relay path on /metrics)."""
    log = BackendLog()
    backend = await serve(
        lambda ws: backend_handler(ws, log),
        "127.0.0.1",
        0,
        select_subprotocol=select_graphql,
    )
    backend_port = next(iter(backend.sockets)).getsockname()[1]

    enforcer = EnforcerDouble()
    grpc_server = grpc.aio.server()
    enforcer_pb2_grpc.add_HandshakeServiceServicer_to_server(enforcer, grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()

    testkey_port = await start_testkey_server()
    store = RouteStore()
    store.apply("v1", packed(make_routes(backend_port)))
    settings: dict[str, Any] = {
        "enforcer_http_url": f"http://127.0.0.1:{testkey_port}",
        "handshake_timeout": 0.5,
        "backend_connect_timeout": 2.0,
        **overrides,
    }
    router = Router(
        RouterConfig(**settings), store, EnforcerClient(f"127.0.0.1:{grpc_port}"), sinks=sinks
    )
    if "relay" in overrides:
        check_reported(router.metrics_text().decode(), str(overrides["relay"]))
    port = await router.listen("127.0.0.1", 0)
    pki = ensure_pki(tmp_path / "pki")
    tls_port = await router.listen("127.0.0.1", 0, server_ssl_context(str(pki.cert), str(pki.key)))
    try:
        yield Env(port, backend_port, log, enforcer, router, store, tls_port, pki.ca_cert)
    finally:
        await router.shutdown(drain=0.5)
        backend.close()
        await grpc_server.stop(0)


@pytest.fixture
async def env(tmp_path: Path, relay_path: str) -> AsyncIterator[Env]:
    """A router on each relay path (tests that only handshake are marked python_relay_only)."""
    async with open_env(tmp_path, relay=relay_path) as opened:
        yield opened


async def start_testkey_server() -> int:
    """A tiny HTTP server standing in for the enforcer's /testkey: echoes what it got."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        answer = json.dumps(
            {
                "line": lines[0],
                "authorization": headers.get("authorization", ""),
                "forwarded": headers.get("x-forwarded-for", ""),
                "body": body.decode(),
            }
        ).encode()
        writer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


async def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the router closes; return status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    raw = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def upgrade(path: str, *extra: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- relay ---------------------------------------------------------------------------------


async def test_echo_text_and_binary(env: Env) -> None:
    async with connect(env.url(), additional_headers={"Authorization": "Bearer ok"}) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\x02")
        assert await ws.recv() == b"\x00\x01\x02"
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
    check = env.enforcer.requests[-1]
    assert (check.api_id, check.topic, check.path) == ("echo", "/", "/echo/1.0.0")
    assert check.authorization == "Bearer ok" and check.client_ip == "127.0.0.1"
    assert env.backend.paths[-1] == "/echo"


@python_relay_only
async def test_credentials_never_reach_the_backend(env: Env) -> None:
    url = env.url() + "?x=1&access_token=tok-q&apikey=key-q&y=2"
    headers = {"Authorization": "Bearer tok-h", "apikey": "key-h", "Referer": "https://r.example/"}
    offer = ["choreo-api-key", "key-s", "graphql-transport-ws"]
    async with connect(url, additional_headers=headers, subprotocols=offer) as ws:  # type: ignore[arg-type]
        await ws.send("hello")
        assert await ws.recv() == "hello"
        assert ws.subprotocol == "graphql-transport-ws"  # the backend's choice wins
    check = env.enforcer.requests[-1]
    assert [(c.kind, c.source, c.token) for c in check.credentials] == [
        ("oauth2", "header", "tok-h"),
        ("api_key", "header", "key-h"),
        ("oauth2", "query", "tok-q"),
        ("api_key", "query", "key-q"),
        ("api_key", "subprotocol", "key-s"),
    ]
    assert check.authorization == "Bearer tok-h"
    assert check.referer == "https://r.example/" and check.origin == ""
    assert not {"authorization", "apikey", "sec-websocket-protocol"} & set(check.headers)
    assert env.backend.paths[-1] == "/echo?x=1&y=2"
    seen = env.backend.headers[-1]
    assert seen["sec-websocket-protocol"] == "graphql-transport-ws"
    assert "authorization" not in seen and "apikey" not in seen and "referer" not in seen
    assert not any(secret in str(seen) for secret in ("tok-", "key-"))


@python_relay_only
async def test_marker_is_selected_when_the_backend_chooses_none(env: Env) -> None:
    for offer in (["choreo-oauth2-key", "tok-s"], ["x-chat", "choreo-oauth2-key", "tok-s"]):
        async with connect(
            env.url(),
            subprotocols=offer,  # type: ignore[arg-type]
            additional_headers={"Origin": "http://localhost:3000"},
        ) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            assert ws.subprotocol == "choreo-oauth2-key"
        check = env.enforcer.requests[-1]
        assert [(c.kind, c.source, c.token) for c in check.credentials] == [
            ("oauth2", "subprotocol", "tok-s")
        ]
        assert check.origin == "http://localhost:3000"
        assert env.backend.headers[-1].get("sec-websocket-protocol") == (
            "x-chat" if "x-chat" in offer else None
        )


async def test_uncompressed_echo_and_subprotocol(env: Env) -> None:
    async with connect(env.url(), compression=None) as ws:
        for size in (0, 125, 126, 65535, 65536, 200_000):
            await ws.send(b"x" * size)
            assert await ws.recv() == b"x" * size
    assert "sec-websocket-extensions" not in env.backend.headers[-1]


async def test_large_message_passes_and_over_limit_is_1009(env: Env) -> None:
    async with connect(env.url(), compression=None, max_size=None) as ws:
        big = b"a" * (MIB - 1)
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send(b"a" * (MIB + 1))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await wait_until(lambda: len(env.backend.closes) == 1)
    assert env.backend.closes[0][0] == 1009  # the backend was told too, with a close frame


async def test_client_close_code_reaches_backend(env: Env) -> None:
    async with connect(env.url()) as ws:
        await ws.send("x")
        await ws.recv()
        await ws.close(4000, "bye")
    await wait_until(lambda: len(env.backend.closes) == 1)
    assert env.backend.closes[0] == (4000, "bye")


async def test_backend_close_code_reaches_client(env: Env) -> None:
    async with connect(env.url("/echo/1.0.0/close")) as ws:
        await ws.send("x")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "backend says bye")


async def test_backend_drop_gives_client_1011(env: Env) -> None:
    async with connect(env.url("/echo/1.0.0/drop")) as ws:
        await ws.send("x")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011


async def test_client_drop_closes_backend_within_a_second(env: Env) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    writer.write(upgrade("/echo/1.0.0"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    dropped = time.monotonic()
    writer.transport.abort()
    await wait_until(lambda: len(env.backend.closed_at) == 1, within=2)
    took = env.backend.closed_at[0] - dropped
    print(f"\nclient dropped -> backend closed: {took * 1000:.0f} ms")
    assert took < PROMPT
    await wait_until(lambda: active(env.router) == 0)


async def test_wss_listener(env: Env) -> None:
    assert env.ca is not None
    ctx = ssl.create_default_context(cafile=str(env.ca))
    async with connect(f"wss://localhost:{env.tls_port}/echo/1.0.0", ssl=ctx) as ws:
        await ws.send("secure")
        assert await ws.recv() == "secure"


async def test_shutdown_closes_relays_with_1001(env: Env) -> None:
    async with connect(env.url()) as ws:
        await ws.send("x")
        await ws.recv()
        await env.router.shutdown(drain=1.0)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


# -- handshake failures --------------------------------------------------------------------


@python_relay_only
async def test_dribbling_client_is_cut_off_while_others_connect(env: Env) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    started = time.monotonic()
    for byte in b"GET /echo/1.0.0 HTTP/1.1\r\n":
        writer.write(bytes([byte]))
        if time.monotonic() - started > 0.2:
            break
        await asyncio.sleep(0.01)
    async with connect(env.url()) as ws:  # the listener is still responsive
        await ws.send("ok")
        assert await ws.recv() == "ok"
    raw = await asyncio.wait_for(reader.read(-1), 3)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 2.0
    writer.close()


@python_relay_only
async def test_no_route_is_404(env: Env) -> None:
    status, headers, body = await raw_request(env.port, upgrade("/nope/1.0.0"))
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "code": 404,
        "message": "Not Found",
        "description": "No matching resource found for the API request",
    }
    assert env.enforcer.requests == []  # not asked: nothing matched


@python_relay_only
async def test_enforcer_deny_status_and_body(env: Env) -> None:
    status, _, body = await raw_request(
        env.port, upgrade("/echo/1.0.0", "Authorization: Bearer deny")
    )
    assert status == 403
    payload = json.loads(body)
    assert payload["code"] == 900910
    assert "Scope validation failed" in payload["description"]
    assert env.backend.paths == []  # the backend was never contacted


@python_relay_only
async def test_backend_unreachable_is_502(env: Env) -> None:
    status, _, body = await raw_request(env.port, upgrade("/echo/1.0.0/dead"))
    assert status == 502
    assert json.loads(body)["code"] == 101503


@python_relay_only
async def test_sandbox_key_selects_sandbox_url_or_401(env: Env) -> None:
    async with connect(
        env.url("/echo/1.0.0/sandboxed"), additional_headers={"Authorization": "Bearer sandbox"}
    ) as ws:
        await ws.send("s")
        assert await ws.recv() == "s"
    assert env.backend.paths[-1] == "/sb"
    status, _, body = await raw_request(
        env.port, upgrade("/echo/1.0.0", "Authorization: Bearer sandbox")
    )
    assert status == 401
    assert json.loads(body)["description"] == (
        "Sandbox key is not allowed: the API has no sandbox endpoint"
    )


@python_relay_only
async def test_bad_version_is_426(env: Env) -> None:
    status, headers, _ = await raw_request(
        env.port, upgrade("/echo/1.0.0").replace(b"Version: 13", b"Version: 8")
    )
    assert status == 426 and headers["sec-websocket-version"] == "13"


@python_relay_only
async def test_dot_dot_path_is_400(env: Env) -> None:
    status, _, _ = await raw_request(env.port, upgrade("/echo/1.0.0/../x"))
    assert status == 400


@python_relay_only
async def test_plain_get_is_404_json(env: Env) -> None:
    status, _, body = await raw_request(env.port, b"GET /echo/1.0.0 HTTP/1.1\r\n\r\n")
    assert status == 404 and json.loads(body)["code"] == 404


@python_relay_only
async def test_oversized_head_is_431(env: Env) -> None:
    status, _, _ = await raw_request(env.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000)
    assert status == 431


@python_relay_only
async def test_enforcer_unreachable_is_503(env: Env) -> None:
    router = Router(RouterConfig(), env.store, EnforcerClient(f"127.0.0.1:{free_port()}", 1.0))
    port = await router.listen("127.0.0.1", 0)
    try:
        status, _, body = await raw_request(port, upgrade("/echo/1.0.0"))
    finally:
        await router.shutdown(drain=0)
    assert status == 503 and json.loads(body)["code"] == 503


# -- health, ready, testkey ----------------------------------------------------------------


@python_relay_only
async def test_health_and_ready(env: Env) -> None:
    status, _, body = await raw_request(env.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, json.loads(body)) == (200, {"status": "healthy"})
    status, _, _ = await raw_request(env.port, b"GET /ready HTTP/1.1\r\n\r\n")
    assert status == 200
    fresh = Router(RouterConfig(), RouteStore(), EnforcerClient("127.0.0.1:1"))
    port = await fresh.listen("127.0.0.1", 0)
    try:
        status, _, _ = await raw_request(port, b"GET /ready HTTP/1.1\r\n\r\n")
        assert status == 503
        fresh.routes.apply("v1", [])
        status, _, body = await raw_request(port, b"GET /ready HTTP/1.1\r\n\r\n")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
    finally:
        await fresh.shutdown(drain=0)


@python_relay_only
async def test_testkey_is_forwarded(env: Env) -> None:
    body = b"scopes=read"
    status, headers, answer = await raw_request(
        env.port,
        b"POST /testkey?x=1 HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Basic YWRtaW46YWRtaW4=\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    assert status == 201 and headers["content-type"] == "application/json"
    assert headers["retry-after"] == "7"  # the enforcer's backoff reaches the client
    got = json.loads(answer)
    assert got == {
        "line": "POST /testkey?x=1 HTTP/1.1",
        "authorization": "Basic YWRtaW46YWRtaW4=",
        # the address the router accepted, never the one the client claims
        "forwarded": "127.0.0.1",
        "body": "scopes=read",
    }


def active(router: Router) -> float:
    """Relayed connections as /metrics reports them, the same on both relay paths."""
    return active_connections(router.metrics_text().decode())


async def wait_until(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
