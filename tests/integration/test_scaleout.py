"""One adapter feeding three routers and two enforcers on two labels, all real processes.

Label "Default": routers r1 and r2, enforcer e1; label "edge": router r3, enforcer e2. Routers
and enforcers start before the adapter (not ready until it is up); APIs land only on their
label; the adapter killed with SIGKILL leaves live connections and new handshakes working on
the last good config; the adapter restarted on the same data dir (the APIs were deployed as
CLI-owned, so they are persisted) is found again and a new API reaches the right routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.procs import Proc, free_port, http_ok, wait_for
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc

pytestmark = pytest.mark.integration

EDGE = "edge"


@dataclass
class Node:
    name: str
    label: str
    port: int  # router: ws port; enforcer: gRPC port
    http_port: int = 0  # enforcer only


def api(api_id: str, label: str, echo: int) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        name=api_id,
        version="1.0.0",
        context=f"/{api_id}",
        api_type="WS",
        source="adapter",  # CLI-owned: persisted in the data dir, survives an adapter restart
        production_endpoint=definition_pb2.Endpoint(url=f"ws://127.0.0.1:{echo}"),
        operations=[definition_pb2.Operation(target="/*", verb="SUBSCRIBE", auth_type="None")],
        deployments=[definition_pb2.Deployment(name=label)],
    )


def status_of(router: int, api_id: str) -> int:
    """101 when the handshake through ``router`` upgraded (and a message echoed), else the
    HTTP status it answered."""

    async def attempt() -> int:
        try:
            async with connect(f"ws://127.0.0.1:{router}/{api_id}/1.0.0/x", open_timeout=5) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "hi"
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(attempt())


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rest, self.xds, self.deploy, self.echo = (free_port() for _ in range(4))
        self.enforcers = [
            Node("e1", "Default", free_port(), free_port()),
            Node("e2", EDGE, free_port(), free_port()),
        ]
        self.routers = [
            Node("r1", "Default", free_port()),
            Node("r2", "Default", free_port()),
            Node("r3", EDGE, free_port()),
        ]
        self.procs: dict[str, Proc] = {}
        self.env = {
            "WSGATE_DATA_DIR": str(tmp / "data"),
            "WSGATE_XDS_ADDRESS": f"127.0.0.1:{self.xds}",
            "WSGATE_ADAPTER_USERS": "admin:admin",
            # admin:admin (adapter users, enforcer test keys) is refused beyond loopback
            "WSGATE_ADAPTER_HOST": "127.0.0.1",
            "WSGATE_ENFORCER_HOST": "127.0.0.1",
        }

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        generation = sum(1 for n in self.procs if n.split("#")[0] == name)
        key = name if generation == 0 else f"{name}#{generation}"
        proc = Proc(key.replace("#", "."), args, {**self.env, **(env or {})}, self.tmp)
        self.procs[key] = proc
        return proc

    def start_adapter(self) -> Proc:
        args = ["adapter", "--host", "127.0.0.1", "--rest-port", str(self.rest)]
        return self.start(
            "adapter", [*args, "--xds-port", str(self.xds), "--deploy-port", str(self.deploy)]
        )

    def enforcer_of(self, label: str) -> Node:
        return next(e for e in self.enforcers if e.label == label)

    def start_data_plane(self) -> None:
        self.start("echo", ["echo-backend"], {"WSGATE_ECHO_PORT": str(self.echo)})
        for e in self.enforcers:
            self.start(
                e.name,
                ["enforcer"],
                {
                    "WSGATE_LABEL": e.label,
                    "WSGATE_ENFORCER_GRPC_PORT": str(e.port),
                    "WSGATE_ENFORCER_HTTP_PORT": str(e.http_port),
                },
            )
        for r in self.routers:
            e = self.enforcer_of(r.label)
            self.start(
                r.name,
                ["router", "--host", "127.0.0.1", "--port", str(r.port), "--tls-port", "0"],
                {
                    "WSGATE_LABEL": r.label,
                    "WSGATE_ENFORCER_ADDRESS": f"127.0.0.1:{e.port}",
                    "WSGATE_ENFORCER_HTTP_URL": f"http://127.0.0.1:{e.http_port}",
                    "WSGATE_ROUTER_DRAIN_SECONDS": "1",
                },
            )

    def ready(self, node: Node) -> int:
        port = node.http_port or node.port
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code

    def not_ready(self, node: Node) -> bool:
        return self.ready(node) == 503

    def all_ready(self) -> bool:
        return all(self.ready(n) == 200 for n in [*self.routers, *self.enforcers])

    def deploy_api(self, api_id: str, label: str) -> None:
        pki = self.tmp / "data" / "pki"  # every process shares it: mutual TLS, as by default
        creds = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / "server-key.pem").read_bytes(),
            certificate_chain=(pki / "server.pem").read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{self.deploy}", creds) as channel:
            stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
            stub.Deploy(deploy_pb2.DeployRequest(api=api(api_id, label, self.echo)), timeout=10)

    def serves(self, api_id: str) -> dict[str, int]:
        return {r.name: status_of(r.port, api_id) for r in self.routers}

    def logs(self) -> str:
        return "\n".join(
            f"----- {k} -----\n" + "\n".join(p.log().splitlines()[-25:])
            for k, p in self.procs.items()
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        for proc in c.procs.values():
            proc.stop()


def test_two_labels_three_routers_survive_adapter_loss(cluster: Cluster) -> None:
    c = cluster
    c.start_data_plane()
    wait_for(lambda: http_ok(f"http://127.0.0.1:{c.echo}/health"), 20, "echo backend")
    # Routers up before the adapter: listening, alive, but honestly not ready.
    for node in [*c.routers, *c.enforcers]:
        wait_for(partial(c.not_ready, node), 20, f"{node.name} answering /ready 503")

    adapter = c.start_adapter()
    wait_for(lambda: http_ok(f"https://127.0.0.1:{c.rest}/ready"), 20, "adapter")
    wait_for(c.all_ready, 20, "every router and enforcer ready once the adapter is up")

    # Each API lands only on its label.
    c.deploy_api("alpha", "Default")
    c.deploy_api("beta", EDGE)
    wait_for(lambda: c.serves("alpha") == {"r1": 101, "r2": 101, "r3": 404}, 10, "alpha")
    wait_for(lambda: c.serves("beta") == {"r1": 404, "r2": 404, "r3": 101}, 10, "beta")

    asyncio.run(_survive_adapter_loss(c, adapter))

    # Restarted on the same data dir: the persisted APIs are back, the routers reconnect and
    # converge without a restart of their own.
    c.start_adapter()
    wait_for(lambda: http_ok(f"https://127.0.0.1:{c.rest}/ready"), 20, "adapter restarted")
    c.deploy_api("gamma", EDGE)
    wait_for(lambda: c.serves("gamma") == {"r1": 404, "r2": 404, "r3": 101}, 15, "gamma")
    assert c.serves("alpha") == {"r1": 101, "r2": 101, "r3": 404}
    assert c.serves("beta") == {"r1": 404, "r2": 404, "r3": 101}
    assert c.all_ready()
    for name in ("r1", "r2", "r3", "e1", "e2"):
        assert c.procs[name].alive(), f"{name} restarted or died"

    # SIGTERM drains a router: its clients get 1001, it exits 0; the other routers go on.
    code = asyncio.run(_sigterm_closes_with_1001(c, c.procs["r2"], c.routers[1].port))
    assert code == 1001
    assert c.procs["r2"].popen.wait(10) == 0
    assert status_of(c.routers[0].port, "alpha") == 101


async def _sigterm_closes_with_1001(c: Cluster, router: Proc, port: int) -> int | None:
    async with connect(f"ws://127.0.0.1:{port}/alpha/1.0.0/drain") as ws:
        await ws.send("before")
        assert await ws.recv() == "before"
        router.popen.send_signal(signal.SIGTERM)
        await asyncio.wait_for(ws.wait_closed(), 10)
        return ws.close_code


def lost_xds(proc: Proc) -> int:
    """How many times the process logged losing its xDS stream."""
    return sum("xDS stream to" in line and " lost (" in line for line in proc.log().splitlines())


async def _survive_adapter_loss(c: Cluster, adapter: Proc) -> None:
    async with contextlib.AsyncExitStack() as stack:
        live: list[ClientConnection] = []
        for r, api_id in ((c.routers[0], "alpha"), (c.routers[2], "beta")):
            url = f"ws://127.0.0.1:{r.port}/{api_id}/1.0.0/live"
            live.append(await stack.enter_async_context(connect(url)))
        routers = [c.procs[name] for name in ("r1", "r3")]
        before = [lost_xds(proc) for proc in routers]
        adapter.popen.send_signal(signal.SIGKILL)
        adapter.popen.wait(10)
        # The xDS streams notice the loss (each router logs it once).
        for proc, seen in zip(routers, before, strict=True):
            noticed = partial(lambda p, n: lost_xds(p) > n, proc, seen)
            await asyncio.to_thread(wait_for, noticed, 30, f"{proc.name}: xDS loss")
        for ws in live:
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 5) == "still here"
        # New handshakes on the last good config, and /ready stays honest (200).
        assert await asyncio.to_thread(c.serves, "alpha") == {"r1": 101, "r2": 101, "r3": 404}
        assert await asyncio.to_thread(c.serves, "beta") == {"r1": 404, "r2": 404, "r3": 101}
        assert await asyncio.to_thread(c.all_ready)
