"""Connection rules derived from the state (pure)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from enforcer.policies import EMPTY, ApiEntry, PolicySet
from enforcer.rules import (
    API_BLOCKED,
    API_UNDEPLOYED,
    APPLICATION_REMOVED,
    EMPTY_RULES,
    SUBSCRIPTION_BLOCKED,
    SUBSCRIPTION_PROD_BLOCKED,
    SUBSCRIPTION_REMOVED,
    TOKEN_REVOKED,
    Rule,
    RuleState,
    epoch,
    next_rules,
    refusal,
    standing_rules,
)
from enforcer.subscriptions import EMPTY_STATE, SubscriptionState
from wsgate_proto import config_pb2, enforcer_pb2
from wsgate_proto import subscription_pb2 as sp

NOW = 1_000.0


def policies(**lifecycles: str) -> PolicySet:
    apis = {
        api_id: ApiEntry(
            api=config_pb2.ApiPolicy(api_id=api_id, lifecycle_status=status),
            topics=MappingProxyType({}),
        )
        for api_id, status in lifecycles.items()
    }
    return PolicySet(version="1", apis=MappingProxyType(apis))


def subs(*items: tuple[str, str, str], revoked: dict[str, int] | None = None) -> SubscriptionState:
    """Subscriptions as (application, api, state)."""
    by_id = {
        f"{app}/{api}": sp.Subscription(id=f"{app}/{api}", application_id=app, api_id=api, state=st)
        for app, api, st in items
    }
    by_pair = {(s.application_id, s.api_id): s for s in by_id.values()}
    return SubscriptionState(
        subscriptions=MappingProxyType(by_id),
        by_pair=MappingProxyType(by_pair),
        revoked=MappingProxyType(revoked or {}),
    )


def test_standing_rules_from_the_state_alone() -> None:
    state = subs(
        ("a1", "x", "BLOCKED"),
        ("a2", "x", "PROD_ONLY_BLOCKED"),
        ("a3", "x", "UNBLOCKED"),
        revoked={"live": 2_000, "old": 900},
    )
    rules = standing_rules(policies(x="PUBLISHED", y="BLOCKED"), state, NOW)
    assert set(rules) == {
        Rule(token_id="live", reason="token revoked"),
        Rule(application_id="a1", api_id="x", reason="subscription blocked"),
        Rule(
            application_id="a2",
            api_id="x",
            key_type="PRODUCTION",
            reason="subscription blocked for production keys",
        ),
        Rule(api_id="y", reason="API blocked"),
    }
    assert rules[Rule(token_id="live", reason="token revoked")] == 2_000
    assert all(rule.close_code == 1008 for rule in rules)


def test_revoked_token_rule_ends_with_the_token() -> None:
    state = next_rules(EMPTY_RULES, EMPTY, subs(revoked={"j": 1_500}), NOW)
    assert Rule(token_id="j", reason="token revoked") in state.in_force(NOW)
    assert state.in_force(1_500) == frozenset()


def test_disappeared_items_linger_then_go() -> None:
    before = next_rules(
        EMPTY_RULES, policies(x="PUBLISHED", y="PUBLISHED"), subs(("a", "x", "")), 0
    )
    assert before.in_force(NOW) == frozenset()
    after = next_rules(before, policies(x="PUBLISHED"), subs(), NOW, linger=300)
    expected = {
        Rule(api_id="y", reason="API undeployed"),
        Rule(application_id="a", api_id="x", reason="subscription removed"),
    }
    assert after.in_force(NOW) == expected
    # Still there after an unrelated update, gone once the linger time has passed.
    later = next_rules(after, policies(x="PUBLISHED"), subs(), NOW + 100, linger=300)
    assert later.in_force(NOW + 100) == expected
    gone = next_rules(later, policies(x="PUBLISHED"), subs(), NOW + 301, linger=300)
    assert gone.in_force(NOW + 301) == frozenset()


def test_items_that_come_back_lift_their_rules() -> None:
    before = next_rules(EMPTY_RULES, policies(x="PUBLISHED"), subs(("a", "x", "")), 0)
    removed = next_rules(before, EMPTY, subs(), NOW)
    assert len(removed.in_force(NOW)) == 2
    back = next_rules(removed, policies(x="PUBLISHED"), subs(("a", "x", "")), NOW + 1)
    assert back.in_force(NOW + 1) == frozenset()


def test_unblocking_lifts_the_rule() -> None:
    blocked = next_rules(EMPTY_RULES, EMPTY, subs(("a", "x", "BLOCKED")), NOW)
    assert len(blocked.in_force(NOW)) == 1
    unblocked = next_rules(blocked, EMPTY, subs(("a", "x", "UNBLOCKED")), NOW)
    assert unblocked.in_force(NOW) == frozenset()


def test_a_new_adapter_boot_is_not_a_mass_removal() -> None:
    before = next_rules(EMPTY_RULES, policies(x="PUBLISHED"), subs(("a", "x", "")), 0)
    after = next_rules(
        before, EMPTY, EMPTY_STATE, NOW, compare_apis=False, compare_subscriptions=False
    )
    assert after.in_force(NOW) == frozenset()
    assert after == RuleState(rules=MappingProxyType({}))


def test_epoch_of_a_version() -> None:
    assert epoch("12.ab12cd34") == "ab12cd34"
    assert epoch("") == ""
    assert epoch("7") == ""


def live(
    api: str = "x", app: str = "a1", sub: str = "s", key_type: str = "PRODUCTION", jti: str = "t"
) -> enforcer_pb2.LiveConnection:
    return enforcer_pb2.LiveConnection(
        api_id=api, application_id=app, subscription_id=sub, key_type=key_type, token_id=jti
    )


def with_apps(state: SubscriptionState, *apps: str) -> SubscriptionState:
    found = {app: sp.Application(id=app) for app in apps}
    return replace(state, applications=MappingProxyType(found))


def test_refusal_is_derived_from_the_current_state_alone() -> None:
    """What Reconcile answers: no memory of an earlier state is needed (an enforcer that just
    restarted judges the same), in the order a handshake would be refused."""
    state = with_apps(
        subs(
            ("a1", "x", "UNBLOCKED"),
            ("a2", "x", "BLOCKED"),
            ("a3", "x", "PROD_ONLY_BLOCKED"),
            ("gone", "x", "UNBLOCKED"),
            revoked={"old-jti": 2_000},
        ),
        "a1",
        "a2",
        "a3",
    )
    apis = policies(x="PUBLISHED", y="BLOCKED")
    assert refusal(live(), apis, state) is None
    assert refusal(live(api="z"), apis, state) == API_UNDEPLOYED
    assert refusal(live(api="y"), apis, state) == API_BLOCKED
    assert refusal(live(jti="old-jti"), apis, state) == TOKEN_REVOKED
    assert refusal(live(app="a9"), apis, state) == APPLICATION_REMOVED
    assert refusal(live(app="gone"), apis, state) == APPLICATION_REMOVED
    assert refusal(live(app="a2"), apis, state) == SUBSCRIPTION_BLOCKED
    assert refusal(live(app="a3"), apis, state) == SUBSCRIPTION_PROD_BLOCKED
    assert refusal(live(app="a3", key_type="SANDBOX"), apis, state) is None
    unsubscribed = with_apps(subs(), "a1")
    assert refusal(live(), apis, unsubscribed) == SUBSCRIPTION_REMOVED
    # Allowed without a subscription (unsecured topic, test key): only API and token count.
    assert refusal(live(sub=""), apis, unsubscribed) is None
    assert refusal(live(sub="", api="z"), apis, unsubscribed) == API_UNDEPLOYED
    assert refusal(live(sub="", app="", jti=""), EMPTY, EMPTY_STATE) == API_UNDEPLOYED
