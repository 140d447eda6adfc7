"""Deploying a revision on the control plane puts the API on the real adapter, and a restarted
adapter gets everything back (including what was deployed while it was down) by re-sync."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.control_plane_flow import control_plane, publish_and_deploy
from tests.procs import Proc, free_port, http_ok, running, wait_for

pytestmark = pytest.mark.integration

BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()


@contextlib.contextmanager
def adapter(data_dir: Path, rest: int, xds: int, deploy: int, pki: Path) -> Iterator[Proc]:
    """An adapter with its own data dir, using the certificates in ``pki`` for gRPC (mTLS needs
    the control plane and the adapter to share one CA)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "WSGATE_DATA_DIR": str(data_dir),
        # loopback: the adapter refuses 0.0.0.0 with its built-in admin:admin (safe defaults)
        "WSGATE_ADAPTER_HOST": "127.0.0.1",
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
    rest, xds, deploy, cp_port = free_port(), free_port(), free_port(), free_port()
    address = f"127.0.0.1:{deploy}"
    with control_plane(tmp_path / "cp", cp_port, address) as (cp, client):
        with adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki"):
            wait_for(lambda: cp_sees_adapter(cp_port), 5, "the control plane to see the adapter")
            first, revision = publish_and_deploy(client, "Chat", "/chat")
            # deploy-revision answers after the adapter has the API: no waiting needed.
            assert adapter_api_ids(rest) == {first}
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
        with adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki"):
            started = time.monotonic()
            wait_for(lambda: adapter_api_ids(rest) == {first, second}, 5, "re-sync")
            assert time.monotonic() - started < 3.5
        assert "synced 2 APIs" in cp.log()
