"""Compile + push time for many APIs: a real adapter process, one gRPC Sync with N definitions,
timed until an xDS client (``XdsClient``, as a router runs it) has applied all N routes.

    .venv/bin/python bench/compile_push.py [N ...]      # default 1000 10000

Prints one line per N: the Sync RPC time (compile + publish inside the adapter) and the time
until the client applied the routes (adds serialization, the stream and the client's decode).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc.aio
from google.protobuf import any_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.procs import free_port, http_ok, running
from wsgate_common.resources import ROUTE_TYPE_URL
from wsgate_common.xds_client import XdsClient
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc


def definitions(n: int, tag: str) -> list[definition_pb2.ApiDefinition]:
    return [
        definition_pb2.ApiDefinition(
            id=f"api-{i}",
            name=f"Api{i}",
            version="1.0.0",
            context=f"/{tag}{i}",
            api_type="WS",
            production_endpoint=definition_pb2.Endpoint(url=f"ws://backend-{i % 50}:8080/ws"),
            operations=[
                definition_pb2.Operation(target="/rooms/{room}", verb="SUBSCRIBE"),
                definition_pb2.Operation(target="/rooms/{room}", verb="PUBLISH"),
            ],
        )
        for i in range(n)
    ]


async def measure(xds: int, deploy: int, n: int, tag: str) -> tuple[float, float]:
    applied = asyncio.Event()
    count = {"routes": -1}

    def on_routes(version: str, resources: list[any_pb2.Any]) -> None:
        count["routes"] = len(resources)
        if len(resources) == n and resources[0].value.find(f"/{tag}".encode()) >= 0:
            applied.set()

    client = XdsClient(f"127.0.0.1:{xds}", "Default", {ROUTE_TYPE_URL: on_routes})
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(client.ready.wait(), 10)
    apis = definitions(n, tag)
    options = [("grpc.max_send_message_length", 256 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{deploy}", options=options) as channel:
        stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
        started = time.perf_counter()
        response = await stub.Sync(deploy_pb2.SyncRequest(apis=apis), timeout=120)
        rpc = time.perf_counter() - started
        assert not response.errors, response.errors[:3]
        await asyncio.wait_for(applied.wait(), 120)
        total = time.perf_counter() - started
    task.cancel()
    return rpc, total


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1000, 10000]
    with tempfile.TemporaryDirectory() as tmp:
        rest, xds, deploy = free_port(), free_port(), free_port()
        env = {
            "WSGATE_DATA_DIR": tmp,
            "WSGATE_GRPC_TLS": "plaintext",
            "WSGATE_LOG_LEVEL": os.environ.get("WSGATE_LOG_LEVEL", "WARNING"),
        }
        args = ["adapter", "--host", "127.0.0.1", "--rest-port", str(rest)]
        args += ["--xds-port", str(xds), "--deploy-port", str(deploy)]
        ready = f"https://127.0.0.1:{rest}/ready"
        with running("adapter", args, env, Path(tmp), lambda: http_ok(ready)):
            for round_, n in enumerate(sizes):
                rpc, total = asyncio.run(measure(xds, deploy, n, f"r{round_}x"))
                print(
                    f"{n:>6} APIs: Sync RPC (compile + publish) {rpc * 1000:8.1f} ms, "
                    f"applied by the xDS client {total * 1000:8.1f} ms",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
