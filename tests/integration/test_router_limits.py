"""User story: an operator relies on the router's limits and watches it through /metrics and
the analytics log, with the real adapter, enforcer and router processes.

The router runs with a short idle timeout, a connection limit of 3 and an analytics file.
The backend (not one of our components) runs in this test process: it echoes, or floods
50 MB at the /flood API. Finer limit tests (exact codes both ways, timings, buffer sizes)
are in-process in tests/unit/router/test_limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.backends import ThreadedBackend
from tests.integration.conftest import Stack, distinct_free_ports
from tests.procs import REPO, http_ok, import_or_unavailable, running, wait_for
from tests.relay_paths import check_router, relay_env
from wsgate.stack import component_env, components
from wsgate_common.metrics import parse_samples
from wsgate_common.pki import ensure_pki

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
FLOOD_TOTAL = 50 * MIB
IDLE = 1.5
ECHO = "/echowebsocket/1.0.0/notifications"
FLOOD = "/flood/1.0.0/notifications"


@dataclass
class Backend(ThreadedBackend):
    """Echo backend, or a 50 MB flood for paths starting with /flood, on its own loop."""

    flooded: int = 0

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        try:
            if ws.request.path.startswith("/flood"):
                chunk = b"f" * (256 * 1024)
                while self.flooded < FLOOD_TOTAL:
                    await ws.send(chunk)
                    self.flooded += len(chunk)
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass


@dataclass
class Limited:
    stack: Stack
    backend: Backend
    token: str

    @property
    def router_pid(self) -> int:
        return self.stack.procs["router"].popen.pid

    def url(self, path: str) -> str:
        return self.stack.ws + path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def metrics(self, port: int) -> dict[str, float]:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert answer.status_code == 200
        return parse_samples(answer.text)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, relay_path: str) -> Iterator[Limited]:
    """Adapter, enforcer and a router on ``relay_path`` with tight limits (both relay paths)."""
    base = tmp_path_factory.mktemp("limits")
    backend = Backend()
    backend.start()
    ports = distinct_free_ports()
    data_dir, cli_home, work, logs = base / "data", base / "cli", base / "work", base / "logs"
    for folder in (data_dir, cli_home, work, logs):
        folder.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    ensure_pki(data_dir / "pki")
    env = {
        **component_env(ports, data_dir),
        "WSGATE_CLI_HOME": str(cli_home),
        "WSGATE_ROUTER_IDLE_TIMEOUT": str(IDLE),
        "WSGATE_ROUTER_MAX_CONNECTIONS": "3",
        "WSGATE_ROUTER_ANALYTICS_FILE": "analytics.jsonl",
        "PYTHONPATH": str(REPO),
        **relay_env(relay_path),
    }
    stack = Stack(ports, data_dir, cli_home, work, {**os.environ, **env})
    try:
        with contextlib.ExitStack() as procs:
            for component in components(ports):
                if component.name in ("adapter", "enforcer", "router"):  # our backend is here
                    url = component.ready_url
                    stack.procs[component.name] = procs.enter_context(
                        running(
                            component.name,
                            [component.command],
                            stack.env,
                            logs,
                            lambda url=url: http_ok(url),  # type: ignore[misc]
                            timeout=60,
                        )
                    )
            check_router(ports.router, relay_path)
            stack.login()
            echo = stack.project_copy(endpoint=f"ws://localhost:{backend.port}/echo")
            stack.mg_ok("deploy", "api", "-f", str(echo), "-e", "dev", "-k", "--override")
            flood = stack.project_copy(
                name="Flood", context="/flood", endpoint=f"ws://localhost:{backend.port}/flood"
            )
            stack.mg_ok("deploy", "api", "-f", str(flood), "-e", "dev", "-k", "--override")
            token = stack.testkey("read:notifications")
            limited = Limited(stack, backend, token)
            wait_for(lambda: _echoes(limited), 20, "the echo API to be live")
            yield limited
    finally:
        backend.close()


def _echoes(limited: Limited) -> bool:
    async def once() -> bool:
        async with connect(limited.url(ECHO), additional_headers=limited.headers) as ws:
            await ws.send("ping")
            return await asyncio.wait_for(ws.recv(), 5) == "ping"

    try:
        return asyncio.run(once())
    except (InvalidStatus, OSError, ConnectionClosed, TimeoutError):
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def analytics(limited: Limited) -> list[dict[str, object]]:
    path = limited.stack.data_dir / "analytics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_idle_connection_closed_and_pinging_one_kept(limited: Limited) -> None:
    async def scenario() -> tuple[int, str, float]:
        async with (
            connect(
                limited.url(ECHO), additional_headers=limited.headers, ping_interval=None
            ) as idle,
            connect(
                limited.url(ECHO), additional_headers=limited.headers, ping_interval=0.2
            ) as pinging,
        ):
            await idle.send("x")
            await idle.recv()
            quiet_from = time.monotonic()
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(idle.recv(), 15)
            after = time.monotonic() - quiet_from
            await asyncio.sleep(IDLE)  # the pinging one outlives two idle timeouts in all
            await pinging.send("still here")
            assert await asyncio.wait_for(pinging.recv(), 5) == "still here"
            assert info.value.rcvd is not None
            return info.value.rcvd.code, info.value.rcvd.reason, after

    code, reason, after = asyncio.run(scenario())
    assert (code, reason) == (1001, "idle timeout")
    assert IDLE * 0.9 <= after < IDLE * 4 + 2, after

    def idle_closed() -> list[dict[str, object]]:
        return [e for e in analytics(limited) if e.get("cause") == "idle timeout"]

    wait_for(lambda: len(idle_closed()) == 1, 10, "the idle close in the analytics file")
    event = idle_closed()[0]
    assert event["event"] == "connection_closed" and event["close_code"] == 1001
    assert event["closed_by"] == "router" and event["api"] == "EchoWebSocket:1.0.0"
    assert event["key_type"] == "PRODUCTION" and event["messages_up"] is not None


def test_connection_limit_refuses_the_fourth_with_503(limited: Limited) -> None:
    async def scenario() -> int:
        headers = limited.headers
        async with (
            connect(limited.url(ECHO), additional_headers=headers) as a,
            connect(limited.url(ECHO), additional_headers=headers) as b,
            connect(limited.url(ECHO), additional_headers=headers) as c,
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(limited.url(ECHO), additional_headers=headers):
                    pass
            body = json.loads(refused.value.response.body or b"{}")
            assert body["code"] == 503 and "connection limit (3)" in body["description"]
            for ws in (a, b, c):
                await ws.send("alive")
                assert await asyncio.wait_for(ws.recv(), 5) == "alive"
            return refused.value.response.status_code

    wait_for(
        lambda: (
            limited.metrics(limited.stack.ports.router)["wsgate_router_connections_active"] == 0
        ),
        10,
        "earlier connections to end",
    )
    assert asyncio.run(scenario()) == 503
    got = limited.metrics(limited.stack.ports.router)
    assert got['wsgate_router_handshakes_total{result="denied",status="503"}'] >= 1
    assert got['wsgate_router_handshakes_total{result="allowed",status="101"}'] >= 3


def test_slow_reader_does_not_grow_router_memory(limited: Limited) -> None:
    """The client stops reading while the backend floods 50 MB: the router's RSS stays flat."""

    before = rss_kib(limited.router_pid)
    request = (
        f"GET {FLOOD} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {limited.token}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", limited.stack.ports.router), timeout=10) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        # From here on the client reads nothing.
        peak = before
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(limited.router_pid))
            if limited.backend.flooded != last:
                last, still_since = limited.backend.flooded, time.monotonic()
            elif time.monotonic() - still_since > 1.5:
                break
            time.sleep(0.05)
        flooded = limited.backend.flooded
    assert flooded < FLOOD_TOTAL, "the backend was never held back"
    assert peak - before < 10 * 1024, f"router RSS grew {peak - before} KiB (from {before} KiB)"


def test_metrics_on_router_and_enforcer(limited: Limited) -> None:
    ports = limited.stack.ports
    assert _echoes(limited)
    router = limited.metrics(ports.router)
    assert router['wsgate_router_frames_total{direction="up"}'] > 0
    assert router["wsgate_router_handshake_seconds_count"] >= 1
    assert any(k.startswith("wsgate_router_xds_version_info{") for k in router)
    tls = httpx.get(f"https://127.0.0.1:{ports.router_tls}/metrics", verify=False, timeout=10)
    assert tls.status_code == 200 and "wsgate_router_connections_active" in tls.text
    enforcer = limited.metrics(ports.enforcer_http)
    assert enforcer['wsgate_enforcer_decisions_total{code="200",result="allowed"}'] >= 1
    assert enforcer["wsgate_enforcer_decision_seconds_count"] >= 1
    assert enforcer["wsgate_enforcer_watch_streams"] == 1  # the router's rules stream
    assert enforcer["wsgate_enforcer_api_policies"] == 2
    assert enforcer["wsgate_enforcer_xds_nacks_total"] == 0
    # /metrics no longer flushes the analytics: the file catches up within a flush interval.
    wait_for(lambda: any(e["event"] == "handshake" for e in analytics(limited)), 10, "handshakes")
    shakes = [e for e in analytics(limited) if e["event"] == "handshake"]
    assert all(e["client_ip"] == "127.0.0.1" for e in shakes)


def test_the_router_process_reports_its_relay_path(limited: Limited) -> None:
    """WSGATE_RELAY (default auto: the compiled core when built) shows in the startup log line
    and in /metrics, and traffic went through that path."""
    setting = limited.stack.env.get("WSGATE_RELAY", "auto")
    path = "python" if setting == "python" else "native"
    if path == "native":
        import_or_unavailable("router._core")  # under CI=true a missing build fails here
    got = limited.metrics(limited.stack.ports.router)
    assert got[f'wsgate_router_relay_info{{path="{path}"}}'] == 1
    assert _echoes(limited)
    log = limited.stack.procs["router"].log()
    assert f"(ws, {path} relay)" in log
