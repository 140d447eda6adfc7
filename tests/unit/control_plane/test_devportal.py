"""Developer portal: published APIs, applications, subscriptions and keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.app import create_app
from control_plane.models import KeyMapping
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.helpers import (
    BASE,
    DEVPORTAL,
    create_api,
    create_application,
    generate_keys,
    published_api,
    subscribe,
)

APPS = f"{DEVPORTAL}/applications"


@pytest.fixture
def two_devs(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"cp_users": "admin:admin,ann:ann,bob:bob"})
    with TestClient(create_app(settings)) as client:
        client.auth = ("ann", "ann")
        yield client


def test_devportal_lists_published_apis_only(client: TestClient) -> None:
    create_api(client, name="Draft", context="/draft")
    live = published_api(client)
    listed = client.get(f"{DEVPORTAL}/apis").json()
    assert [api["id"] for api in listed["list"]] == [live]
    assert client.get(f"{DEVPORTAL}/apis/{live}").status_code == 200
    draft = client.get(f"{BASE}/apis", params={"query": "name:Draft"}).json()["list"][0]["id"]
    assert client.get(f"{DEVPORTAL}/apis/{draft}").status_code == 404


def test_application_crud_and_ownership(two_devs: TestClient) -> None:
    client = two_devs
    app = create_application(client, "Mine", throttlingPolicy="10PerMin", attributes={"a": "1"})
    assert app["owner"] == "ann" and app["throttlingPolicy"] == "10PerMin"
    app_id = app["applicationId"]
    assert client.post(APPS, json={"name": "Mine"}).status_code == 409
    # bob can have his own "Mine", and cannot see ann's
    bob = ("bob", "bob")
    assert client.post(APPS, json={"name": "Mine"}, auth=bob).status_code == 201
    assert client.get(f"{APPS}/{app_id}", auth=bob).status_code == 404
    assert client.delete(f"{APPS}/{app_id}", auth=bob).status_code == 404
    assert client.get(APPS).json()["count"] == 1
    updated = client.put(
        f"{APPS}/{app_id}", json={"name": "Renamed", "throttlingPolicy": "50PerMin"}
    )
    assert updated.status_code == 200 and updated.json()["name"] == "Renamed"
    assert client.get(APPS, params={"query": "ren"}).json()["count"] == 1
    assert client.delete(f"{APPS}/{app_id}").status_code == 200
    assert client.get(f"{APPS}/{app_id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "A", "throttlingPolicy": "Gold"}, "throttlingPolicy"),
        ({"name": "A", "tokenType": "SAML"}, "tokenType"),
        ({"throttlingPolicy": "Unlimited"}, "name"),
    ],
    ids=["blank", "unknown-tier", "token-type", "missing-name"],
)
def test_bad_application_is_400(client: TestClient, body: dict[str, Any], field: str) -> None:
    answer = client.post(APPS, json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["description"]


def test_subscription_rules(client: TestClient) -> None:
    api_id = published_api(client)
    draft = create_api(client, name="Draft", context="/draft", policies=["AsyncGold"])["id"]
    app_id = create_application(client)["applicationId"]
    made = subscribe(client, app_id, api_id, "AsyncGold")
    assert made.status_code == 201, made.text
    sub = made.json()
    assert sub["status"] == "UNBLOCKED"
    assert (sub["applicationId"], sub["apiId"], sub["throttlingPolicy"]) == (
        app_id,
        api_id,
        "AsyncGold",
    )
    assert subscribe(client, app_id, api_id, "AsyncBronze").status_code == 409
    unpublished = subscribe(client, app_id, draft)
    assert unpublished.status_code == 400 and "PUBLISHED" in unpublished.json()["description"]
    other = create_application(client, "Other")["applicationId"]
    tier = subscribe(client, other, api_id, "AsyncSilver")
    assert tier.status_code == 400 and "throttlingPolicy" in tier.json()["description"]
    missing_app = subscribe(client, "3fa85f64-5717-4562-b3fc-2c963f66afa6", api_id)
    assert missing_app.status_code == 404
    missing_api = subscribe(client, other, "3fa85f64-5717-4562-b3fc-2c963f66afa6")
    assert missing_api.status_code == 400 and "apiId" in missing_api.json()["description"]
    incomplete = client.post(f"{DEVPORTAL}/subscriptions", json={"apiId": api_id})
    assert incomplete.status_code == 400 and "applicationId" in incomplete.json()["description"]
    by_app = client.get(f"{DEVPORTAL}/subscriptions", params={"applicationId": app_id}).json()
    assert [s["subscriptionId"] for s in by_app["list"]] == [sub["subscriptionId"]]
    by_api = client.get(f"{DEVPORTAL}/subscriptions", params={"apiId": api_id}).json()
    assert by_api["count"] == 1
    sub_path = f"{DEVPORTAL}/subscriptions/{sub['subscriptionId']}"
    assert client.get(sub_path).json()["apiInfo"]["name"] == "Echo"
    assert client.get(f"{APPS}/{app_id}").json()["subscriptionCount"] == 1
    assert client.delete(sub_path).status_code == 200
    assert client.delete(sub_path).status_code == 404


def test_keys_generate_list_regenerate(client: TestClient) -> None:
    app_id = create_application(client)["applicationId"]
    made = generate_keys(client, app_id, validityTime=600)
    assert made.status_code == 200, made.text
    keys = made.json()
    assert keys["keyType"] == "PRODUCTION"
    assert keys["keyManager"] == "Resident Key Manager"
    assert keys["supportedGrantTypes"] == ["client_credentials"]
    assert keys["consumerSecret"] and keys["consumerKey"]
    assert keys["token"]["validityTime"] == 600 and keys["token"]["accessToken"].count(".") == 2
    again = generate_keys(client, app_id)
    assert again.status_code == 409
    assert generate_keys(client, app_id, "SANDBOX").status_code == 200
    listed = client.get(f"{APPS}/{app_id}/oauth-keys").json()
    assert listed["count"] == 2
    assert all("consumerSecret" not in key for key in listed["list"])  # shown once only
    # stored hashed, never in clear
    factory = client.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        row = session.scalar(select(KeyMapping).where(KeyMapping.key_type == "PRODUCTION"))
        assert row is not None and keys["consumerSecret"] not in row.secret_hash
        assert row.secret_hash.startswith("scrypt$")
    path = f"{APPS}/{app_id}/oauth-keys/{keys['keyMappingId']}"
    regenerated = client.post(f"{path}/regenerate-secret")
    assert regenerated.status_code == 200
    assert regenerated.json()["consumerKey"] == keys["consumerKey"]
    assert regenerated.json()["consumerSecret"] != keys["consumerSecret"]
    old = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(keys["consumerKey"], keys["consumerSecret"]),
    )
    assert old.status_code == 401
    new = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(keys["consumerKey"], regenerated.json()["consumerSecret"]),
    )
    assert new.status_code == 200
    token = client.post(f"{path}/generate-token", json={"validityPeriod": 120, "scopes": []})
    assert token.status_code == 200, token.text
    assert token.json()["validityTime"] == 120 and token.json()["tokenScopes"] == ["default"]
    assert (
        client.post(f"{APPS}/{app_id}/oauth-keys/nope/generate-token", json={}).status_code == 404
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"keyType": "TEST"}, "keyType"),
        ({"keyType": "PRODUCTION", "grantTypesToBeSupported": ["magic"]}, "grantTypes"),
        ({"keyType": "PRODUCTION", "validityTime": 0}, "validityTime"),
        ({"keyType": "PRODUCTION", "keyManager": "Okta"}, "keyManager"),
        ({"grantTypesToBeSupported": ["client_credentials"]}, "keyType"),
    ],
    ids=["type", "grant", "validity", "key-manager", "missing-type"],
)
def test_bad_key_request_is_400(client: TestClient, body: dict[str, Any], field: str) -> None:
    app_id = create_application(client)["applicationId"]
    answer = client.post(f"{APPS}/{app_id}/generate-keys", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["description"]


def test_bad_token_request_is_400(client: TestClient) -> None:
    app_id = create_application(client)["applicationId"]
    mapping = generate_keys(client, app_id).json()["keyMappingId"]
    path = f"{APPS}/{app_id}/oauth-keys/{mapping}/generate-token"
    answer = client.post(path, json={"validityPeriod": -5})
    assert answer.status_code == 400 and "validityPeriod" in answer.json()["description"]
    answer = client.post(path, json={"scopes": ["bad scope"]})
    assert answer.status_code == 400 and "scopes" in answer.json()["description"]
