"""Deploy-to-serving propagation: how long after a deploy answers does the router upgrade a
handshake for the new API? Real processes (echo backend, adapter, enforcer, router, control
plane) on free ports, gRPC plaintext.

    .venv/bin/python bench/propagation.py [--count 100]

Two paths, ``--count`` deploys each, every deploy a new API (context /pN):

* control plane: POST .../apis/{id}/deploy-revision (the API created, published and its
  revision made beforehand, untimed); the clock starts when the response has arrived;
* adapter: DeploymentService.Deploy over gRPC; the clock starts when the RPC has returned.

The clock stops at the first handshake through the router that gets 101 (tried back to back:
each failed try is a 404 from the router, well under a millisecond).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.procs import free_port, http_ok, running
from wsgate.stack import Ports, component_env, components
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc

PUBLISHER = "/api/am/publisher/v4"
GATEWAY = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]
AUTH = "Basic " + base64.b64encode(b"admin:admin").decode()


async def upgraded(url: str) -> bool:
    try:
        async with connect(url, open_timeout=5):
            return True
    except InvalidStatus:
        return False


async def until_served(url: str, started: float) -> float:
    while not await upgraded(url):
        if time.perf_counter() - started > 30:
            raise TimeoutError(f"{url} not served after 30 s")
    return time.perf_counter() - started


def body(i: int, echo: int) -> dict[str, Any]:
    url = {"url": f"ws://localhost:{echo}"}
    return {
        "name": f"Prop{i}",
        "context": f"/p{i}",
        "version": "1.0.0",
        "type": "WS",
        "endpointConfig": {
            "endpoint_type": "ws",
            "production_endpoints": url,
            "sandbox_endpoints": url,
        },
        "operations": [{"target": "/*", "verb": "SUBSCRIBE", "authType": "None"}],
    }


async def via_control_plane(ports: Ports, count: int) -> list[float]:
    times = []
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{ports.cp}{PUBLISHER}",
        headers={"Authorization": AUTH},
        verify=False,
        timeout=30,
    ) as cp:
        for i in range(count):
            created = await cp.post("/apis", json=body(i, ports.echo))
            created.raise_for_status()
            api_id = created.json()["id"]
            params = {"apiId": api_id, "action": "Publish"}
            (await cp.post("/apis/change-lifecycle", params=params)).raise_for_status()
            revision = await cp.post(f"/apis/{api_id}/revisions", json={"description": "b"})
            revision.raise_for_status()
            deployed = await cp.post(
                f"/apis/{api_id}/deploy-revision",
                params={"revisionId": str(revision.json()["id"])},
                json=GATEWAY,
            )
            started = time.perf_counter()
            deployed.raise_for_status()
            url = f"ws://localhost:{ports.router}/p{i}/1.0.0/x"
            times.append(await until_served(url, started))
    return times


async def via_adapter(ports: Ports, count: int) -> list[float]:
    times = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports.adapter_deploy}") as channel:
        stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
        for i in range(count):
            api = definition_pb2.ApiDefinition(
                id=f"grpc-{i}",
                name=f"Grpc{i}",
                version="1.0.0",
                context=f"/g{i}",
                api_type="WS",
                production_endpoint=definition_pb2.Endpoint(url=f"ws://localhost:{ports.echo}"),
                operations=[
                    definition_pb2.Operation(target="/*", verb="SUBSCRIBE", auth_type="None")
                ],
            )
            await stub.Deploy(deploy_pb2.DeployRequest(api=api), timeout=10)
            started = time.perf_counter()
            url = f"ws://localhost:{ports.router}/g{i}/1.0.0/x"
            times.append(await until_served(url, started))
    return times


def summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)]
    return (
        f"{name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args(argv)
    names = [f.name for f in Ports.__dataclass_fields__.values()]
    ports = Ports(**{name: free_port() for name in names})
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        env = {
            **component_env(ports, Path(tmp)),
            "WSGATE_GRPC_TLS": "plaintext",
            "WSGATE_LOG_LEVEL": "WARNING",
            "WSGATE_CP_USERS": "admin:admin",
            "WSGATE_ADAPTER_USERS": "admin:admin",
        }
        for component in components(ports):
            stack.enter_context(
                running(
                    component.name,
                    [component.command],
                    env,
                    Path(tmp),
                    lambda url=component.ready_url: http_ok(url),  # type: ignore[misc]
                    timeout=60,
                )
            )
        print(
            summary(
                "control plane deploy-revision -> router 101",
                asyncio.run(via_control_plane(ports, args.count)),
            ),
            flush=True,
        )
        print(
            summary(
                "adapter gRPC Deploy -> router 101", asyncio.run(via_adapter(ports, args.count))
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
