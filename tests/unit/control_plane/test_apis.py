"""Publisher /apis: create, read, list, update, delete, validation, duplicates, auth."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.control_plane.helpers import BASE, api_body, create_api


def test_create_returns_201_with_id_and_defaults(client: TestClient) -> None:
    response = client.post(f"{BASE}/apis", json=api_body(context="echo/", provider=None))
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["id"]) == 36
    assert body["context"] == "/echo"
    assert body["lifeCycleStatus"] == "CREATED"
    assert body["provider"] == "admin"
    assert body["endpointConfig"]["production_endpoints"]["url"] == "ws://localhost:8765"
    assert body["operations"][0]["authType"] == "Any"
    assert response.headers["location"].endswith(body["id"])


def test_operations_default_to_wildcard_topic_both_ways(client: TestClient) -> None:
    body = api_body(scopes=[])
    del body["operations"]
    created = client.post(f"{BASE}/apis", json=body).json()
    assert {(op["target"], op["verb"]) for op in created["operations"]} == {
        ("/*", "SUBSCRIBE"),
        ("/*", "PUBLISH"),
    }


def test_get_returns_what_was_created(client: TestClient) -> None:
    created = create_api(client)
    fetched = client.get(f"{BASE}/apis/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


@pytest.mark.parametrize("api_id", ["0b0e4f7a-5d7e-4e53-9c55-4ab1b0e0c0de", "not-a-uuid"])
def test_get_unknown_is_404_error_body(client: TestClient, api_id: str) -> None:
    response = client.get(f"{BASE}/apis/{api_id}")
    assert response.status_code == 404
    assert response.json()["code"] == 404
    assert api_id in response.json()["description"]


def test_list_searches_and_paginates(client: TestClient) -> None:
    for index in range(3):
        create_api(client, name=f"Chat{index}", context=f"/chat{index}")
    create_api(client, name="Prices", context="/prices")
    everything = client.get(f"{BASE}/apis").json()
    assert everything["count"] == 4
    assert everything["pagination"]["total"] == 4
    page = client.get(f"{BASE}/apis", params={"query": "chat", "limit": 2, "offset": 2}).json()
    assert page["count"] == 1
    assert page["pagination"] == {"offset": 2, "limit": 2, "total": 3, "next": "", "previous": ""}
    assert page["list"][0]["name"] == "Chat2"
    by_context = client.get(f"{BASE}/apis", params={"query": "context:/prices"}).json()
    assert [item["name"] for item in by_context["list"]] == ["Prices"]
    assert by_context["list"][0]["lifeCycleStatus"] == "CREATED"


def test_update_replaces_working_copy(client: TestClient) -> None:
    created = create_api(client)
    changed = api_body(description="new words", context="/echo2")
    response = client.put(f"{BASE}/apis/{created['id']}", json=changed)
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "new words"
    assert client.get(f"{BASE}/apis/{created['id']}").json()["context"] == "/echo2"


def test_update_cannot_rename_or_take_a_used_context(client: TestClient) -> None:
    created = create_api(client)
    create_api(client, name="Other", context="/other")
    renamed = client.put(f"{BASE}/apis/{created['id']}", json=api_body(name="Renamed"))
    assert renamed.status_code == 400
    assert "name" in renamed.json()["description"]
    clash = client.put(f"{BASE}/apis/{created['id']}", json=api_body(context="/other"))
    assert clash.status_code == 409


def test_delete_removes_it(client: TestClient) -> None:
    created = create_api(client)
    assert client.delete(f"{BASE}/apis/{created['id']}").status_code == 200
    assert client.get(f"{BASE}/apis/{created['id']}").status_code == 404
    assert client.delete(f"{BASE}/apis/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"context": "/bad context"}, "context"),
        ({"context": "/"}, "context"),
        ({"version": ""}, "version"),
        ({"type": "HTTP"}, "type"),
        ({"name": "a<b"}, "name"),
        (
            {"endpointConfig": {"production_endpoints": {"url": "http://localhost:8765"}}},
            "endpointConfig.production_endpoints.url",
        ),
        ({"operations": [{"target": "/a", "verb": "GET"}]}, "operations[0].verb"),
        (
            {"operations": [{"target": "/a", "verb": "PUBLISH", "scopes": ["nope"]}]},
            "operations[0].scopes",
        ),
    ],
)
def test_invalid_fields_are_400_naming_the_field(
    client: TestClient, changes: dict[str, Any], field: str
) -> None:
    response = client.post(f"{BASE}/apis", json=api_body(**changes))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400
    assert body["message"] == "Bad Request"
    assert body["description"].startswith(f"{field}:"), body["description"]


def test_missing_field_and_broken_json_are_400(client: TestClient) -> None:
    body = api_body()
    del body["context"]
    missing = client.post(f"{BASE}/apis", json=body)
    assert missing.status_code == 400
    assert missing.json()["description"].startswith("context:")
    broken = client.post(
        f"{BASE}/apis", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"context": "/other"}, "name"), ({"name": "Other"}, "context")],
)
def test_duplicates_are_409(client: TestClient, changes: dict[str, Any], field: str) -> None:
    create_api(client)
    response = client.post(f"{BASE}/apis", json=api_body(**changes))
    assert response.status_code == 409
    assert field in response.json()["description"]
    # Same name and context with another version is a new version, not a duplicate.
    assert client.post(f"{BASE}/apis", json=api_body(version="2.0")).status_code == 201


@pytest.mark.parametrize("auth", [None, ("admin", "wrong"), ("nobody", "admin")])
def test_auth_required(client: TestClient, auth: tuple[str, str] | None) -> None:
    client.auth = auth
    response = client.get(f"{BASE}/apis")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["code"] == 401


def test_health_ready_and_docs(client: TestClient) -> None:
    client.auth = None
    assert client.get("/health").json() == {"status": "healthy"}
    assert client.get("/ready").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "wsgate control plane"
    assert client.get("/docs").status_code == 200
    unknown = client.get("/nowhere")
    assert unknown.status_code == 404
    assert set(unknown.json()) == {"code", "message", "description"}
