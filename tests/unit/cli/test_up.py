"""`wsgate up`: port resolution, busy-port detection, instructions, the supervisor's restarts."""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.procs import eventually
from wsgate import sample_api, up
from wsgate.stack import (
    Ports,
    busy_ports,
    component_env,
    components,
    duplicate_ports,
    port_in_use,
)
from wsgate.supervise import BACKOFF_MAX, Child, LineRelay, next_backoff, prefixed

REPO = Path(__file__).resolve().parents[3]


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    delays = [1.0]
    while delays[-1] < BACKOFF_MAX:
        delays.append(next_backoff(delays[-1]))
    assert delays == [1, 2, 4, 8, 16, 30]
    assert next_backoff(30) == 30


def test_output_lines_are_prefixed_with_the_child_name() -> None:
    assert prefixed("router", 8, b"hello\r\n") == b"router   | hello\n"
    assert prefixed("adapter", 7, b"x") == b"adapter | x\n"


def test_output_read_in_any_chunks_comes_out_as_the_same_prefixed_lines() -> None:
    text = b"one\r\ntwo\n\nthree has | bars\n" + b"x" * 50 + b"\nlast without newline"
    want = b"".join(prefixed("router", 8, line) for line in text.splitlines(keepends=True))
    rng = random.Random(11)
    for _ in range(200):
        relay, out, rest = LineRelay("router", 8), b"", text
        while rest:
            size = rng.randint(1, 12)
            out += relay.feed(rest[:size])
            rest = rest[size:]
        assert out + relay.end() == want
    # a line longer than the limit is cut rather than held forever
    relay = LineRelay("r", 1, limit=10)
    assert relay.feed(b"a" * 25) == b"r | " + b"a" * 25 + b"\n"
    assert relay.feed(b"ok\n" + b"b" * 12) == b"r | ok\nr | " + b"b" * 12 + b"\n"
    assert relay.end() == b""


def test_flags_override_env_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_ROUTER_PORT", "19090")
    args = up.parse_args(["--cp-port", "1443", "--echo-port", "1765"])
    ports = up.resolve_ports(up.UpSettings(), args)
    assert (ports.cp, ports.echo, ports.router, ports.adapter_rest) == (1443, 1765, 19090, 9843)


def test_component_env_wires_addresses_from_ports(tmp_path: Path) -> None:
    env = component_env(Ports(adapter_xds=1, enforcer_grpc=2, adapter_deploy=3), tmp_path)
    assert env["WSGATE_XDS_ADDRESS"] == "localhost:1"
    assert env["WSGATE_ENFORCER_ADDRESS"] == "localhost:2"
    assert env["WSGATE_CP_ADAPTER_ADDRESS"] == "localhost:3"
    assert env["WSGATE_DATA_DIR"] == str(tmp_path)
    # The local stack keeps its admin:admin users on this machine (wsgate_common/safety.py).
    for name in ("CP", "ADAPTER", "ENFORCER", "ROUTER"):
        assert env[f"WSGATE_{name}_HOST"] == "127.0.0.1"
    names = [c.name for c in components(Ports())]
    assert names.index("adapter") < names.index("router")


def test_a_listening_port_is_reported_busy() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
        assert busy_ports(Ports(router=port)) == [("router", port)]
    assert not port_in_use(port)


def test_up_fails_early_naming_a_taken_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code = up.main(["--data-dir", str(tmp_path), "--router-port", str(port)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"port {port} (router) is already in use" in err
    assert "--router-port" in err


def test_up_refuses_one_port_for_two_listeners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert duplicate_ports(Ports(router=1, echo=1)) == {1: ["router", "echo"]}
    assert duplicate_ports(Ports()) == {}
    assert up.main(["--data-dir", str(tmp_path), "--router-port", "8765"]) == 1
    assert "one port given to several listeners" in capsys.readouterr().err


def test_instructions_use_the_real_ports() -> None:
    text = up.instructions(Ports(adapter_rest=1111, router=2222, router_tls=3333))
    assert "wsgate mg add env dev --adapter https://localhost:1111" in text
    assert "wsgate mg login dev -u admin -p admin -k" in text
    assert "wsgate mg deploy api -f examples/EchoWebSocket-1.0.0 -e dev -k" in text
    assert "https://localhost:3333/testkey" in text
    assert 'ws://localhost:2222/echowebsocket/1.0.0/notifications -H "Authorization:Bearer' in text
    assert "ws://localhost:2222/chat/1.0.0/rooms/lobby" in text
    assert "npx wscat -n -c wss://localhost:3333/chat/1.0.0/rooms/lobby" in text
    assert ".venv/bin/wsgate" in text


def test_instructions_give_the_sample_application_token_command() -> None:
    keys = sample_api.SampleKeys("app-1", "ck-123", "cs-456")
    text = up.instructions(Ports(cp=4444, router=2222), keys=keys)
    line = next(line for line in text.splitlines() if line.startswith("APP_TOKEN="))
    assert "curl -sk -u ck-123:cs-456 -d grant_type=client_credentials" in line
    assert "https://localhost:4444/oauth2/token" in line
    chat = [line for line in text.splitlines() if "/chat/1.0.0/" in line]
    assert chat and all("$APP_TOKEN" in line for line in chat)
    assert not any("testkey" in line for line in chat)
    assert "?access_token=$APP_TOKEN" in text
    assert "-s choreo-oauth2-key -s $APP_TOKEN" in text


def test_instructions_without_the_sample_do_not_promise_it() -> None:
    text = up.instructions(Ports(), sample=False)
    assert "chat" not in text
    assert "wsgate mg deploy api -f examples/EchoWebSocket-1.0.0 -e dev -k" in text


def test_sample_body_points_at_this_stacks_echo_backend() -> None:
    body = sample_api.load_body(REPO / "examples" / "chat-api.json", 4321)
    assert body["endpointConfig"]["production_endpoints"]["url"] == "ws://localhost:4321"
    assert body["endpointConfig"]["sandbox_endpoints"]["url"] == "ws://localhost:4321"
    assert (body["name"], body["context"], body["version"], body["type"]) == (
        "ChatWebSocket",
        "/chat",
        "1.0.0",
        "WS",
    )
    assert {op["target"] for op in body["operations"]} == {"/rooms/{roomId}"}


def test_existing_api_and_deployed_revision_are_recognised() -> None:
    listing = {"list": [{"id": "1", "name": "ChatWebSocket", "version": "2.0.0"}]}
    assert sample_api._find(listing, "ChatWebSocket", "1.0.0") is None
    assert sample_api._find(listing, "ChatWebSocket", "2.0.0") == listing["list"][0]
    assert not sample_api._deployed({"count": 1, "list": [{"id": "r", "deploymentInfo": []}]})
    assert sample_api._deployed({"list": [{"deploymentInfo": [{"name": "Default"}]}]})


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


async def test_a_crashing_child_is_restarted_with_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    argv = _script(
        tmp_path,
        f"import pathlib\np = pathlib.Path({str(marker)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\nprint('boom')\n"
        "raise SystemExit(3)\n",
    )
    delays: list[float] = []

    async def fast_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    out = io.BytesIO()
    child = Child("flaky", argv, {}, out=out, sleep=fast_sleep)
    task = asyncio.create_task(child.run())
    deadline = time.monotonic() + 20
    while child.restarts < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await child.stop()
    await asyncio.wait_for(task, 10)
    assert delays[:3] == [1, 2, 4]
    assert marker.read_text().startswith("xxx")
    assert b"flaky          | boom\n" in out.getvalue()


async def test_stop_terminates_then_kills_a_stubborn_child(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        "import signal, time, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n",
    )
    out = io.BytesIO()
    child = Child("stubborn", argv, {}, out=out)
    task = asyncio.create_task(child.run())
    deadline = time.monotonic() + 10
    while b"ready" not in out.getvalue() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    started = time.monotonic()
    code = await child.stop(grace=0.5)
    await asyncio.wait_for(task, 5)
    assert code == -9
    assert time.monotonic() - started < 5
    assert child.restarts == 0


def test_chat_api_example_is_valid_json() -> None:
    data = json.loads((REPO / "examples" / "chat-api.json").read_text())
    assert data["endpointConfig"]["production_endpoints"]["url"] == "ws://localhost:8765"


async def test_a_child_failing_three_health_checks_in_a_row_is_restarted(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    argv = _script(
        tmp_path,
        f"import pathlib, time\np = pathlib.Path({str(marker)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\ntime.sleep(60)\n",
    )
    answers = iter([False, True, False, False, False])  # one success resets the count
    checks = 0

    async def health() -> bool:
        nonlocal checks
        checks += 1
        return next(answers, True)

    async def fast_sleep(seconds: float) -> None:
        await asyncio.sleep(0.05)

    child = Child("hung", argv, {}, out=io.BytesIO(), sleep=fast_sleep, health=health)
    task = asyncio.create_task(child.run())
    deadline = time.monotonic() + 20
    while child.health_restarts < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert child.health_restarts == 1
    assert checks == 5  # restarted on the 5th check: the 3rd failure in a row, not before
    while child.restarts < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    # The restarted child has started (and written its mark) before it is stopped.
    await eventually(lambda: marker.exists() and marker.read_text().startswith("xx"), 20)
    await child.stop()
    await asyncio.wait_for(task, 10)
    assert marker.read_text().startswith("xx")


def test_replicas_get_offset_ports_round_robin_labels_and_enforcers_of_their_label() -> None:
    plan = up.plan_replicas(Ports(), routers=3, enforcers=2, labels=["Default", "edge"])
    by_name = {r.name: r for r in plan}
    assert [r.name for r in plan] == [
        "enforcer-1",
        "enforcer-2",
        "router-1",
        "router-2",
        "router-3",
    ]
    assert (by_name["enforcer-2"].port, by_name["enforcer-2"].second_port) == (8091, 8092)
    assert (by_name["router-3"].port, by_name["router-3"].second_port) == (9110, 9115)
    assert [by_name[f"router-{i}"].label for i in (1, 2, 3)] == ["Default", "edge", "Default"]
    assert by_name["router-2"].env["WSGATE_ENFORCER_ADDRESS"] == "localhost:8091"
    assert by_name["router-3"].env["WSGATE_ENFORCER_ADDRESS"] == "localhost:8081"
    assert by_name["enforcer-2"].env["WSGATE_LABEL"] == "edge"
