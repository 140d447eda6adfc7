"""The seed user stories, end to end through real processes.

Choreo Connect standalone mode: `mg add env` -> `mg login` -> `mg deploy api` -> a test key from
/testkey -> wscat through the router echoes. Choreo Connect with a control plane: create ->
publish -> revision -> deploy-revision on the publisher REST API, and the API is live within 1 s.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.integration.apim_flow import apim
from tests.integration.conftest import REPO, Stack, handshake, run_wscat, try_handshake
from tests.procs import PROMPT

pytestmark = pytest.mark.integration

NOTIFICATIONS = "/echowebsocket/1.0.0/notifications"


def _deploy_echo(stack: Stack) -> None:
    """The EchoWebSocket project deployed with the CLI (override: tests may run in any order)."""
    stack.login()
    project = stack.project_copy()
    stack.mg_ok("deploy", "api", "-f", str(project), "-e", "dev", "-k", "--override")


def _wait_live(url: str, token: str, limit: float = 5.0) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < limit:
        last = handshake(url, token)
        if last.status == 101:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{url} not live after {limit} s: {last}")


def test_cli_deploy_then_wscat_echoes_over_ws_and_wss(stack: Stack) -> None:
    """The standalone-mode seed, command by command as the docs show it."""
    out = stack.mg_ok("add", "env", "dev", "--adapter", stack.adapter_url)
    assert "dev" in out
    assert "Logged into 'dev'" in stack.mg_ok("login", "dev", "-u", "admin", "-p", "admin", "-k")
    project = stack.project_copy()  # examples/EchoWebSocket-1.0.0 on this stack's echo port
    assert "Successfully deployed" in stack.mg_ok(
        "deploy", "api", "-f", str(project), "-e", "dev", "-k", "--override"
    )
    token = stack.testkey("read:notifications")
    _wait_live(stack.ws + NOTIFICATIONS, token)

    header = f"Authorization:Bearer {token}"
    plain = run_wscat(["-c", stack.ws + NOTIFICATIONS, "-H", header, "-x", "hello", "-w", "1"])
    assert plain.returncode == 0, plain.stderr
    assert "hello" in plain.stdout.splitlines(), (plain.stdout, plain.stderr)

    secure = run_wscat(
        ["-n", "-c", stack.wss + NOTIFICATIONS, "-H", header, "-x", "hello over tls", "-w", "1"]
    )
    assert secure.returncode == 0, secure.stderr
    assert "hello over tls" in secure.stdout.splitlines(), (secure.stdout, secure.stderr)


def test_the_verbatim_example_folder_deploys_from_the_repository(stack: Stack) -> None:
    """`mg deploy api -f examples/EchoWebSocket-1.0.0` exactly, run from the repository."""
    stack.login()
    example = "examples/EchoWebSocket-1.0.0"
    out = stack.mg_ok("deploy", "api", "-f", example, "-e", "dev", "-k", "-o")
    assert "Successfully deployed" in out
    listing = json.loads(stack.mg_ok("get", "apis", "-e", "dev", "-k", "--format", "json"))
    names = [(a["apiName"], a["version"]) for a in listing["list"]]
    assert ("EchoWebSocket", "1.0.0") in names
    _deploy_echo(stack)  # back on this stack's echo port for the other tests


def test_websockets_client_echoes_text_and_binary_over_ws_and_wss(stack: Stack) -> None:
    _deploy_echo(stack)
    token = stack.testkey("read:notifications")
    _wait_live(stack.ws + NOTIFICATIONS, token)
    assert handshake(stack.ws + NOTIFICATIONS, token, "text").echoed == "text"
    assert handshake(stack.ws + NOTIFICATIONS, token, b"\x00\x01\xff").echoed == b"\x00\x01\xff"
    secure = handshake(stack.wss + NOTIFICATIONS, token, b"tls-bin", ca=stack.ca_cert)
    assert secure.echoed == b"tls-bin"

    async def many_frames() -> list[object]:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"}
        async with connect(stack.ws + NOTIFICATIONS, additional_headers=headers) as ws:
            for i in range(50):
                await ws.send(f"m{i}" if i % 2 else f"m{i}".encode())
            return [await asyncio.wait_for(ws.recv(), 5) for _ in range(50)]

    replies = asyncio.run(many_frames())
    assert replies == [f"m{i}" if i % 2 else f"m{i}".encode() for i in range(50)]


def test_publish_topic_without_scopes_needs_only_a_token(stack: Stack) -> None:
    _deploy_echo(stack)
    token = stack.testkey("")
    url = stack.ws + "/echowebsocket/1.0.0/rooms/lobby"
    _wait_live(url, token)
    assert handshake(url, token, "hi room").echoed == "hi room"


def test_mg_get_apis_lists_the_deployed_api(stack: Stack) -> None:
    _deploy_echo(stack)
    table = stack.mg_ok("get", "apis", "-e", "dev", "-k").splitlines()
    assert table[0].split() == ["NAME", "VERSION", "TYPE", "CONTEXT", "GATEWAY_ENVS", "OWNER"]
    rows = [line.split() for line in table[1:]]
    echo = [row for row in rows if row[0] == "EchoWebSocket"]
    assert echo, table
    assert echo[0][1:3] == ["1.0.0", "WS"]
    assert echo[0][3].startswith("/echowebsocket")
    assert echo[0][-1] == "cli"


def test_undeploy_makes_new_handshakes_404_within_a_second(stack: Stack) -> None:
    _deploy_echo(stack)
    token = stack.testkey("read:notifications")
    _wait_live(stack.ws + NOTIFICATIONS, token)
    out = stack.mg_ok("undeploy", "api", "-n", "EchoWebSocket", "-v", "1.0.0", "-e", "dev", "-k")
    assert "undeployed" in out
    undeployed_at = time.monotonic()
    status = None
    while time.monotonic() - undeployed_at < PROMPT:
        status = handshake(stack.ws + NOTIFICATIONS, token).status
        if status == 404:
            break
        time.sleep(0.02)
    print(f"\nundeploy -> new handshakes 404: {(time.monotonic() - undeployed_at) * 1000:.0f} ms")
    assert status == 404, f"still {status} {PROMPT:g} s after undeploy"
    listing = json.loads(stack.mg_ok("get", "apis", "-e", "dev", "-k", "--format", "json"))
    assert "EchoWebSocket" not in [a["apiName"] for a in listing.get("list", [])]
    again = stack.mg("undeploy", "api", "-n", "EchoWebSocket", "-v", "1.0.0", "-e", "dev", "-k")
    assert again.returncode == 1
    assert again.stderr.startswith("Error: ")


def test_control_plane_publish_reaches_the_backend_within_one_second(stack: Stack) -> None:
    """create -> Publish -> revision -> deploy-revision; measure until the first echo."""
    body = json.loads((REPO / "examples" / "chat-api.json").read_text())
    body["name"], body["context"] = "ControlPlaneChat", "/cpchat"
    for key in ("production_endpoints", "sandbox_endpoints"):
        body["endpointConfig"][key] = {"url": f"ws://localhost:{stack.ports.echo}"}
    url = stack.ws + "/cpchat/1.0.0/rooms/lobby"
    with stack.cp_client() as cp, apim(stack) as am:
        created = cp.post("/apis", json=body)
        assert created.status_code == 201, created.text
        api_id = created.json()["id"]
        published = cp.post("/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"})
        assert published.status_code == 200, published.text
        # A control-plane API takes an application's token (test keys are for CLI APIs).
        _, _, keys = am.subscribed_app("ControlPlaneChatApp", [api_id])
        token = am.token(keys, scope="")
        revision = cp.post(f"/apis/{api_id}/revisions", json={"description": "e2e"})
        assert revision.status_code == 201, revision.text
        assert handshake(url, token).status == 404  # not deployed yet
        deployed = cp.post(
            f"/apis/{api_id}/deploy-revision",
            params={"revisionId": revision.json()["id"]},
            json=[{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}],
        )
        deployed_at = time.monotonic()
        assert deployed.status_code in (200, 201), deployed.text

    async def first_echo() -> float:
        while time.monotonic() - deployed_at < 5:
            if (await try_handshake(url, token, "cp")).echoed == "cp":
                return time.monotonic() - deployed_at
            await asyncio.sleep(0.01)
        raise AssertionError("not live 5 s after deploy-revision")

    took = asyncio.run(first_echo())
    print(f"\ncontrol plane deploy-revision -> first echo through the router: {took * 1000:.0f} ms")
    assert took < PROMPT, f"took {took:.2f} s"


def test_health_and_ready_on_every_component(stack: Stack) -> None:
    urls = [
        f"https://localhost:{stack.ports.cp}/health",
        f"https://localhost:{stack.ports.adapter_rest}/health",
        f"http://localhost:{stack.ports.enforcer_http}/health",
        f"http://localhost:{stack.ports.router}/health",
        f"https://localhost:{stack.ports.router_tls}/health",
        f"http://localhost:{stack.ports.router}/ready",
        f"http://localhost:{stack.ports.enforcer_http}/ready",
    ]
    for url in urls:
        answer = httpx.get(url, verify=stack.tls(), timeout=5)
        assert answer.status_code == 200, (url, answer.text)
