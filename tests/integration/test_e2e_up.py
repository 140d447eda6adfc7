"""`wsgate up` (what `make run` runs): everything starts, the sample chat API answers through the
router, the printed commands work, SIGTERM stops every child, and a second start reuses the API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import ADMIN_BASIC, distinct_free_ports, handshake
from tests.procs import REPO, wait_for
from wsgate.stack import Ports

pytestmark = pytest.mark.integration

READY_MARK = "wsgate is up"
START_LIMIT = 150.0


@dataclass
class UpProcess:
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed by wsgate up:\n{self.output()[-6000:]}")


def _start_up(ports: Ports, data_dir: Path) -> UpProcess:
    flags = {
        "--cp-port": ports.cp,
        "--adapter-port": ports.adapter_rest,
        "--xds-port": ports.adapter_xds,
        "--deploy-port": ports.adapter_deploy,
        "--enforcer-port": ports.enforcer_grpc,
        "--enforcer-http-port": ports.enforcer_http,
        "--router-port": ports.router,
        "--router-tls-port": ports.router_tls,
        "--echo-port": ports.echo,
    }
    argv = [sys.executable, "-m", "wsgate", "up", "--data-dir", str(data_dir)]
    for flag, port in flags.items():
        argv += [flag, str(port)]
    popen = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    up = UpProcess(popen)

    def collect() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            up.lines.append(line.rstrip("\n"))

    threading.Thread(target=collect, daemon=True).start()
    return up


def _stop(up: UpProcess) -> int:
    if up.popen.poll() is None:
        up.popen.send_signal(signal.SIGTERM)
    try:
        return up.popen.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(up.popen.pid, signal.SIGKILL)
        up.popen.wait()
        raise AssertionError(f"wsgate up ignored SIGTERM:\n{up.output()[-4000:]}") from None


def _child_pids(parent: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == parent:
                found.append(int(status.parent.name))
    return found


def _printed_app_token(up: UpProcess) -> str:
    """Run the last ``APP_TOKEN=$(curl ...)`` line `wsgate up` printed, in bash, as a user would."""
    line = [text for text in up.lines if text.startswith("APP_TOKEN=$(curl")][-1]
    result = subprocess.run(
        ["bash", "-c", f'{line}\nprintf %s "$APP_TOKEN"'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    token = result.stdout.strip()
    assert result.returncode == 0 and token.count(".") == 2, (line, result.stdout, result.stderr)
    return token


@pytest.fixture(scope="module")
def ports() -> Ports:
    return distinct_free_ports()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("up-data")


@pytest.fixture
def running_up(ports: Ports, data_dir: Path) -> Iterator[UpProcess]:
    up = _start_up(ports, data_dir)
    try:
        up.wait_for(READY_MARK, START_LIMIT)
        yield up
    finally:
        if up.popen.poll() is None:
            _stop(up)


def _chat_apis(ports: Ports, data_dir: Path) -> list[dict[str, object]]:
    answer = httpx.get(
        f"https://localhost:{ports.cp}/api/am/publisher/v4/apis",
        params={"query": "name:ChatWebSocket"},
        headers={"Authorization": ADMIN_BASIC},
        verify=ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.pem")),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return [a for a in answer.json()["list"] if a["name"] == "ChatWebSocket"]


def test_up_serves_the_chat_api_and_prints_the_commands(
    running_up: UpProcess, ports: Ports, data_dir: Path
) -> None:
    text = running_up.output()
    assert f"wsgate mg add env dev --adapter https://localhost:{ports.adapter_rest}" in text
    assert f"ws://localhost:{ports.router}/chat/1.0.0/rooms/lobby" in text
    for name in ("adapter", "router", "enforcer", "control-plane", "echo-backend"):
        assert any(line.startswith(name) and " | " in line for line in running_up.lines), name
    lobby = f"ws://localhost:{ports.router}/chat/1.0.0/rooms/lobby"
    # The application token, fetched with the command exactly as printed.
    result = handshake(lobby, _printed_app_token(running_up), "hi")
    assert result.echoed == "hi"
    assert len(_chat_apis(ports, data_dir)) == 1
    # A test key does not open the control-plane API (issue 12: test keys are for CLI APIs).
    testkey = httpx.post(
        f"https://localhost:{ports.router_tls}/testkey",
        headers={"Authorization": ADMIN_BASIC},
        data={"scope": ""},
        verify=False,
    ).text.strip()
    refused = handshake(lobby, testkey, "hi")
    assert refused.status == 401 and b"Test keys are not accepted" in refused.body


def test_sigterm_stops_every_child_and_exits_zero(ports: Ports, data_dir: Path) -> None:
    up = _start_up(ports, data_dir)
    try:
        up.wait_for(READY_MARK, START_LIMIT)
        children = _child_pids(up.popen.pid)
        assert len(children) == 5, children
    finally:
        code = _stop(up)
    assert code == 0, up.output()[-4000:]

    def alive() -> list[int]:
        return [pid for pid in children if Path(f"/proc/{pid}").exists()]

    with contextlib.suppress(TimeoutError):  # reaped by now, normally; the assert says which
        wait_for(lambda: not alive(), 10, "the children to be gone")
    assert alive() == [], f"children still running after wsgate up exited: {alive()}"
    # Second start on the same data dir: the sample API is reused, not created again.
    again = _start_up(ports, data_dir)
    try:
        again.wait_for(READY_MARK, START_LIMIT)
        assert "already deployed" in again.output()
        assert len(_chat_apis(ports, data_dir)) == 1
        # The reused application's secret was regenerated: the new printed command works.
        lobby = f"ws://localhost:{ports.router}/chat/1.0.0/rooms/lobby"
        assert handshake(lobby, _printed_app_token(again), "again").echoed == "again"
    finally:
        assert _stop(again) == 0


def test_a_crashed_child_is_restarted(running_up: UpProcess, ports: Ports) -> None:
    echo_pids = [
        pid
        for pid in _child_pids(running_up.popen.pid)
        if b"echo-backend" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(echo_pids) == 1
    os.kill(echo_pids[0], signal.SIGKILL)
    running_up.wait_for("echo-backend exited with status -9; restarting in 1 s", 10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{ports.echo}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"echo backend not back:\n{running_up.output()[-3000:]}")


def test_up_refuses_to_start_when_a_port_is_taken(ports: Ports, data_dir: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        argv = ["up", "--data-dir", str(data_dir), "--router-port", str(taken)]
        result = subprocess.run(
            [sys.executable, "-m", "wsgate", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {taken} (router) is already in use" in result.stderr
