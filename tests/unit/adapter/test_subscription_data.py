"""The subscription data set: validation, one resource per item, served on every label."""

from __future__ import annotations

import json

import grpc
import pytest

from adapter.cache import SnapshotCache
from adapter.deploy_service import DeploymentService
from adapter.deployments import Registry
from adapter.subscription_data import InvalidSubscriptionData, check, to_resources
from wsgate_common.resources import (
    APPLICATION_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
    ROUTE_TYPE_URL,
    SUBSCRIPTION_DATA_TYPE_URLS,
    SUBSCRIPTION_TYPE_URL,
    THROTTLE_POLICY_TYPE_URL,
)
from wsgate_proto import definition_pb2
from wsgate_proto import subscription_pb2 as sp

JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": "sXch", "e": "AQAB"}]})


def data(**changes: object) -> sp.SubscriptionData:
    """A small consistent set; keyword arguments replace whole lists."""
    fields: dict[str, object] = {
        "applications": [sp.Application(id="app-1", name="App", owner="bob", tier="10PerMin")],
        "subscriptions": [
            sp.Subscription(id="sub-1", api_id="api-1", application_id="app-1", tier="AsyncGold")
        ],
        "key_mappings": [
            sp.KeyMapping(consumer_key="ck-1", application_id="app-1", key_type="PRODUCTION")
        ],
        "policies": [
            sp.ThrottlePolicy(name="Unlimited", kind="subscription"),
            sp.ThrottlePolicy(name="Unlimited", kind="application"),
            sp.ThrottlePolicy(
                name="AsyncGold",
                kind="subscription",
                message_count=100,
                unit_time=1,
                time_unit="min",
            ),
        ],
        "key_managers": [
            sp.KeyManager(
                name="cp", issuer="https://cp/token", algorithms=["RS256"], jwks_json=JWKS
            )
        ],
        "revoked_tokens": [sp.RevokedToken(jti="j-1", expires_at=1)],
    }
    fields.update(changes)
    return sp.SubscriptionData(**fields)  # type: ignore[arg-type]


def test_a_consistent_set_becomes_one_resource_per_item() -> None:
    resources = to_resources(data())
    assert set(resources) == set(SUBSCRIPTION_DATA_TYPE_URLS)
    assert list(resources[APPLICATION_TYPE_URL]) == ["app-1"]
    assert list(resources[SUBSCRIPTION_TYPE_URL]) == ["sub-1"]
    assert list(resources[KEY_MAPPING_TYPE_URL]) == ["ck-1"]
    # WSO2 reuses "Unlimited" for several kinds: the resource name carries the kind.
    assert sorted(resources[THROTTLE_POLICY_TYPE_URL]) == [
        "application/Unlimited",
        "subscription/AsyncGold",
        "subscription/Unlimited",
    ]
    assert list(resources[KEY_MANAGER_TYPE_URL]) == ["cp"]
    assert list(resources[REVOKED_TOKEN_TYPE_URL]) == ["j-1"]
    packed = resources[SUBSCRIPTION_TYPE_URL]["sub-1"]
    assert packed.type_url == SUBSCRIPTION_TYPE_URL
    assert sp.Subscription.FromString(packed.value).tier == "AsyncGold"


def test_empty_set_is_fine() -> None:
    assert check(sp.SubscriptionData()) == []
    assert all(not named for named in to_resources(sp.SubscriptionData()).values())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"applications": [sp.Application(id="a"), sp.Application(id="a")]}, "'a' appears twice"),
        ({"applications": [sp.Application(id="")]}, "application id is empty"),
        (
            {"subscriptions": [sp.Subscription(id="s", api_id="x", application_id="nope")]},
            "unknown application 'nope'",
        ),
        (
            {"subscriptions": [sp.Subscription(id="s", application_id="app-1")]},
            "no api_id",
        ),
        (
            {
                "subscriptions": [
                    sp.Subscription(id="s", api_id="x", application_id="app-1", state="PAUSED")
                ]
            },
            "state 'PAUSED'",
        ),
        (
            {
                "subscriptions": [
                    sp.Subscription(id="s1", api_id="x", application_id="app-1"),
                    sp.Subscription(id="s2", api_id="x", application_id="app-1"),
                ]
            },
            "subscribed twice",
        ),
        (
            {"key_mappings": [sp.KeyMapping(consumer_key="k", application_id="app-1")]},
            "key_type ''",
        ),
        (
            {
                "key_mappings": [
                    sp.KeyMapping(consumer_key="k", application_id="app-1", key_type="SANDBOX"),
                    sp.KeyMapping(consumer_key="k", application_id="app-1", key_type="SANDBOX"),
                ]
            },
            "consumer key 'k' appears twice",
        ),
        ({"policies": [sp.ThrottlePolicy(name="p", kind="weird")]}, "kind must be"),
        ({"policies": [sp.ThrottlePolicy(name="p", time_unit="week")]}, "time_unit"),
        ({"policies": [sp.ThrottlePolicy(name="p", message_count=-1)]}, "negative"),
        (
            {
                "key_managers": [
                    sp.KeyManager(name="k", issuer="i", algorithms=["HS256"], jwks_json=JWKS)
                ]
            },
            "algorithms must be",
        ),
        ({"key_managers": [sp.KeyManager(name="k", issuer="i", algorithms=["RS256"])]}, "needs"),
        (
            {
                "key_managers": [
                    sp.KeyManager(name="k", issuer="i", algorithms=["RS256"], jwks_json="{not json")
                ]
            },
            "not a JWKS",
        ),
        (
            {
                "key_managers": [
                    sp.KeyManager(
                        name="k", issuer="i", algorithms=["RS256"], jwks_json='{"keys": []}'
                    )
                ]
            },
            "holds no key",
        ),
        (
            {
                "key_managers": [
                    sp.KeyManager(name="k1", issuer="i", algorithms=["RS256"], jwks_json=JWKS),
                    sp.KeyManager(name="k2", issuer="i", algorithms=["RS256"], jwks_json=JWKS),
                ]
            },
            "issuer 'i' appears in two",
        ),
        ({"revoked_tokens": [sp.RevokedToken(jti="j"), sp.RevokedToken(jti="j")]}, "twice"),
    ],
    ids=[
        "dup-app",
        "empty-app-id",
        "sub-unknown-app",
        "sub-no-api",
        "sub-bad-state",
        "sub-pair-twice",
        "key-type",
        "dup-consumer-key",
        "policy-kind",
        "policy-unit",
        "policy-negative",
        "km-hs256",
        "km-no-keys",
        "km-bad-jwks",
        "km-empty-jwks",
        "km-dup-issuer",
        "dup-jti",
    ],
)
def test_garbage_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSubscriptionData, match=message):
        to_resources(data(**changes))


def _registry_with_labels() -> Registry:
    registry = Registry(SnapshotCache(epoch="e"))
    registry.deploy(
        definition_pb2.ApiDefinition(
            id="A:1",
            name="A",
            version="1",
            context="/a",
            production_endpoint=definition_pb2.Endpoint(url="ws://b:1"),
            deployments=[
                definition_pb2.Deployment(name="Default"),
                definition_pb2.Deployment(name="Edge"),
            ],
        )
    )
    return registry


def _ids(registry: Registry, label: str, type_url: str) -> list[str]:
    snapshot = registry.cache.ensure(label)
    return sorted(snapshot.resources.get(type_url, {}))


def test_registry_serves_the_set_on_every_label_and_replaces_it() -> None:
    registry = _registry_with_labels()
    before = registry.versions()
    versions = registry.put_subscription_data(data())
    assert set(versions) == {"Default", "Edge"}
    assert all(versions[label] != before[label] for label in versions)
    for label in ("Default", "Edge"):
        assert _ids(registry, label, SUBSCRIPTION_TYPE_URL) == ["sub-1"]
    # The routes did not move.
    default = registry.cache.get("Default")
    assert default is not None and default.version(ROUTE_TYPE_URL) == "1.e"
    # A second set without the subscription: only the Subscription type gets a new version.
    held = registry.cache.get("Default")
    assert held is not None
    registry.put_subscription_data(data(subscriptions=[]))
    after = registry.cache.get("Default")
    assert after is not None
    assert _ids(registry, "Default", SUBSCRIPTION_TYPE_URL) == []
    changed = {t for t in SUBSCRIPTION_DATA_TYPE_URLS if after.version(t) != held.version(t)}
    assert changed == {SUBSCRIPTION_TYPE_URL}
    # A label appearing later starts with the current set.
    assert _ids(registry, "Late", APPLICATION_TYPE_URL) == ["app-1"]
    assert registry.subscription_counts()[APPLICATION_TYPE_URL] == 1


def test_refused_set_leaves_the_old_one() -> None:
    registry = _registry_with_labels()
    registry.put_subscription_data(data())
    with pytest.raises(InvalidSubscriptionData):
        registry.put_subscription_data(data(applications=[]))
    assert _ids(registry, "Edge", APPLICATION_TYPE_URL) == ["app-1"]


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted


async def test_grpc_put_answers_versions_or_invalid_argument() -> None:
    service = DeploymentService(_registry_with_labels(), "boot")
    context = _Context()
    response = await service.PutSubscriptionData(data(), context)
    assert set(response.versions) == {"Default", "Edge"}
    with pytest.raises(_Aborted):
        await service.PutSubscriptionData(data(applications=[]), context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown application" in context.details
