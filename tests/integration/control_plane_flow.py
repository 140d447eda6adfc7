"""Starting a real control plane and walking the publisher path against it."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.procs import Proc, free_port, http_ok, running

PUBLISHER = "/api/am/publisher/v4"


@contextlib.contextmanager
def control_plane(
    data_dir: Path, port: int, adapter_address: str, **env: str
) -> Iterator[tuple[Proc, httpx.Client]]:
    """``wsgate control-plane`` over HTTPS on ``port``, and a client logged in as admin."""
    settings = {
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_CP_ADAPTER_ADDRESS": adapter_address,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["control-plane", "--port", str(port), "--host", "127.0.0.1"]
    with running(
        "control-plane",
        args,
        settings,
        data_dir,
        lambda: http_ok(f"https://127.0.0.1:{port}/ready"),
    ) as proc:
        client = httpx.Client(
            base_url=f"https://127.0.0.1:{port}{PUBLISHER}",
            auth=("admin", "admin"),
            verify=ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.pem")),
            timeout=20,
        )
        with client:
            yield proc, client


def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"


def publish_and_deploy(client: httpx.Client, name: str, context: str) -> tuple[str, str]:
    """create -> Publish -> revision -> deploy to Default; returns (api id, revision id)."""
    body: dict[str, Any] = {
        "name": name,
        "context": context,
        "version": "1.0",
        "type": "WS",
        "endpointConfig": {
            "endpoint_type": "ws",
            "production_endpoints": {"url": "ws://localhost:8765"},
        },
    }
    created = client.post("/apis", json=body)
    assert created.status_code == 201, created.text
    api_id = created.json()["id"]
    published = client.post("/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"})
    assert published.status_code == 200, published.text
    assert published.json()["lifecycleState"]["state"] == "PUBLISHED"
    revision = client.post(f"/apis/{api_id}/revisions", json={"description": "first"})
    assert revision.status_code == 201, revision.text
    revision_id = revision.json()["id"]
    deployed = client.post(
        f"/apis/{api_id}/deploy-revision",
        params={"revisionId": revision_id},
        json=[{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}],
    )
    assert deployed.status_code == 201, deployed.text
    assert [d["name"] for d in deployed.json()] == ["Default"]
    return api_id, revision_id


def assert_still_there(client: httpx.Client, api_id: str, revision_id: str) -> None:
    api = client.get(f"/apis/{api_id}")
    assert api.status_code == 200, api.text
    assert api.json()["lifeCycleStatus"] == "PUBLISHED"
    revisions = client.get(f"/apis/{api_id}/revisions").json()["list"]
    assert [r["id"] for r in revisions] == [revision_id]
    assert [d["name"] for d in revisions[0]["deploymentInfo"]] == ["Default"]
