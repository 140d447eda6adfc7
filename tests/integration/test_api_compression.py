"""Issue 10 item 11, per API: the whole stack as real processes with the router's gateway-wide
``WSGATE_ROUTER_COMPRESSION=passthrough``, and two API projects deployed with the CLI
(``wsgate mg deploy api``) to the same backend, one with the WSO2 additional property
``wsgate.compression: strip`` in its api.yaml. The python ``websockets`` client (compression on
by default) sends a 2 MiB message that deflates to a few KiB: the stripped API refuses it with
1009 (its backend was never offered permessage-deflate), the other one relays it compressed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import Stack, handshake, start_stack
from tests.integration.test_router_streaming import MIB, Backend

pytestmark = pytest.mark.integration

TOPIC = "/1.0.0/notifications"


@dataclass
class Setup:
    stack: Stack
    backend: Backend
    token: str


def _deploy(stack: Stack, name: str, context: str, backend: Backend, mode: str | None) -> None:
    project = stack.project_copy(name, context, endpoint=f"ws://127.0.0.1:{backend.port}")
    if mode is not None:
        api = yaml.safe_load((project / "api.yaml").read_text())
        api["data"]["additionalProperties"] = [
            {"name": "team", "value": "streaming", "display": True},
            {"name": "wsgate.compression", "value": mode, "display": False},
        ]
        (project / "api.yaml").write_text(yaml.safe_dump(api, sort_keys=False))
    stack.mg_ok("deploy", "api", "-f", str(project), "-e", "dev", "-k", "-o")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    backend = Backend()  # echoes; accepts permessage-deflate and any message size
    backend.start()
    base = tmp_path_factory.mktemp("compression")
    try:
        with start_stack(base, {"WSGATE_ROUTER_COMPRESSION": "passthrough"}) as stack:
            stack.login()
            _deploy(stack, "Squeezed", "/squeezed", backend, "strip")
            _deploy(stack, "Loose", "/loose", backend, None)
            token = stack.testkey("read:notifications")
            for context in ("/squeezed", "/loose"):
                deadline = time.monotonic() + 10
                while handshake(stack.ws + context + TOPIC, token).status != 101:
                    assert time.monotonic() < deadline, f"{context} never became live"
                    time.sleep(0.05)
            yield Setup(stack, backend, token)
    finally:
        backend.close()


async def _send_big(setup: Setup, context: str) -> tuple[str, str, object]:
    """Send 2 MiB of one letter with the client's default compression; the extensions the
    client and the backend negotiated, and the echo's length or the close (code, reason)."""
    headers = {"Authorization": f"Bearer {setup.token}"}
    url = setup.stack.ws + context + TOPIC
    before = len(setup.backend.extensions)
    outcome: object
    async with connect(url, additional_headers=headers, open_timeout=20, max_size=None) as ws:
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else ""
        await ws.send(b"a" * (2 * MIB))
        try:
            outcome = len(await asyncio.wait_for(ws.recv(), 30))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "no close frame from the router"
            outcome = (exc.rcvd.code, exc.rcvd.reason)
    # the router opened the backend connection before its 101; the backend's handler records
    # what was negotiated when it starts, in the backend's own thread
    deadline = time.monotonic() + 10
    while len(setup.backend.extensions) <= before:
        assert time.monotonic() < deadline, "the backend never saw the connection"
        await asyncio.sleep(0.01)
    return negotiated, setup.backend.extensions[before], outcome


def test_the_apis_strip_property_refuses_a_compressible_2_mib_message_with_1009(
    setup: Setup,
) -> None:
    negotiated, backend_side, outcome = asyncio.run(_send_big(setup, "/squeezed"))
    print("stripped API:", repr(negotiated), repr(backend_side), outcome)
    assert "permessage-deflate" not in negotiated
    assert backend_side == ""  # the backend was never offered compression
    assert isinstance(outcome, tuple) and outcome[0] == 1009, outcome


def test_an_api_without_it_follows_the_routers_passthrough(setup: Setup) -> None:
    """The same router, backend and message: only the API's property differs."""
    negotiated, backend_side, outcome = asyncio.run(_send_big(setup, "/loose"))
    print("passthrough API:", repr(negotiated), repr(backend_side), outcome)
    assert "permessage-deflate" in negotiated
    assert "permessage-deflate" in backend_side
    assert outcome == 2 * MIB
