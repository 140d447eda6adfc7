"""Pushing to an adapter: what it receives, and what its refusals do to REST calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from control_plane.app import create_app
from control_plane.models import RevisionDeployment
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.helpers import (
    AUTH,
    BASE,
    FakeAdapter,
    add_environment,
    create_api,
    create_revision,
    deploy,
)
from wsgate_proto import deploy_pb2_grpc

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


def test_each_environment_runs_its_own_revision(adapter_client: Pair) -> None:
    """WSO2: revision 2 on Default while revision 1 stays on Edge; the adapter gets both."""
    client, adapter = adapter_client
    add_environment(client, "Edge")
    api_id = create_api(client)["id"]
    first = create_revision(client, api_id)
    second = create_revision(client, api_id)
    deploy(client, api_id, first["id"], "Edge", "Default")
    answer = deploy(client, api_id, second["id"], "Default")
    assert [(d["name"], d["deploymentStatus"]) for d in answer.json()] == [("Default", "DEPLOYED")]
    assert adapter.placements(api_id) == {("Default", second["id"]), ("Edge", first["id"])}
    listed = client.get(f"{BASE}/apis/{api_id}/revisions").json()["list"]
    by_id = {r["id"]: [d["name"] for d in r["deploymentInfo"]] for r in listed}
    assert by_id == {first["id"]: ["Edge"], second["id"]: ["Default"]}


def test_undeploy_and_delete_reach_the_adapter(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    add_environment(client, "Edge")
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default", "Edge")
    deploy(client, api_id, revision["id"], "Edge", action="undeploy")
    assert adapter.placements(api_id) == {("Default", revision["id"])}
    assert client.delete(f"{BASE}/apis/{api_id}").status_code == 200
    assert api_id not in adapter.live
    assert [list(p.apis) for p in adapter.puts][-1] == []


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


def _deployments(client: TestClient, api_id: str) -> list[tuple[str, str, bool]]:
    """(environment, deploymentStatus, has successfulDeployedTime) of every deployment."""
    listed = client.get(f"{BASE}/apis/{api_id}/revisions").json()["list"]
    return [
        (d["name"], d["deploymentStatus"], d["successfulDeployedTime"] is not None)
        for revision in listed
        for d in revision["deploymentInfo"]
    ]


def test_commit_failure_after_validation_leaves_nothing_live(adapter_client: Pair) -> None:
    """The adapter only dry-runs before the commit: a commit that fails changes nothing."""
    client, adapter = adapter_client
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    factory = client.app.state.sessionmaker  # type: ignore[attr-defined]

    def fail(session: Session) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(factory, "before_commit", fail)
    try:
        answer = deploy(client, api_id, revision["id"], "Default")
    finally:
        event.remove(factory, "before_commit", fail)
    assert answer.status_code == 503, answer.text
    assert "could not be saved" in answer.json()["description"]
    assert [r.api_id for r in adapter.validated] == [api_id], "validated first"
    assert adapter.puts == [] and adapter.live == {}, "nothing live on the adapter"
    with factory() as session:
        assert session.scalars(select(RevisionDeployment)).all() == []
    time.sleep(0.3)  # the reconciler has nothing to deliver either
    assert adapter.live == {}
    assert deploy(client, api_id, revision["id"], "Default").status_code == 201
    assert adapter.placements(api_id) == {("Default", revision["id"])}


def test_adapter_down_during_deploy_is_pending_until_it_returns(
    client: TestClient, settings: ControlPlaneSettings
) -> None:
    """Saved while the adapter is down (201, PENDING), live once it is back."""
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    answer = deploy(client, api_id, revision["id"], "Default")
    assert answer.status_code == 201, answer.text
    [info] = answer.json()
    assert (info["deploymentStatus"], info["successfulDeployedTime"]) == ("PENDING", None)
    assert info["status"] == "APPROVED"
    assert _deployments(client, api_id) == [("Default", "PENDING", False)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    adapter = FakeAdapter()
    deploy_pb2_grpc.add_DeploymentServiceServicer_to_server(adapter, server)
    server.add_insecure_port(settings.cp_adapter_address)
    server.start()
    try:
        wait_until(lambda: adapter.placements(api_id) == {("Default", revision["id"])}, 15)
        wait_until(lambda: _deployments(client, api_id) == [("Default", "DEPLOYED", True)])
    finally:
        server.stop(None)


def test_refused_after_commit_stays_pending_and_is_retried(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    wait_until(lambda: len(adapter.syncs) >= 1)
    adapter.refuse_changes = grpc.StatusCode.ALREADY_EXISTS  # e.g. a context taken meanwhile
    answer = deploy(client, api_id, revision["id"], "Default")
    assert answer.status_code == 201
    assert answer.json()[0]["deploymentStatus"] == "PENDING"
    wait_until(lambda: len(adapter.syncs) >= 3, 10)  # the reconciler retries (with backoff)
    assert _deployments(client, api_id) == [("Default", "PENDING", False)]
    adapter.refuse_changes = None
    wait_until(lambda: adapter.placements(api_id) == {("Default", revision["id"])})
    wait_until(lambda: _deployments(client, api_id) == [("Default", "DEPLOYED", True)])


def _concurrent_deploys(client: TestClient, adapter: FakeAdapter, count: int = 20) -> None:
    """``count`` deploy-revision calls at once against a slow adapter: every one is 201."""
    adapter.delay = 0.3  # 20 x 0.3 s > SQLite's default 5 s wait for a lock held across calls
    apis = [create_api(client, name=f"C{n}", context=f"/c{n}")["id"] for n in range(count)]
    revisions = [create_revision(client, api_id)["id"] for api_id in apis]
    start = threading.Barrier(count)

    def one(n: int) -> int:
        start.wait()
        answer = deploy(client, apis[n], revisions[n], "Default")
        assert answer.status_code == 201, answer.text
        return int(answer.status_code)

    began = time.monotonic()
    with futures.ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(one, range(count)))
    print(
        f"\n{count} concurrent deploys (adapter 0.3 s per call): {time.monotonic() - began:.2f} s"
    )
    assert statuses == [201] * count
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        assert len(session.scalars(select(RevisionDeployment)).all()) == count
    for api_id, revision_id in zip(apis, revisions, strict=True):
        wait_until(lambda: adapter.placements(api_id) == {("Default", revision_id)})  # noqa: B023


def test_20_concurrent_deploys_on_sqlite(adapter_client: Pair) -> None:
    _concurrent_deploys(*adapter_client)


def test_20_concurrent_deploys_on_postgresql(
    settings: ControlPlaneSettings, fake_adapter: tuple[FakeAdapter, str], pg_url: str
) -> None:
    adapter, address = fake_adapter
    settings = settings.model_copy(update={"cp_adapter_address": address, "database_url": pg_url})
    with TestClient(create_app(settings)) as client:
        client.auth = AUTH
        _concurrent_deploys(client, adapter)


def test_a_lifecycle_change_not_yet_delivered_is_pending(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default")
    assert _deployments(client, api_id) == [("Default", "DEPLOYED", True)]
    adapter.refuse_changes = grpc.StatusCode.UNAVAILABLE
    publish = client.post(
        f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"}
    )
    assert publish.status_code == 200, publish.text
    assert _deployments(client, api_id) == [("Default", "PENDING", False)]
    adapter.refuse_changes = None
    wait_until(lambda: _deployments(client, api_id) == [("Default", "DEPLOYED", True)])
    assert [api.lifecycle_status for api in adapter.live[api_id]] == ["PUBLISHED"]
