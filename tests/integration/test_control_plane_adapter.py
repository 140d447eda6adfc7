"""Deploying a revision on the control plane puts the API on the real adapter, and a restarted
adapter gets everything back (including what was deployed while it was down) by re-sync."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.control_plane_flow import control_plane, publish_and_deploy
from tests.procs import Proc, free_port, http_ok, running, stable_port, wait_for

pytestmark = pytest.mark.integration

BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()


@contextlib.contextmanager
def adapter(data_dir: Path, rest: int, xds: int, deploy: int, pki: Path) -> Iterator[Proc]:
    """An adapter with its own data dir, using the certificates in ``pki`` for gRPC (mTLS needs
    the control plane and the adapter to share one CA)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_ADAPTER_HOST": "127.0.0.1",  # admin:admin is refused on a non-loopback address
        "WSGATE_GRPC_CA": str(pki / "ca.pem"),
        "WSGATE_GRPC_CERT": str(pki / "server.pem"),
        "WSGATE_GRPC_KEY": str(pki / "server-key.pem"),
        "WSGATE_ADAPTER_REST_PORT": str(rest),
        "WSGATE_ADAPTER_XDS_PORT": str(xds),
        "WSGATE_ADAPTER_DEPLOY_PORT": str(deploy),
        "PYTHONUNBUFFERED": "1",
    }
    with running(
        "adapter", ["adapter"], env, data_dir, lambda: http_ok(f"https://127.0.0.1:{rest}/ready")
    ) as proc:
        yield proc


def adapter_api_ids(rest: int) -> set[str]:
    answer = httpx.get(
        f"https://127.0.0.1:{rest}/api/mgw/adapter/0.1/apis",
        headers={"Authorization": BASIC},
        verify=False,
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return {row["id"] for row in answer.json()["list"] if row["source"] == "control-plane"}


def cp_sees_adapter(cp_port: int) -> bool:
    ready = httpx.get(f"https://127.0.0.1:{cp_port}/ready", verify=False, timeout=2)
    return bool(ready.json()["adapter"] == "reachable")


def test_deploy_reaches_adapter_and_survives_adapter_restart(tmp_path: Path) -> None:
    # the adapter restarts on the same ports
    rest, xds, deploy = stable_port(), stable_port(), stable_port()
    cp_port = free_port()
    address = f"127.0.0.1:{deploy}"
    with control_plane(tmp_path / "cp", cp_port, address) as (cp, client):
        with adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki"):
            wait_for(lambda: cp_sees_adapter(cp_port), 5, "the control plane to see the adapter")
            first, revision = publish_and_deploy(client, "Chat", "/chat")
            # deploy-revision answers after the adapter has the API: no waiting needed.
            assert adapter_api_ids(rest) == {first}
            assert deployment_states(client, first) == [("DEPLOYED", True)]
            target = [{"name": "Default"}]
            params = {"revisionId": revision}
            undeployed = client.post(f"/apis/{first}/undeploy-revision", params=params, json=target)
            assert undeployed.status_code == 201
            assert adapter_api_ids(rest) == set()
            redeployed = client.post(f"/apis/{first}/deploy-revision", params=params, json=target)
            assert redeployed.status_code == 201
        # The adapter is down: this one is saved and waits for the re-sync.
        wait_for(lambda: not cp_sees_adapter(cp_port), 5, "the control plane to miss the adapter")
        second, _ = publish_and_deploy(client, "Prices", "/prices")
        # Saved, and shown as not live yet (WSO2 leaves successfulDeployedTime empty).
        assert deployment_states(client, second) == [("PENDING", False)]
        with adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki"):
            started = time.monotonic()
            wait_for(lambda: adapter_api_ids(rest) == {first, second}, 5, "re-sync")
            assert time.monotonic() - started < 3.5
            wait_for(
                lambda: deployment_states(client, second) == [("DEPLOYED", True)],
                5,
                "the API to show as deployed",
            )
        assert "synced 2 APIs" in cp.log()


def deployment_states(client: httpx.Client, api_id: str) -> list[tuple[str, bool]]:
    """(deploymentStatus, has successfulDeployedTime) of each deployment of the API."""
    answer = client.get(f"/apis/{api_id}/revisions")
    assert answer.status_code == 200, answer.text
    return [
        (d["deploymentStatus"], d["successfulDeployedTime"] is not None)
        for revision in answer.json()["list"]
        for d in revision["deploymentInfo"]
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Control-plane settings for the database under test (PostgreSQL: a throw-away schema of
    the server at 127.0.0.1:5432 that runs on every machine of this project)."""
    if request.param == "sqlite":
        yield {}
        return
    import psycopg

    schema = f"wsgate_cp_it_{uuid.uuid4().hex[:12]}"
    server = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(server, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
            yield {"WSGATE_DATABASE_URL": url}
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_20_concurrent_deploys_all_succeed_and_reach_the_adapter(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    # the adapter restarts on the same ports
    rest, xds, deploy = stable_port(), stable_port(), stable_port()
    cp_port = free_port()
    address = f"127.0.0.1:{deploy}"
    with (
        control_plane(tmp_path / "cp", cp_port, address, **database_env) as (_, client),
        adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki"),
    ):
        wait_for(lambda: cp_sees_adapter(cp_port), 5, "the control plane to see the adapter")
        made = []
        for n in range(20):
            body = {
                "name": f"Conc{n}",
                "context": f"/conc{n}",
                "version": "1.0",
                "type": "WS",
                "endpointConfig": {
                    "endpoint_type": "ws",
                    "production_endpoints": {"url": "ws://localhost:8765"},
                },
            }
            api_id = client.post("/apis", json=body).json()["id"]
            revision = client.post(f"/apis/{api_id}/revisions", json={}).json()["id"]
            made.append((api_id, revision))

        async def deploy_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=str(client.base_url), auth=("admin", "admin"), verify=False, timeout=60
            ) as session:
                target = [{"name": "Default", "vhost": "localhost"}]
                return await asyncio.gather(
                    *(
                        session.post(
                            f"/apis/{api_id}/deploy-revision",
                            params={"revisionId": revision},
                            json=target,
                        )
                        for api_id, revision in made
                    )
                )

        started = time.monotonic()
        answers = asyncio.run(deploy_all())
        took = time.monotonic() - started
        print(f"\n20 concurrent deploy-revision calls: {took:.2f} s")
        assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers]
        wait_for(lambda: adapter_api_ids(rest) == {a for a, _ in made}, 10, "all on the adapter")
