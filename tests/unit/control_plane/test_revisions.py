"""Revisions and deploying them (no adapter running: the database still records it)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.models import ApiRevision, RevisionDeployment
from tests.unit.control_plane.helpers import (
    BASE,
    add_environment,
    create_api,
    create_revision,
    deploy,
)


def test_revisions_are_numbered_and_capped_at_five(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    made = [create_revision(client, api_id, f"r{n}") for n in range(1, 6)]
    assert [r["displayName"] for r in made] == [f"Revision {n}" for n in range(1, 6)]
    assert made[0]["description"] == "r1"
    sixth = client.post(f"{BASE}/apis/{api_id}/revisions", json={"description": "r6"})
    assert sixth.status_code == 400
    assert "5" in sixth.json()["description"]
    listed = client.get(f"{BASE}/apis/{api_id}/revisions").json()
    assert listed["count"] == 5
    # Deleting one makes room; numbers are not reused.
    assert client.delete(f"{BASE}/apis/{api_id}/revisions/{made[0]['id']}").status_code == 200
    assert create_revision(client, api_id)["displayName"] == "Revision 6"


def test_revision_is_a_snapshot(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    api = client.get(f"{BASE}/apis/{api_id}").json()
    api["description"] = "changed after the revision"
    assert client.put(f"{BASE}/apis/{api_id}", json=api).status_code == 200
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        stored = session.get(ApiRevision, uuid.UUID(revision["id"]))
        assert stored is not None
        assert stored.definition["description"] == "echoes"


def test_deploy_without_adapter_is_201_and_recorded(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    response = deploy(client, api_id, revision["id"], "Default")
    assert response.status_code == 201, response.text
    [info] = response.json()
    assert info["name"] == "Default"
    assert info["vhost"] == "localhost"
    assert info["revisionUuid"] == revision["id"]
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(RevisionDeployment)).all()
        assert [(str(r.revision_id), r.environment) for r in rows] == [(revision["id"], "Default")]
    deployed = client.get(f"{BASE}/apis/{api_id}/revisions", params={"query": "deployed:true"})
    assert deployed.json()["count"] == 1


def test_new_revision_replaces_the_old_one_only_where_it_is_deployed(
    client: TestClient,
) -> None:
    """WSO2: each gateway environment runs its own revision of an API."""
    add_environment(client, "Edge")
    api_id = create_api(client)["id"]
    first = create_revision(client, api_id)
    second = create_revision(client, api_id)
    assert deploy(client, api_id, first["id"], "Default", "Edge").status_code == 201
    response = deploy(client, api_id, second["id"], "Default")
    assert [d["name"] for d in response.json()] == ["Default"]
    by_id = {r["id"]: r for r in client.get(f"{BASE}/apis/{api_id}/revisions").json()["list"]}
    assert [d["name"] for d in by_id[first["id"]]["deploymentInfo"]] == ["Edge"]
    assert [d["name"] for d in by_id[second["id"]]["deploymentInfo"]] == ["Default"]
    moved = deploy(client, api_id, second["id"], "Edge")
    assert [d["name"] for d in moved.json()] == ["Default", "Edge"]
    by_id = {r["id"]: r for r in client.get(f"{BASE}/apis/{api_id}/revisions").json()["list"]}
    assert by_id[first["id"]]["deploymentInfo"] == []


def test_undeploy_and_delete_rules(client: TestClient) -> None:
    add_environment(client, "Edge")
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default", "Edge")
    deployed_delete = client.delete(f"{BASE}/apis/{api_id}/revisions/{revision['id']}")
    assert deployed_delete.status_code == 400
    left = deploy(client, api_id, revision["id"], "Edge", action="undeploy")
    assert left.status_code == 201
    assert [d["name"] for d in left.json()] == ["Default"]
    assert deploy(client, api_id, revision["id"], "Default", action="undeploy").json() == []
    assert client.delete(f"{BASE}/apis/{api_id}/revisions/{revision['id']}").status_code == 200


def test_deploy_bad_requests(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    assert deploy(client, api_id, revision["id"]).status_code == 400  # empty list
    bad_env = deploy(client, api_id, revision["id"], "bad env")
    assert bad_env.status_code == 400
    assert bad_env.json()["description"].startswith("[0].name")
    other_api = create_api(client, name="Other", context="/other")["id"]
    assert deploy(client, other_api, revision["id"], "Default").status_code == 404
    no_query = client.post(f"{BASE}/apis/{api_id}/deploy-revision", json=[{"name": "Default"}])
    assert no_query.status_code == 400
    assert "revisionId" in no_query.json()["description"]


def test_delete_api_with_deployments(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    deploy(client, api_id, revision["id"], "Default")
    assert client.delete(f"{BASE}/apis/{api_id}").status_code == 200
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        assert session.scalars(select(RevisionDeployment)).all() == []
