"""Subscription data in the enforcer: the store (apply / NACK), and the decisions it drives."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from enforcer.decide import decide
from enforcer.policies import ApiEntry
from enforcer.subscriptions import Subscription, SubscriptionState, SubscriptionStore, quotas
from enforcer.tokens import Claims
from wsgate_common.resources import (
    APPLICATION_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
    SUBSCRIPTION_TYPE_URL,
    THROTTLE_POLICY_TYPE_URL,
)
from wsgate_proto import config_pb2, enforcer_pb2
from wsgate_proto import subscription_pb2 as sp

from .conftest import NOW

API_ID = "api-1"


def packed(*items: Message) -> list[any_pb2.Any]:
    out = []
    for item in items:
        resource = any_pb2.Any()
        resource.Pack(item)
        out.append(resource)
    return out


def full_store(sub_state: str = "UNBLOCKED") -> SubscriptionStore:
    store = SubscriptionStore()
    store.apply(
        APPLICATION_TYPE_URL,
        "1",
        packed(sp.Application(id="app-1", name="App", owner="bob", tier="10PerMin")),
    )
    store.apply(
        SUBSCRIPTION_TYPE_URL,
        "1",
        packed(
            sp.Subscription(
                id="sub-1", api_id=API_ID, application_id="app-1", tier="AsyncGold", state=sub_state
            )
        ),
    )
    store.apply(
        KEY_MAPPING_TYPE_URL,
        "1",
        packed(
            sp.KeyMapping(consumer_key="ck-prod", application_id="app-1", key_type="PRODUCTION"),
            sp.KeyMapping(consumer_key="ck-sand", application_id="app-1", key_type="SANDBOX"),
        ),
    )
    store.apply(
        THROTTLE_POLICY_TYPE_URL,
        "1",
        packed(
            sp.ThrottlePolicy(
                name="AsyncGold",
                kind="subscription",
                message_count=200,
                unit_time=1,
                time_unit="min",
                stop_on_quota_reach=True,
            ),
            sp.ThrottlePolicy(
                name="10PerMin",
                kind="application",
                message_count=10,
                unit_time=1,
                time_unit="min",
            ),
            sp.ThrottlePolicy(
                name="50KPerHour", kind="api", message_count=50_000, unit_time=2, time_unit="hour"
            ),
            sp.ThrottlePolicy(name="Unlimited", kind="subscription"),
        ),
    )
    store.apply(REVOKED_TOKEN_TYPE_URL, "1", packed(sp.RevokedToken(jti="gone", expires_at=NOW)))
    return store


def api_entry(
    scopes: tuple[str, ...] = (), sandbox: bool = True, throttling: str = "50KPerHour"
) -> ApiEntry:
    topic = config_pb2.TopicPolicy(path="/t", secured=True, scopes=list(scopes))
    api = config_pb2.ApiPolicy(
        api_id=API_ID,
        topics=[topic],
        api_throttling_policy=throttling,
        has_production_endpoint=True,
        has_sandbox_endpoint=sandbox,
        source="control-plane",
    )
    return ApiEntry(api=api, topics=MappingProxyType({"/t": topic}))


def km_claims(
    consumer_key: str = "ck-prod",
    key_type: str = "PRODUCTION",
    token_id: str = "jti-1",
    scopes: tuple[str, ...] = ("read",),
    check_subscriptions: bool = True,
) -> Callable[[str], Claims]:
    claims = Claims(
        issuer="https://cp/token",
        issuer_name="cp",
        subject="bob@carbon.super",
        scopes=scopes,
        key_type=key_type,
        token_id=token_id,
        expires_at=NOW + 60,
        application=None,
        check_subscriptions=check_subscriptions,
        raw={},
        consumer_key=consumer_key,
    )
    return lambda token: claims


def ask(
    state: SubscriptionState, authenticate: Callable[[str], Claims], e: ApiEntry | None = None
) -> enforcer_pb2.HandshakeResponse:
    request = enforcer_pb2.HandshakeRequest(api_id=API_ID, topic="/t", authorization="Bearer t")
    return decide(request, e or api_entry(), authenticate, state)


def test_subscribed_application_is_allowed_with_everything_the_router_needs() -> None:
    response = ask(full_store().current, km_claims())
    assert response.allowed, response.description
    assert (response.application_id, response.application_name) == ("app-1", "App")
    assert response.application_tier == "10PerMin"
    assert response.subscriber == "bob"
    assert (response.subscription_id, response.subscription_tier) == ("sub-1", "AsyncGold")
    assert response.api_tier == "50KPerHour"
    assert [(q.key, q.policy, q.message_count, q.window_seconds) for q in response.quotas] == [
        (f"api:{API_ID}", "50KPerHour", 50_000, 7200.0),
        (f"sub:app-1:{API_ID}", "AsyncGold", 200, 60.0),
        ("app:app-1:bob", "10PerMin", 10, 60.0),
    ]
    assert [q.stop_on_quota_reach for q in response.quotas] == [False, True, False]


def test_unknown_consumer_key_is_forbidden() -> None:
    response = ask(full_store().current, km_claims(consumer_key="nobody"))
    assert (response.http_status, response.error_code) == (403, 900908)
    assert response.message == "Resource forbidden"
    assert response.description == "no application is registered for this consumer key"


def test_key_type_must_match_the_key_mapping() -> None:
    response = ask(full_store().current, km_claims(consumer_key="ck-sand", key_type="PRODUCTION"))
    assert (response.http_status, response.error_code) == (401, 900901)
    assert response.description == "wrong key type"


def test_unsubscribed_api_is_forbidden() -> None:
    store = full_store()
    store.apply(SUBSCRIPTION_TYPE_URL, "2", [])
    response = ask(store.current, km_claims())
    assert (response.http_status, response.error_code) == (403, 900908)
    assert response.description == (
        "User is NOT authorized to access the Resource. API Subscription validation failed."
    )


def test_blocked_subscription() -> None:
    state = full_store("BLOCKED").current
    for consumer_key, key_type in (("ck-prod", "PRODUCTION"), ("ck-sand", "SANDBOX")):
        response = ask(state, km_claims(consumer_key, key_type))
        assert (response.http_status, response.error_code) == (403, 900907)
        assert response.message == "The requested API is temporarily blocked"


def test_prod_only_blocked_lets_sandbox_keys_through() -> None:
    state = full_store("PROD_ONLY_BLOCKED").current
    production = ask(state, km_claims())
    assert (production.http_status, production.error_code) == (403, 900907)
    sandbox = ask(state, km_claims("ck-sand", "SANDBOX"))
    assert sandbox.allowed and sandbox.key_type == "SANDBOX"


@pytest.mark.parametrize("check_subscriptions", [True, False], ids=["key-manager", "testkey"])
def test_revoked_token_is_refused_for_any_issuer(check_subscriptions: bool) -> None:
    authenticate = km_claims(token_id="gone", check_subscriptions=check_subscriptions)
    response = ask(full_store().current, authenticate)
    assert (response.http_status, response.error_code) == (401, 900901)
    assert response.description == "Access token revoked"


def test_scopes_are_checked_after_the_subscription() -> None:
    state = full_store().current
    assert ask(state, km_claims(scopes=("x",)), api_entry(scopes=("read",))).error_code == 900910
    assert ask(state, km_claims("nobody", scopes=("x",)), api_entry(("read",))).error_code == 900908


def test_sandbox_endpoint_rule_still_applies() -> None:
    response = ask(full_store().current, km_claims("ck-sand", "SANDBOX"), api_entry(sandbox=False))
    assert (response.http_status, response.error_code) == (401, 900901)
    assert "sandbox" in response.description.lower()


def test_test_keys_get_only_the_api_quota() -> None:
    response = ask(full_store().current, km_claims(check_subscriptions=False))
    assert response.allowed
    assert [q.key for q in response.quotas] == [f"api:{API_ID}"]
    assert response.subscriber == "bob@carbon.super"
    assert response.subscription_tier == "Unlimited"


def test_unlimited_and_unknown_policies_give_no_quota() -> None:
    state = full_store().current
    api = api_entry(throttling="Unlimited").api
    sub = Subscription(
        tier="Unlimited", application_id="a", application_tier="Nope", subscriber="s"
    )
    assert quotas(state, api, sub) == []
    api.api_throttling_policy = "NoSuchPolicy"
    assert quotas(state, api, None) == []


@pytest.mark.parametrize(
    ("type_url", "items"),
    [
        (APPLICATION_TYPE_URL, [sp.Application(id="a"), sp.Application(id="a")]),
        (APPLICATION_TYPE_URL, [sp.Application()]),
        (
            SUBSCRIPTION_TYPE_URL,
            [sp.Subscription(id="s", api_id="x", application_id="a", state="WEIRD")],
        ),
        (KEY_MAPPING_TYPE_URL, [sp.KeyMapping(consumer_key="k", key_type="OTHER")]),
        (THROTTLE_POLICY_TYPE_URL, [sp.ThrottlePolicy()]),
        (KEY_MANAGER_TYPE_URL, [sp.KeyManager(name="k"), sp.KeyManager(name="k")]),
        (REVOKED_TOKEN_TYPE_URL, [sp.RevokedToken()]),
    ],
    ids=["dup-app", "no-id", "bad-state", "bad-key-type", "no-name", "dup-km", "no-jti"],
)
def test_bad_update_is_refused_and_the_last_good_state_kept(
    type_url: str, items: list[Message]
) -> None:
    store = full_store()
    before = store.current
    with pytest.raises(ValueError):
        store.apply(type_url, "9", packed(*items))
    assert store.current is before


def test_resource_of_another_type_is_refused() -> None:
    store = SubscriptionStore()
    with pytest.raises(ValueError, match="has type"):
        store.apply(APPLICATION_TYPE_URL, "1", packed(sp.Subscription(id="s")))
    broken = any_pb2.Any(type_url=APPLICATION_TYPE_URL, value=b"\xff\xff")
    with pytest.raises(ValueError, match="does not parse"):
        store.apply(APPLICATION_TYPE_URL, "1", [broken])


def test_each_type_swaps_alone_and_notifies() -> None:
    seen: list[str] = []
    store = SubscriptionStore(on_change=lambda t, before, after: seen.append(t))
    store.apply(APPLICATION_TYPE_URL, "1", packed(sp.Application(id="a")))
    first = store.current
    store.apply(REVOKED_TOKEN_TYPE_URL, "2", packed(sp.RevokedToken(jti="j")))
    assert store.current is not first
    assert store.current.applications is first.applications
    assert store.current.versions == {APPLICATION_TYPE_URL: "1", REVOKED_TOKEN_TYPE_URL: "2"}
    assert seen == [APPLICATION_TYPE_URL, REVOKED_TOKEN_TYPE_URL]


def topic_entry(topic_policy: str, api_policy: str = "50KPerHour") -> ApiEntry:
    topic = config_pb2.TopicPolicy(path="/t", secured=True, throttling_policy=topic_policy)
    api = config_pb2.ApiPolicy(
        api_id=API_ID,
        topics=[topic],
        api_throttling_policy=api_policy,
        has_production_endpoint=True,
        has_sandbox_endpoint=True,
        source="control-plane",  # application tokens open control-plane APIs only
    )
    return ApiEntry(api=api, topics=MappingProxyType({"/t": topic}))


def test_topic_throttling_policy_becomes_a_topic_quota_after_the_api_one() -> None:
    """operations[].throttlingPolicy -> Quota "topic:<api>:<topic>", checked with the others."""
    response = ask(full_store().current, km_claims(), topic_entry("50KPerHour"))
    assert response.allowed
    assert [(q.key, q.policy, q.message_count, q.window_seconds) for q in response.quotas] == [
        (f"api:{API_ID}", "50KPerHour", 50_000, 7200.0),
        (f"topic:{API_ID}:/t", "50KPerHour", 50_000, 7200.0),
        (f"sub:app-1:{API_ID}", "AsyncGold", 200, 60.0),
        ("app:app-1:bob", "10PerMin", 10, 60.0),
    ]


def test_topic_quota_applies_to_unsecured_topics_and_skips_unlimited_ones() -> None:
    entry = topic_entry("50KPerHour", api_policy="Unlimited")
    open_topic = config_pb2.TopicPolicy(path="/t", secured=False, throttling_policy="50KPerHour")
    entry.api.topics[0].CopyFrom(open_topic)
    entry = ApiEntry(api=entry.api, topics=MappingProxyType({"/t": open_topic}))
    response = ask(full_store().current, km_claims(), entry)
    assert [q.key for q in response.quotas] == [f"topic:{API_ID}:/t"]
    for name in ("Unlimited", "", "NoSuchPolicy", "AsyncGold"):  # AsyncGold: not an API policy
        response = ask(full_store().current, km_claims(), topic_entry(name))
        assert f"topic:{API_ID}:/t" not in [q.key for q in response.quotas], name
