"""Connection rules derived from the state (pure)."""

from __future__ import annotations

from types import MappingProxyType

from enforcer.policies import EMPTY, ApiEntry, PolicySet
from enforcer.rules import (
    EMPTY_RULES,
    Rule,
    RuleState,
    epoch,
    next_rules,
    standing_rules,
)
from enforcer.subscriptions import EMPTY_STATE, SubscriptionState
from wsgate_proto import config_pb2
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
