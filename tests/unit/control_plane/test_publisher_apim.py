"""Publisher additions: tiers, delete with subscriptions, block/unblock, restore, AsyncAPI
import, project export."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.unit.control_plane.helpers import (
    BASE,
    api_body,
    create_api,
    create_application,
    create_revision,
    deploy,
    published_api,
    subscribe,
)

ASYNCAPI = """
asyncapi: 2.0.0
info:
  title: Notifier
  version: 2.0.0
  description: pushes notes
servers:
  production:
    url: localhost:8765
    protocol: ws
  sandbox:
    url: wss://sandbox.example:8443/ws
components:
  securitySchemes:
    oauth2:
      type: oauth2
      flows:
        implicit:
          authorizationUrl: http://localhost
          scopes:
            read:notes: read them
          x-scopes-bindings:
            read:notes: subscriber
channels:
  /notes:
    subscribe:
      x-scopes: [read:notes]
      x-uri-mapping: /sub-notes
      x-auth-type: Application
    publish:
      x-uri-mapping: /pub-notes
      x-scopes: [write:notes]
  /rooms/{room}:
    publish:
      x-throttling-tier: Unlimited
"""


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"policies": ["Platinum"]}, "policies"),
        ({"apiThrottlingPolicy": "AsyncGold"}, "apiThrottlingPolicy"),
        (
            {"operations": [{"target": "/x", "verb": "PUBLISH", "throttlingPolicy": "Nope"}]},
            "operations[0].throttlingPolicy",
        ),
    ],
    ids=["subscription-tier", "api-tier", "operation-tier"],
)
def test_unknown_tiers_are_400_naming_the_field(
    client: TestClient, changes: dict[str, Any], field: str
) -> None:
    answer = client.post(f"{BASE}/apis", json=api_body(**changes))
    assert answer.status_code == 400, answer.text
    assert answer.json()["description"].startswith(field)
    api_id = create_api(client)["id"]
    updated = client.put(f"{BASE}/apis/{api_id}", json=api_body(**changes))
    assert updated.status_code == 400 and field in updated.json()["description"]


def test_delete_is_409_while_subscribed(client: TestClient) -> None:
    api_id = published_api(client)
    app_id = create_application(client)["applicationId"]
    sub_id = subscribe(client, app_id, api_id).json()["subscriptionId"]
    refused = client.delete(f"{BASE}/apis/{api_id}")
    assert refused.status_code == 409 and "subscription" in refused.json()["description"]
    client.delete(f"/api/am/devportal/v3/subscriptions/{sub_id}")
    assert client.delete(f"{BASE}/apis/{api_id}").status_code == 200


def test_block_unblock_and_list(client: TestClient) -> None:
    api_id = published_api(client)
    app_id = create_application(client)["applicationId"]
    sub_id = subscribe(client, app_id, api_id).json()["subscriptionId"]
    listed = client.get(f"{BASE}/subscriptions", params={"apiId": api_id}).json()
    assert [s["subscriptionId"] for s in listed["list"]] == [sub_id]
    assert listed["list"][0]["subscriptionStatus"] == "UNBLOCKED"
    assert listed["list"][0]["applicationInfo"]["subscriber"] == "admin"
    for state in ("BLOCKED", "PROD_ONLY_BLOCKED"):
        blocked = client.post(
            f"{BASE}/subscriptions/block-subscription",
            params={"subscriptionId": sub_id, "blockState": state},
        )
        assert blocked.status_code == 200 and blocked.json()["subscriptionStatus"] == state
    unblocked = client.post(
        f"{BASE}/subscriptions/unblock-subscription", params={"subscriptionId": sub_id}
    )
    assert unblocked.json()["subscriptionStatus"] == "UNBLOCKED"
    bad_state = client.post(
        f"{BASE}/subscriptions/block-subscription",
        params={"subscriptionId": sub_id, "blockState": "FROZEN"},
    )
    assert bad_state.status_code == 400 and "blockState" in bad_state.json()["description"]
    missing = client.post(
        f"{BASE}/subscriptions/block-subscription",
        params={"subscriptionId": "nope", "blockState": "BLOCKED"},
    )
    assert missing.status_code == 404
    no_param = client.post(f"{BASE}/subscriptions/unblock-subscription")
    assert no_param.status_code == 400 and "subscriptionId" in no_param.json()["description"]
    assert client.get(f"{BASE}/subscriptions", params={"apiId": "nope"}).status_code == 404


def test_restore_revision(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)["id"]
    changed = client.put(f"{BASE}/apis/{api_id}", json=api_body(description="changed"))
    assert changed.json()["description"] == "changed"
    restored = client.post(
        f"{BASE}/apis/{api_id}/restore-revision", params={"revisionId": revision}
    )
    assert restored.status_code == 201, restored.text
    assert restored.json()["description"] == "echoes"
    assert client.get(f"{BASE}/apis/{api_id}").json()["description"] == "echoes"
    unknown = client.post(f"{BASE}/apis/{api_id}/restore-revision", params={"revisionId": "x"})
    assert unknown.status_code == 404


def import_asyncapi(client: TestClient, document: str, properties: dict[str, Any] | None) -> Any:
    data = {"additionalProperties": json.dumps(properties)} if properties is not None else {}
    return client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", document.encode(), "application/yaml")},
        data=data,
    )


def test_import_asyncapi(client: TestClient) -> None:
    answer = import_asyncapi(
        client, ASYNCAPI, {"context": "/notifier", "policies": ["AsyncBronze"]}
    )
    assert answer.status_code == 201, answer.text
    api = answer.json()
    assert (api["name"], api["version"], api["context"]) == ("Notifier", "2.0.0", "/notifier")
    assert api["policies"] == ["AsyncBronze"]
    assert api["endpointConfig"]["production_endpoints"]["url"] == "ws://localhost:8765"
    assert api["endpointConfig"]["sandbox_endpoints"]["url"] == "wss://sandbox.example:8443/ws"
    ops = {(op["target"], op["verb"]): op for op in api["operations"]}
    assert set(ops) == {
        ("/notes", "SUBSCRIBE"),
        ("/notes", "PUBLISH"),
        ("/rooms/{room}", "PUBLISH"),
    }
    assert ops[("/notes", "SUBSCRIBE")]["scopes"] == ["read:notes"]
    assert ops[("/notes", "SUBSCRIBE")]["authType"] == "Application"
    # publish wins the topic's shared URL mapping
    assert ops[("/notes", "SUBSCRIBE")]["uriMapping"] == "/pub-notes"
    assert ops[("/notes", "PUBLISH")]["uriMapping"] == "/pub-notes"
    scopes = {s["scope"]["name"]: s["scope"]["bindings"] for s in api["scopes"]}
    assert scopes == {"read:notes": ["subscriber"], "write:notes": []}
    again = import_asyncapi(client, ASYNCAPI, {"context": "/notifier"})
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("document", "properties", "field"),
    [
        ("asyncapi: 3.0.0\ninfo: {title: A, version: '1'}", {"context": "/a"}, "file"),
        ("asyncapi: [unclosed", {"context": "/a"}, "file"),
        (ASYNCAPI, None, "context"),
        (ASYNCAPI, {"context": "/a b"}, "context"),
        (ASYNCAPI, {"context": "/a", "policies": ["Nope"]}, "policies"),
        (
            "asyncapi: 2.0.0\ninfo: {title: A, version: '1'}\nchannels: [1]",
            {"context": "/a"},
            "channels",
        ),
    ],
    ids=["version", "syntax", "no-context", "bad-context", "tier", "channels"],
)
def test_bad_import_is_400_naming_the_field(
    client: TestClient, document: str, properties: dict[str, Any] | None, field: str
) -> None:
    answer = import_asyncapi(client, document, properties)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["description"]


def test_import_needs_a_file(client: TestClient) -> None:
    answer = client.post(f"{BASE}/apis/import-asyncapi", data={"additionalProperties": "{}"})
    assert answer.status_code == 400 and "file" in answer.json()["description"]
    bad_json = client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("a.yaml", ASYNCAPI.encode())},
        data={"additionalProperties": "{nope"},
    )
    assert bad_json.status_code == 400
    assert "additionalProperties" in bad_json.json()["description"]


def test_export_project_zip(client: TestClient) -> None:
    api_id = published_api(client)
    revision = create_revision(client, api_id)["id"]
    assert deploy(client, api_id, revision, "Default").status_code == 201
    answer = client.get(f"{BASE}/apis/export", params={"apiId": api_id})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert "Echo-1.0.zip" in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert sorted(archive.namelist()) == [
        "Echo-1.0/Definitions/asyncapi.yaml",
        "Echo-1.0/api.yaml",
        "Echo-1.0/deployment_environments.yaml",
    ]
    api = yaml.safe_load(archive.read("Echo-1.0/api.yaml"))
    assert api["type"] == "api"
    data = api["data"]
    assert (data["name"], data["context"], data["version"], data["lifeCycleStatus"]) == (
        "Echo",
        "/echo",
        "1.0",
        "PUBLISHED",
    )
    assert data["policies"] == ["AsyncGold", "AsyncBronze"]
    assert data["endpointConfig"]["production_endpoints"]["url"] == "ws://localhost:8765"
    asyncapi = yaml.safe_load(archive.read("Echo-1.0/Definitions/asyncapi.yaml"))
    assert asyncapi["channels"]["/notifications"]["subscribe"]["x-scopes"] == ["read"]
    assert asyncapi["channels"]["/rooms/{room}"]["publish"]["x-uri-mapping"] == "/r/{room}"
    envs = yaml.safe_load(archive.read("Echo-1.0/deployment_environments.yaml"))
    assert envs["data"] == [
        {
            "displayOnDevportal": True,
            "deploymentEnvironment": "Default",
            "deploymentVhost": "localhost",
        }
    ]
    # Round trip: the exported AsyncAPI imports back as the same topics.
    reimported = import_asyncapi(
        client,
        archive.read("Echo-1.0/Definitions/asyncapi.yaml").decode(),
        {"name": "EchoCopy", "context": "/echo-copy"},
    )
    assert reimported.status_code == 201, reimported.text
    original = {(o["target"], o["verb"], tuple(o["scopes"])) for o in data["operations"]}
    copied = {(o["target"], o["verb"], tuple(o["scopes"])) for o in reimported.json()["operations"]}
    assert copied == original


def test_export_errors(client: TestClient) -> None:
    assert client.get(f"{BASE}/apis/export", params={"apiId": "nope"}).status_code == 404
    missing = client.get(f"{BASE}/apis/export")
    assert missing.status_code == 400 and "apiId" in missing.json()["description"]
    api_id = create_api(client)["id"]
    json_format = client.get(f"{BASE}/apis/export", params={"apiId": api_id, "format": "JSON"})
    assert json_format.status_code == 400 and "format" in json_format.json()["description"]
