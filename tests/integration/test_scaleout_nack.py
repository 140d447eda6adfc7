"""A NACK as the adapter sees it: a real adapter process, APIs pushed over its real gRPC
DeploymentService, and a real xDS client (``XdsClient``) whose handler refuses one route, as a
router refuses a resource it cannot apply. The refusal must show in ``/status``, ``/metrics``,
the log and ``wsgate mg``; the next snapshot the client takes supersedes it.

(No definition the adapter compiles is refused by the real router, so the refusing client is
the test's own xDS client, not a router.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
import pytest
from google.protobuf import any_pb2

from tests.procs import REPO, free_port, http_ok, running
from wsgate_common.metrics import parse_samples
from wsgate_common.resources import ROUTE_TYPE_URL
from wsgate_common.xds_client import XdsClient
from wsgate_proto import config_pb2, definition_pb2, deploy_pb2, deploy_pb2_grpc

pytestmark = pytest.mark.integration


def api(api_id: str, context: str) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        name=api_id,
        version="1.0.0",
        context=context,
        api_type="WS",
        production_endpoint=definition_pb2.Endpoint(url="ws://127.0.0.1:9"),
        operations=[definition_pb2.Operation(target="/*", verb="SUBSCRIBE", auth_type="None")],
    )


class Refuser:
    """Applies routes unless one has a base path under /refused (then raises: a NACK)."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def __call__(self, version: str, resources: list[any_pb2.Any]) -> None:
        paths = {config_pb2.Route.FromString(r.value).base_path for r in resources}
        bad = sorted(p for p in paths if p.startswith("/refused"))
        if bad:
            raise ValueError(f"cannot serve {bad[0]}")
        self.paths = paths


async def until(check: Any, limit: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def mg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgate", "mg", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nack_is_visible_and_superseded(tmp_path: Path) -> None:
    rest, xds, deploy = free_port(), free_port(), free_port()
    env = {
        "WSGATE_DATA_DIR": str(tmp_path / "data"),
        "WSGATE_ADAPTER_USERS": "admin:admin",
        "WSGATE_GRPC_TLS": "plaintext",  # the test's own gRPC clients are plaintext
    }
    args = ["adapter", "--host", "127.0.0.1", "--rest-port", str(rest)]
    args += ["--xds-port", str(xds), "--deploy-port", str(deploy)]
    base = f"https://127.0.0.1:{rest}"
    with running("adapter", args, env, tmp_path, lambda: http_ok(f"{base}/ready")) as proc:
        cli = {**env, "WSGATE_CLI_HOME": str(tmp_path / "cli")}
        assert mg(cli, "add", "env", "dev", "--adapter", base).returncode == 0
        login = mg(cli, "login", "dev", "-u", "admin", "-p", "admin", "-k")
        assert login.returncode == 0, login.stderr
        asyncio.run(_scenario(base, xds, deploy, cli))
        log = proc.log()
        assert "rejected type.googleapis.com/wsgate.config.v1.Route" in log
        assert "cannot serve /refused/1.0.0" in log


async def _cli_check(cli: dict[str, str], warned: bool) -> None:
    """`mg get apis` warns exactly while a client refuses the current version; `mg status`
    shows the client."""
    listed = await asyncio.to_thread(mg, cli, "get", "apis", "-e", "dev", "-k")
    assert listed.returncode == 0 and "good" in listed.stdout, listed.stderr
    assert ("Warning:" in listed.stderr) == warned, listed.stderr
    if warned:
        assert "rejected Route version" in listed.stderr
        assert "cannot serve /refused/1.0.0" in listed.stderr
    status = await asyncio.to_thread(mg, cli, "status", "-e", "dev", "-k")
    assert status.returncode == 0, status.stderr
    assert "Route" in status.stdout and "Default" in status.stdout
    assert ("cannot serve /refused" in status.stdout) == warned


async def _scenario(base: str, xds: int, deploy: int, cli: dict[str, str]) -> None:
    refuser = Refuser()
    client = XdsClient(f"127.0.0.1:{xds}", "Default", {ROUTE_TYPE_URL: refuser})
    task = asyncio.create_task(client.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{deploy}")
    stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
    async with httpx.AsyncClient(base_url=base, verify=False, timeout=5) as http:
        token = (
            await http.post(
                "/api/mgw/adapter/0.1/oauth2/token",
                json={"username": "admin", "password": "admin"},
            )
        ).json()["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}

        async def status() -> dict[str, Any]:
            answer = await http.get("/api/mgw/adapter/0.1/status", headers=auth)
            assert answer.status_code == 200
            body: dict[str, Any] = answer.json()
            return body

        async def metrics() -> dict[str, float]:
            return parse_samples((await http.get("/metrics")).text)

        nacks = f'wsgate_adapter_xds_nacks_total{{label="Default",type="{ROUTE_TYPE_URL}"}}'
        try:
            await stub.Deploy(deploy_pb2.DeployRequest(api=api("good", "/good")))

            async def has_good() -> bool:
                return refuser.paths == {"/good/1.0.0"}

            await until(has_good)
            assert (await status())["nackedCurrent"] == []
            served = (await status())["labels"]["Default"][ROUTE_TYPE_URL]
            [me] = served["clients"]
            assert me["acked"] == served["version"] and me["lastNack"] is None

            # A route the client refuses: it keeps /good, the adapter records the NACK.
            await stub.Deploy(deploy_pb2.DeployRequest(api=api("bad", "/refused")))

            async def nacked() -> bool:
                return bool((await status())["nackedCurrent"])

            await until(nacked)
            body = await status()
            [row] = body["nackedCurrent"]
            served = body["labels"]["Default"][ROUTE_TYPE_URL]
            assert row["label"] == "Default" and row["type"] == ROUTE_TYPE_URL
            assert row["version"] == served["version"]
            assert "cannot serve /refused/1.0.0" in row["error"]
            [me] = served["clients"]
            assert me["lastNack"]["version"] == served["version"]
            assert me["acked"] != served["version"] and not me["current"]
            assert refuser.paths == {"/good/1.0.0"}
            samples = await metrics()
            assert samples[nacks] == 1
            assert samples['wsgate_adapter_xds_clients{label="Default"}'] == 1
            assert samples['wsgate_adapter_apis{label="Default"}'] == 2
            assert samples['wsgate_adapter_push_seconds_count{op="deploy"}'] == 2
            await _cli_check(cli, warned=True)

            # The next good snapshot (the bad API gone, a new one added) supersedes the NACK.
            await stub.Undeploy(deploy_pb2.UndeployRequest(api_id="bad"))
            await stub.Deploy(deploy_pb2.DeployRequest(api=api("next", "/next")))

            async def converged() -> bool:
                return refuser.paths == {"/good/1.0.0", "/next/1.0.0"}

            await until(converged)

            async def cleared() -> bool:
                body = await status()
                [me] = body["labels"]["Default"][ROUTE_TYPE_URL]["clients"]
                return me["current"] and me["lastNack"] is None and not body["nackedCurrent"]

            await until(cleared)
            assert (await status())["xds"]["lastNacks"] == {}
            samples = await metrics()
            assert samples[nacks] == 1  # a total: history stays counted
            assert samples['wsgate_adapter_push_seconds_count{op="undeploy"}'] == 1
            await _cli_check(cli, warned=False)
        finally:
            task.cancel()
            await channel.close()
