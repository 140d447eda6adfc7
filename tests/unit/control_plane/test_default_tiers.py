"""Issue 13 item 6: an API created or imported without ``policies`` offers the tier WSO2 gives
streaming APIs (AsyncUnlimited), so it can be subscribed; without any tier it cannot be
published, and the refusal names ``policies``."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.control_plane.helpers import api_body, create_application, subscribe
from tests.unit.control_plane.test_publisher_apim import ASYNCAPI, import_asyncapi

BASE = "/api/am/publisher/v4"
ADMIN = "/api/am/admin/v4"


def publish(client: TestClient, api_id: str) -> object:
    return client.post(
        f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"}
    )


def test_an_imported_api_without_policies_can_be_subscribed(client: TestClient) -> None:
    answer = import_asyncapi(client, ASYNCAPI, {"context": "/notifier"})
    assert answer.status_code == 201, answer.text
    api = answer.json()
    assert api["policies"] == ["AsyncUnlimited"]
    assert publish(client, api["id"]).status_code == 200  # type: ignore[attr-defined]
    app = create_application(client)
    subscribed = subscribe(client, app["applicationId"], api["id"], tier="AsyncUnlimited")
    assert subscribed.status_code == 201, subscribed.text


def test_a_created_api_without_policies_gets_the_default_and_keeps_named_ones(
    client: TestClient,
) -> None:
    body = api_body()
    del body["policies"]
    created = client.post(f"{BASE}/apis", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["policies"] == ["AsyncUnlimited"]
    named = client.post(f"{BASE}/apis", json=api_body(name="Other", context="/other"))
    assert named.json()["policies"] == ["AsyncGold"]
    # An update that leaves the tiers out does not make the API unsubscribable either.
    api_id = created.json()["id"]
    updated = client.put(f"{BASE}/apis/{api_id}", json={**body, "policies": []})
    assert updated.status_code == 200, updated.text
    assert updated.json()["policies"] == ["AsyncUnlimited"]


def test_without_any_tier_publishing_is_refused_naming_policies(client: TestClient) -> None:
    tiers = client.get(f"{ADMIN}/throttling/policies/subscription").json()["list"]
    [unlimited] = [t for t in tiers if t["policyName"] == "AsyncUnlimited"]
    deleted = client.delete(f"{ADMIN}/throttling/policies/subscription/{unlimited['policyId']}")
    assert deleted.status_code in (200, 204), deleted.text
    body = api_body()
    del body["policies"]
    created = client.post(f"{BASE}/apis", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["policies"] == []
    refused = publish(client, created.json()["id"])
    assert refused.status_code == 400  # type: ignore[attr-defined]
    description = refused.json()["description"]  # type: ignore[attr-defined]
    assert description.startswith("policies: API Echo 1.0 offers no subscription tier")
    assert client.get(f"{BASE}/apis/{created.json()['id']}").json()["lifeCycleStatus"] == "CREATED"
