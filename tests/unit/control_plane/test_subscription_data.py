"""The subscription data: built from rows (pure), and pushed to the adapter after changes."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient

from control_plane.models import (
    Application,
    KeyMapping,
    RevokedToken,
    Subscription,
    ThrottlingPolicy,
)
from control_plane.subscription_data import (
    API_KEY_ISSUER,
    RESIDENT_KEY_MANAGER,
    build,
    resident_key_manager,
)
from tests.unit.control_plane.helpers import (
    BASE,
    FakeAdapter,
    create_application,
    generate_keys,
    published_api,
    subscribe,
)
from tests.unit.control_plane.test_push import wait_until

Pair = tuple[TestClient, FakeAdapter]

APP = uuid.UUID(int=1)
API = uuid.UUID(int=2)


def test_build_maps_every_row() -> None:
    data = build(
        applications=[
            Application(
                id=APP, name="App", owner="dev", throttling_policy="10PerMin", attributes={"k": "v"}
            )
        ],
        subscriptions=[
            Subscription(
                id=uuid.UUID(int=3),
                application_id=APP,
                api_id=API,
                tier="AsyncGold",
                state="BLOCKED",
            )
        ],
        key_mappings=[
            KeyMapping(consumer_key="ck", application_id=APP, key_type="SANDBOX", secret_hash="h")
        ],
        policies=[
            ThrottlingPolicy(
                kind="subscription",
                name="AsyncGold",
                limit_type="EVENTCOUNTLIMIT",
                count=5000,
                unit_time=1,
                time_unit="min",
                stop_on_quota_reach=True,
            ),
            ThrottlingPolicy(
                kind="application",
                name="Unlimited",
                limit_type="REQUESTCOUNTLIMIT",
                count=0,
                unit_time=1,
                time_unit="min",
                stop_on_quota_reach=False,
            ),
        ],
        key_managers=[resident_key_manager("https://iss", {"keys": [{"kid": "k1"}]})],
        revoked=[RevokedToken(jti="live", expires_at=200), RevokedToken(jti="old", expires_at=50)],
        now=100,
    )
    [app] = data.applications
    assert (app.id, app.name, app.owner, app.tier, dict(app.attributes)) == (
        str(APP),
        "App",
        "dev",
        "10PerMin",
        {"k": "v"},
    )
    [sub] = data.subscriptions
    assert (sub.api_id, sub.application_id, sub.tier, sub.state) == (
        str(API),
        str(APP),
        "AsyncGold",
        "BLOCKED",
    )
    [key] = data.key_mappings
    assert (key.consumer_key, key.application_id, key.key_type, key.key_manager) == (
        "ck",
        str(APP),
        "SANDBOX",
        RESIDENT_KEY_MANAGER,
    )
    assert [(p.kind, p.name, p.message_count, p.unit_time, p.time_unit) for p in data.policies] == [
        ("application", "Unlimited", 0, 1, "min"),
        ("subscription", "AsyncGold", 5000, 1, "min"),
    ]
    assert [p.stop_on_quota_reach for p in data.policies] == [False, True]
    [manager] = data.key_managers
    assert manager.issuer == "https://iss"
    assert list(manager.algorithms) == ["RS256"]
    assert manager.consumer_key_claim == "azp"
    assert json.loads(manager.jwks_json) == {"keys": [{"kid": "k1"}]}
    assert [(t.jti, t.expires_at) for t in data.revoked_tokens] == [("live", 200)]


def test_build_is_deterministic() -> None:
    apps = [
        Application(
            id=uuid.UUID(int=n), name=f"a{n}", owner="o", throttling_policy="U", attributes={}
        )
        for n in (3, 1, 2)
    ]
    common = {
        "subscriptions": [],
        "key_mappings": [],
        "policies": [],
        "key_managers": [],
        "revoked": [],
        "now": 0.0,
    }
    first = build(applications=apps, **common)  # type: ignore[arg-type]
    second = build(applications=list(reversed(apps)), **common)  # type: ignore[arg-type]
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )


def test_every_change_pushes_the_complete_set(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    wait_until(lambda: bool(adapter.subscription_data))  # the first sync sends it too
    assert len(adapter.latest().policies) == 16
    # Access tokens and API keys: one signing key, two issuers, told apart by token_kind.
    [api_keys, manager] = adapter.latest().key_managers
    assert manager.name == RESIDENT_KEY_MANAGER
    assert (manager.issuer, manager.token_kind) == ("https://localhost:9443/oauth2/token", "")
    assert api_keys.name == API_KEY_ISSUER
    assert api_keys.issuer == "https://localhost:9443/oauth2/token/apikey"
    assert (api_keys.token_kind, list(api_keys.algorithms)) == ("api_key", ["RS256"])
    jwks = client.get("/oauth2/jwks").json()
    assert json.loads(manager.jwks_json) == jwks
    assert json.loads(api_keys.jwks_json) == jwks
    api_id = published_api(client)
    app_id = create_application(client)["applicationId"]
    assert [a.id for a in adapter.latest().applications] == [app_id]
    sub_id = subscribe(client, app_id, api_id).json()["subscriptionId"]
    assert [(s.id, s.state) for s in adapter.latest().subscriptions] == [(sub_id, "UNBLOCKED")]
    keys = generate_keys(client, app_id).json()
    assert [k.consumer_key for k in adapter.latest().key_mappings] == [keys["consumerKey"]]
    blocked = client.post(
        f"{BASE}/subscriptions/block-subscription",
        params={"subscriptionId": sub_id, "blockState": "PROD_ONLY_BLOCKED"},
    )
    assert blocked.status_code == 200
    assert adapter.latest().subscriptions[0].state == "PROD_ONLY_BLOCKED"
    revoked = client.post(
        "/oauth2/revoke",
        data={"token": keys["token"]["accessToken"]},
        auth=(keys["consumerKey"], keys["consumerSecret"]),
    )
    assert revoked.status_code == 200
    assert len(adapter.latest().revoked_tokens) == 1
    client.delete(f"/api/am/devportal/v3/applications/{app_id}")
    latest = adapter.latest()
    assert (len(latest.applications), len(latest.subscriptions), len(latest.key_mappings)) == (
        0,
        0,
        0,
    )


def test_unimplemented_adapter_does_not_fail_rest_calls_and_is_retried(
    adapter_client: Pair,
) -> None:
    client, adapter = adapter_client
    adapter.unimplemented = True
    app = client.post(
        "/api/am/devportal/v3/applications", json={"name": "A", "throttlingPolicy": "Unlimited"}
    )
    assert app.status_code == 201
    sync = client.app.state.sync  # type: ignore[attr-defined]
    wait_until(lambda: sync._subscriptions_stale)
    adapter.unimplemented = False
    wait_until(lambda: any(len(d.applications) == 1 for d in adapter.subscription_data))
    wait_until(lambda: not sync._subscriptions_stale)
    assert sync.last_push_ms is not None and sync.last_push_ms < 5000


def test_adapter_restart_resends_subscription_data(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    create_application(client)
    wait_until(lambda: bool(adapter.subscription_data))
    before = len(adapter.subscription_data)
    adapter.boot_id = "boot-2"
    wait_until(lambda: len(adapter.subscription_data) > before)
    assert len(adapter.latest().applications) == 1


def test_policy_changes_are_pushed(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    body = {
        "policyName": "AsyncPlatinum",
        "defaultLimit": {"type": "EVENTCOUNTLIMIT", "eventCount": 9000, "timeUnit": "hour"},
    }
    made = client.post("/api/am/admin/v4/throttling/policies/subscription", json=body)
    assert made.status_code == 201, made.text

    def platinum() -> list[tuple[int, str]]:
        return [
            (p.message_count, p.time_unit)
            for p in adapter.latest().policies
            if p.name == "AsyncPlatinum"
        ]

    assert platinum() == [(9000, "hour")]
    body["defaultLimit"]["eventCount"] = 10  # type: ignore[index]
    policy_path = f"/api/am/admin/v4/throttling/policies/subscription/{made.json()['policyId']}"
    assert client.put(policy_path, json=body).status_code == 200
    assert platinum() == [(10, "hour")]
    assert client.delete(policy_path).status_code == 200
    assert platinum() == []
