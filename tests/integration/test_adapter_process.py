"""A real `wsgate adapter` process: deploy over REST and gRPC, and see it arrive over xDS."""

from __future__ import annotations

import asyncio
import io
import ssl
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from google.protobuf import any_pb2

from adapter.project import zip_dir
from tests.procs import Proc, free_port, http_ok, running
from wsgate_common.grpc_tls import from_pki_dir
from wsgate_common.resources import API_POLICY_TYPE_URL, ROUTE_TYPE_URL
from wsgate_common.xds_client import XdsClient
from wsgate_proto import config_pb2, definition_pb2, deploy_pb2, deploy_pb2_grpc

pytestmark = pytest.mark.integration

ECHO = Path(__file__).resolve().parents[1] / "data" / "projects" / "EchoWebSocket-1.0.0"
API = "/api/mgw/adapter/0.1"


def _tls(data_dir: Path) -> ssl.SSLContext:
    """Verify the adapter's certificate against the CA it created (no verify=False here)."""
    return ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.pem"))


class Ports:
    def __init__(self) -> None:
        self.rest = free_port()
        self.xds = free_port()
        self.deploy = free_port()

    def args(self) -> list[str]:
        return [
            "adapter",
            "--host",
            "127.0.0.1",
            "--rest-port",
            str(self.rest),
            "--xds-port",
            str(self.xds),
            "--deploy-port",
            str(self.deploy),
        ]


@pytest.fixture
def ports() -> Ports:
    return Ports()


def _start(ports: Ports, data_dir: Path) -> AbstractContextManager[Proc]:
    env = {"WSGATE_DATA_DIR": str(data_dir), "WSGATE_ADAPTER_USERS": "admin:admin,ops:pw"}
    return running(
        "adapter",
        ports.args(),
        env,
        data_dir,
        lambda: http_ok(f"https://127.0.0.1:{ports.rest}/ready"),
    )


class Seen:
    """What an xDS client of the process holds now: base paths of routes and policies."""

    def __init__(self) -> None:
        self.routes: dict[str, config_pb2.Route] = {}
        self.policies: dict[str, config_pb2.ApiPolicy] = {}

    def on_routes(self, version: str, resources: list[any_pb2.Any]) -> None:
        routes = [config_pb2.Route.FromString(r.value) for r in resources]
        self.routes = {r.api_id: r for r in routes}

    def on_policies(self, version: str, resources: list[any_pb2.Any]) -> None:
        policies = [config_pb2.ApiPolicy.FromString(r.value) for r in resources]
        self.policies = {p.api_id: p for p in policies}


async def _until(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not check():  # noqa: ASYNC110 (polls state owned by the xDS client task)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_deploy_list_override_delete_over_rest_reaches_xds(
    ports: Ports, tmp_path: Path
) -> None:
    echo_zip = zip_dir(ECHO)
    with _start(ports, tmp_path) as proc:
        ca = _tls(tmp_path)
        seen = Seen()
        client = XdsClient(
            f"127.0.0.1:{ports.xds}",
            "Default",
            {ROUTE_TYPE_URL: seen.on_routes, API_POLICY_TYPE_URL: seen.on_policies},
            tls=from_pki_dir(tmp_path / "pki"),
        )
        xds_task = asyncio.create_task(client.run())
        base = f"https://localhost:{ports.rest}{API}"
        async with httpx.AsyncClient(base_url=base, verify=ca, timeout=10) as http:
            try:
                await asyncio.wait_for(client.ready.wait(), 10)
                assert seen.routes == {}

                # No credentials, wrong credentials.
                r = await http.get("/apis")
                assert (r.status_code, r.json()["code"]) == (401, 900902)
                r = await http.get("/apis", auth=("admin", "wrong"))
                assert (r.status_code, r.json()["code"]) == (401, 900901)

                # Deploy with Basic auth.
                files = {"file": ("EchoWebSocket-1.0.0.zip", echo_zip, "application/zip")}
                r = await http.post("/apis", files=files, auth=("admin", "admin"))
                assert r.status_code == 200, r.text
                assert r.json()["id"] == "EchoWebSocket:1.0.0"
                await _until(lambda: "EchoWebSocket:1.0.0" in seen.routes, "route over xDS")
                route = seen.routes["EchoWebSocket:1.0.0"]
                assert route.base_path == "/echowebsocket/1.0.0"
                topics = {t.path: t.production_url for t in route.topics}
                assert topics["/notifications"] == "ws://localhost:8765/notify"
                await _until(lambda: "EchoWebSocket:1.0.0" in seen.policies, "policy over xDS")
                public = {t.path: t.secured for t in seen.policies["EchoWebSocket:1.0.0"].topics}
                assert public["/public"] is False

                # Bearer token from the token endpoint.
                r = await http.post("/oauth2/token", json={"username": "ops", "password": "pw"})
                assert r.status_code == 200
                bearer = {"Authorization": f"Bearer {r.json()['accessToken']}"}
                r = await http.get("/apis", headers=bearer)
                assert r.status_code == 200
                body = r.json()
                assert (body["total"], body["count"]) == (1, 1)
                row = body["list"][0]
                assert row["apiName"] == "EchoWebSocket"
                assert row["context"] == "/echowebsocket/1.0.0"
                assert row["gateway-envs"] == ["Default"]
                assert row["vhost"] == "localhost"
                r = await http.get("/apis", headers={"Authorization": "Bearer not.a.jwt"})
                assert r.status_code == 401

                # Duplicate -> 409; override replaces it (a new context shows up over xDS).
                r = await http.post("/apis", files=files, headers=bearer)
                assert r.status_code == 409
                assert r.json()["code"] == 409
                changed = _with_context(echo_zip, "/echo2")
                r = await http.post(
                    "/apis",
                    files={"file": ("echo.zip", changed, "application/zip")},
                    params={"override": "true"},
                    headers=bearer,
                )
                assert r.status_code == 200, r.text
                await _until(
                    lambda: (
                        seen.routes.get("EchoWebSocket:1.0.0", route).base_path == "/echo2/1.0.0"
                    ),
                    "overridden route",
                )

                # A bad zip names the file; a bad api.yaml names file and field.
                r = await http.post(
                    "/apis",
                    files={"file": ("broken.zip", b"nope", "application/zip")},
                    headers=bearer,
                )
                assert r.status_code == 400
                assert "broken.zip" in r.json()["description"]
                bad = _with_context(echo_zip, "")
                r = await http.post(
                    "/apis", files={"file": ("bad.zip", bad, "application/zip")}, headers=bearer
                )
                assert r.status_code == 400
                assert "api.yaml" in r.json()["description"]
                assert "data.context" in r.json()["description"]

                # Status shows our xDS client and its ACKs.
                r = await http.get("/status", headers=bearer)
                status = r.json()
                assert status["snapshots"]["Default"][ROUTE_TYPE_URL]
                assert any(c["node"] == "Default" for c in status["xds"]["clients"])

                # Delete: gone from the list and from xDS; a second delete is 404.
                params = {"apiName": "EchoWebSocket", "version": "1.0.0"}
                r = await http.delete("/apis", params=params, headers=bearer)
                assert r.status_code == 200, r.text
                await _until(lambda: seen.routes == {} and seen.policies == {}, "removal")
                r = await http.delete("/apis", params=params, headers=bearer)
                assert r.status_code == 404
                assert r.json()["code"] == 404
                assert proc.alive()
            finally:
                xds_task.cancel()


def _with_context(project_zip: bytes, context: str) -> bytes:
    """A copy of a project zip whose api.yaml has another context ("" removes it)."""
    source = zipfile.ZipFile(io.BytesIO(project_zip))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/api.yaml"):
                text = data.decode().replace("context: /echowebsocket", f"context: {context}")
                data = text.encode()
            target.writestr(info.filename, data)
    return out.getvalue()


def _cp_api(api_id: str, context: str) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        name=f"Cp{api_id}",
        version="1.0.0",
        context=context,
        api_type="WS",
        lifecycle_status="PUBLISHED",
        production_endpoint=definition_pb2.Endpoint(url="ws://localhost:8765"),
        deployments=[definition_pb2.Deployment(name="Default", vhost="localhost")],
        source="control-plane",
    )


async def test_grpc_deploy_sync_and_cli_deployments_survive_restart(
    ports: Ports, tmp_path: Path
) -> None:
    base = f"https://localhost:{ports.rest}{API}"
    with _start(ports, tmp_path):
        ca = _tls(tmp_path)
        seen = Seen()
        grpc_tls = from_pki_dir(tmp_path / "pki")
        routes = {ROUTE_TYPE_URL: seen.on_routes}
        client = XdsClient(f"127.0.0.1:{ports.xds}", "Default", routes, tls=grpc_tls)
        xds_task = asyncio.create_task(client.run())
        try:
            async with grpc_tls.aio_channel(f"127.0.0.1:{ports.deploy}") as channel:
                stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
                first_boot = (await stub.Status(deploy_pb2.StatusRequest())).boot_id
                assert first_boot

                reply = await stub.Deploy(deploy_pb2.DeployRequest(api=_cp_api("u1", "/cp")))
                assert set(reply.versions) == {"Default"}
                await _until(lambda: "u1" in seen.routes, "gRPC-deployed route")
                assert seen.routes["u1"].base_path == "/cp/1.0.0"

                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Deploy(deploy_pb2.DeployRequest(api=_cp_api("u2", "/cp")))
                assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Deploy(deploy_pb2.DeployRequest(api=_cp_api("u3", "")))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Undeploy(deploy_pb2.UndeployRequest(api_id="nope"))
                assert info.value.code() == grpc.StatusCode.NOT_FOUND

                # A CLI deployment next to it; the REST list shows both owners.
                async with httpx.AsyncClient(base_url=base, verify=ca, timeout=10) as http:
                    files = {"file": ("echo.zip", zip_dir(ECHO), "application/zip")}
                    r = await http.post("/apis", files=files, auth=("admin", "admin"))
                    assert r.status_code == 200, r.text
                    r = await http.get("/apis", auth=("admin", "admin"))
                    sources = {row["id"]: row["source"] for row in r.json()["list"]}
                    assert sources == {"EchoWebSocket:1.0.0": "adapter", "u1": "control-plane"}

                # Sync replaces what the control plane owns, and leaves the CLI's API alone.
                reply = await stub.Sync(deploy_pb2.SyncRequest(apis=[_cp_api("u4", "/other")]))
                assert list(reply.errors) == []
                await _until(
                    lambda: set(seen.routes) == {"u4", "EchoWebSocket:1.0.0"}, "synced routes"
                )
                reply = await stub.Undeploy(deploy_pb2.UndeployRequest(api_id="u4"))
                await _until(lambda: set(seen.routes) == {"EchoWebSocket:1.0.0"}, "undeploy")
        finally:
            xds_task.cancel()

    # Restart: the CLI deployment is back; the control plane's would be re-synced by it.
    with _start(ports, tmp_path):
        async with from_pki_dir(tmp_path / "pki").aio_channel(
            f"127.0.0.1:{ports.deploy}"
        ) as channel:
            stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
            status = await stub.Status(deploy_pb2.StatusRequest())
            assert status.boot_id != first_boot
            assert "Default" in status.versions
        async with httpx.AsyncClient(base_url=base, verify=ca, timeout=10) as http:
            r = await http.get("/apis", auth=("admin", "admin"))
            assert [row["id"] for row in r.json()["list"]] == ["EchoWebSocket:1.0.0"]


def test_help_and_bad_port_do_not_crash(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.procs import REPO

    out = subprocess.run(
        [sys.executable, "-m", "wsgate", "adapter", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert "--xds-port" in out.stdout
    busy = Ports()
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy.xds))
        holder.listen()
        result = subprocess.run(
            [sys.executable, "-m", "wsgate", *busy.args()],
            cwd=REPO,
            env={"WSGATE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot" in result.stderr
