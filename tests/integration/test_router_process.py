"""User story: an operator runs `wsgate router` as its own process.

Before any adapter is reachable the router is healthy but not ready, answers upgrades with JSON
errors and survives garbage; once a real adapter streams its (empty) snapshot it becomes ready;
SIGTERM stops it with exit code 0. The full chain (API deployed, token, echo) is proven by
tests/integration/test_e2e_*.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from pathlib import Path

import httpx
import pytest

from tests.procs import free_port, http_ok, port_open, running, wait_for
from tests.relay_paths import check_router, native_import_error, reported, require

pytestmark = pytest.mark.integration


def router_env(
    data_dir: Path, xds_port: int, relay: str = "python"
) -> tuple[dict[str, str], int, int]:
    port, tls_port = free_port(), free_port()
    env = {
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_ROUTER_HOST": "127.0.0.1",
        "WSGATE_ROUTER_PORT": str(port),
        "WSGATE_ROUTER_TLS_PORT": str(tls_port),
        "WSGATE_XDS_ADDRESS": f"127.0.0.1:{xds_port}",
        "WSGATE_ENFORCER_ADDRESS": f"127.0.0.1:{free_port()}",
        "WSGATE_ENFORCER_HTTP_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
        "WSGATE_RELAY": relay,
    }
    return env, port, tls_port


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


UPGRADE = (
    b"GET /echo/1.0.0 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def test_router_alone_is_healthy_not_ready_and_stops_cleanly(
    tmp_path: Path, relay_path: str
) -> None:
    env, port, tls_port = router_env(tmp_path / "data", free_port(), relay_path)
    with running(
        "router", ["router"], env, tmp_path, lambda: port_open(port) and port_open(tls_port)
    ) as router:
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "healthy"}
        assert httpx.get(f"https://127.0.0.1:{tls_port}/health", verify=False).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 503
        answer = raw(port, UPGRADE)
        assert answer.startswith(b"HTTP/1.1 404 ")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == 404
        assert raw(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        # /testkey with the enforcer down: a JSON 503, not a crash
        assert httpx.post(f"http://127.0.0.1:{port}/testkey").status_code == 503
        assert router.alive()
        check_router(port, relay_path)
        assert router.stop() == 0
    assert "router shutting down" in router.log()


def test_router_becomes_ready_from_a_real_adapter(tmp_path: Path, relay_path: str) -> None:
    data_dir = tmp_path / "data"
    xds_port = free_port()
    rest_port = free_port()
    adapter_env = {
        "WSGATE_ADAPTER_HOST": "127.0.0.1",  # admin:admin is refused beyond loopback
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_ADAPTER_REST_PORT": str(rest_port),
        "WSGATE_ADAPTER_XDS_PORT": str(xds_port),
        "WSGATE_ADAPTER_DEPLOY_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env, port, _ = router_env(data_dir, xds_port, relay_path)
    with (
        running(
            "adapter",
            ["adapter"],
            adapter_env,
            tmp_path,
            lambda: http_ok(f"https://127.0.0.1:{rest_port}/health"),
        ),
        running("router", ["router"], env, tmp_path, lambda: port_open(port)) as router,
    ):
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 20, "router /ready")
        assert httpx.get(f"http://127.0.0.1:{port}/ready").json() == {"status": "ready"}
        assert raw(port, UPGRADE).startswith(b"HTTP/1.1 404 ")  # ready, but nothing deployed
    assert router.popen.returncode == 0


# -- which relay runs: one truth in the startup log and on /metrics ----------------------------

#: A startup line naming the path, e.g. "relay: native (router._core)" or "relay path=python".
RELAY_LINE = r"(?i)\brelay(?:[ _]path)?\s*[:=]\s*\"?{path}\b"


@pytest.mark.parametrize("setting", ["python", "native", "auto"])
def test_the_active_relay_path_is_in_the_startup_log_and_on_metrics(
    tmp_path: Path, setting: str
) -> None:
    """WSGATE_RELAY=python|native|auto: the router says which relay it runs when it starts and
    exports it as wsgate_router_relay_info{path=...} 1 (auto = native when router._core
    imports). Needs the native core's merge (issue 11): until then the log line and the metric
    do not exist and this fails on purpose."""
    native_built = native_import_error() is None
    expected = {"auto": "native" if native_built else "python"}.get(setting, setting)
    if expected == "native":
        require("native")
    env, port, _ = router_env(tmp_path / "data", free_port(), setting)
    line = RELAY_LINE.format(path=expected)
    with running("router", ["router"], env, tmp_path, lambda: port_open(port)) as router:
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        with contextlib.suppress(TimeoutError):  # the line may follow the port by a moment
            wait_for(lambda: re.search(line, router.log()) is not None, 5, "the relay line")
        startup = router.log()
    assert reported(page) == expected, (
        f"WSGATE_RELAY={setting}: /metrics should export "
        f'wsgate_router_relay_info{{path="{expected}"}} 1; relay lines on the page: '
        f"{[line for line in page.splitlines() if 'relay' in line]}"
    )
    assert re.search(line, startup), (
        f"WSGATE_RELAY={setting}: no startup line naming relay {expected!r}:\n{startup[-3000:]}"
    )
