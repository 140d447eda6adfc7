"""Pushing to an adapter: what it receives, and what its refusals do to REST calls."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.models import RevisionDeployment
from tests.unit.control_plane.helpers import (
    BASE,
    FakeAdapter,
    add_environment,
    create_api,
    create_revision,
    deploy,
)

Pair = tuple[TestClient, FakeAdapter]


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_deploy_pushes_the_revision(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    api_id = create_api(client)["id"]
    client.post(f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"})
    revision = create_revision(client, api_id)
    assert deploy(client, api_id, revision["id"], "Default").status_code == 201
    [pushed] = adapter.deployed
    assert pushed.id == api_id
    assert pushed.revision_id == revision["id"]
    assert pushed.lifecycle_status == "PUBLISHED"
    assert [(d.name, d.vhost) for d in pushed.deployments] == [("Default", "localhost")]


def test_lifecycle_change_repushes_deployed_revision(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default")
    client.post(f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"})
    client.post(f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Block"})
    assert [d.lifecycle_status for d in adapter.deployed] == ["CREATED", "PUBLISHED", "BLOCKED"]


def test_one_definition_per_api_across_environments(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    add_environment(client, "Edge")
    api_id = create_api(client)["id"]
    first = create_revision(client, api_id)
    second = create_revision(client, api_id)
    deploy(client, api_id, first["id"], "Edge")
    deploy(client, api_id, second["id"], "Default")
    last = adapter.deployed[-1]
    assert last.revision_id == second["id"]
    assert [d.name for d in last.deployments] == ["Default", "Edge"]


def test_undeploy_and_delete_call_undeploy(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    add_environment(client, "Edge")
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default", "Edge")
    deploy(client, api_id, revision["id"], "Edge", action="undeploy")
    assert client.delete(f"{BASE}/apis/{api_id}").status_code == 200
    assert [(u.api_id, list(u.environments)) for u in adapter.undeployed] == [
        (api_id, ["Edge"]),
        (api_id, []),
    ]


@pytest.mark.parametrize(
    ("code", "status"),
    [(grpc.StatusCode.INVALID_ARGUMENT, 400), (grpc.StatusCode.ALREADY_EXISTS, 409)],
)
def test_adapter_refusal_fails_the_call_and_saves_nothing(
    adapter_client: Pair, code: grpc.StatusCode, status: int
) -> None:
    client, adapter = adapter_client
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    adapter.reject = code
    response = deploy(client, api_id, revision["id"], "Default")
    assert response.status_code == status
    assert "rejected by the fake adapter" in response.json()["description"]
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        assert session.scalars(select(RevisionDeployment)).all() == []
    # A refused lifecycle change is not saved either (once something is deployed).
    adapter.reject = None
    deploy(client, api_id, revision["id"], "Default")
    adapter.reject = code
    publish = client.post(
        f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"}
    )
    assert publish.status_code == status
    assert client.get(f"{BASE}/apis/{api_id}").json()["lifeCycleStatus"] == "CREATED"


def test_sync_on_start_and_on_new_boot_id(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    wait_until(lambda: len(adapter.syncs) >= 1)
    assert adapter.syncs[0] == []
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default")
    time.sleep(0.2)
    settled = len(adapter.syncs)
    time.sleep(0.3)
    assert len(adapter.syncs) == settled, "no re-sync while the adapter keeps its boot id"
    adapter.boot_id = "boot-2"
    wait_until(lambda: len(adapter.syncs) > settled)
    assert [api.id for api in adapter.syncs[-1]] == [api_id]
