"""Which live connections must be closed (pure): connection rules derived from the state.

A rule closes every live connection matching all its non-empty selectors. Rules in force:

- every revoked token id, until the token expires ("token revoked");
- every BLOCKED subscription (application + API, "subscription blocked");
- every PROD_ONLY_BLOCKED subscription (application + API + PRODUCTION,
  "subscription blocked for production keys");
- every API whose lifecycle is BLOCKED (API, "API blocked");
- for :data:`LINGER` seconds: subscriptions (application + API, "subscription removed") and
  APIs ("API undeployed") that disappeared since the previous state, unless they came back.

:func:`next_rules` maps the previous :class:`RuleState` and the current state to the next one;
it remembers only what is needed to notice disappearances. That memory is lost when the enforcer
restarts, so :func:`refusal` answers the same question from the current state alone for one live
connection's identity (HandshakeService.Reconcile, asked by each router when its rules stream
(re)opens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from enforcer.policies import PolicySet
from enforcer.subscriptions import BLOCKED, PROD_ONLY_BLOCKED, PRODUCTION, SubscriptionState
from wsgate_proto import enforcer_pb2

POLICY_VIOLATION = 1008
LINGER = 300.0

TOKEN_REVOKED = "token revoked"
SUBSCRIPTION_BLOCKED = "subscription blocked"
SUBSCRIPTION_PROD_BLOCKED = "subscription blocked for production keys"
SUBSCRIPTION_REMOVED = "subscription removed"
API_BLOCKED = "API blocked"
API_UNDEPLOYED = "API undeployed"
APPLICATION_REMOVED = "application removed"


@dataclass(frozen=True, order=True)
class Rule:
    token_id: str = ""
    application_id: str = ""
    api_id: str = ""
    key_type: str = ""
    reason: str = ""
    close_code: int = POLICY_VIOLATION

    def to_proto(self) -> enforcer_pb2.ConnectionRule:
        return enforcer_pb2.ConnectionRule(
            token_id=self.token_id,
            application_id=self.application_id,
            api_id=self.api_id,
            key_type=self.key_type,
            close_code=self.close_code,
            reason=self.reason,
        )


@dataclass(frozen=True)
class RuleState:
    """Rules with the time each stops being in force (``inf``: while the state holds it)."""

    rules: Mapping[Rule, float] = field(default_factory=lambda: MappingProxyType({}))
    api_ids: frozenset[str] = frozenset()
    pairs: frozenset[tuple[str, str]] = frozenset()  # (application_id, api_id)

    def in_force(self, now: float) -> frozenset[Rule]:
        return frozenset(rule for rule, until in self.rules.items() if until > now)


EMPTY_RULES = RuleState()


def standing_rules(policies: PolicySet, state: SubscriptionState, now: float) -> dict[Rule, float]:
    """The rules the current state holds by itself (no memory needed)."""
    rules: dict[Rule, float] = {}
    for jti, expires_at in state.revoked.items():
        until = float(expires_at) if expires_at > 0 else math.inf
        if until > now:
            rules[Rule(token_id=jti, reason=TOKEN_REVOKED)] = until
    for sub in state.subscriptions.values():
        if sub.state == BLOCKED:
            rule = Rule(
                application_id=sub.application_id, api_id=sub.api_id, reason=SUBSCRIPTION_BLOCKED
            )
            rules[rule] = math.inf
        elif sub.state == PROD_ONLY_BLOCKED:
            rule = Rule(
                application_id=sub.application_id,
                api_id=sub.api_id,
                key_type=PRODUCTION,
                reason=SUBSCRIPTION_PROD_BLOCKED,
            )
            rules[rule] = math.inf
    for api_id, entry in policies.apis.items():
        if entry.api.lifecycle_status.upper() == BLOCKED:
            rules[Rule(api_id=api_id, reason=API_BLOCKED)] = math.inf
    return rules


def next_rules(
    previous: RuleState,
    policies: PolicySet,
    state: SubscriptionState,
    now: float,
    *,
    linger: float = LINGER,
    compare_apis: bool = True,
    compare_subscriptions: bool = True,
) -> RuleState:
    """The rules after a state change.

    ``compare_apis`` / ``compare_subscriptions`` False: do not treat what is missing as removed
    (the adapter restarted and serves a set that may still be incomplete).
    """
    api_ids = frozenset(policies.apis)
    pairs = frozenset(state.by_pair)
    rules = standing_rules(policies, state, now)
    for rule, until in previous.rules.items():
        if math.isinf(until) or until <= now:
            continue
        back = (rule.reason == API_UNDEPLOYED and rule.api_id in api_ids) or (
            rule.reason == SUBSCRIPTION_REMOVED and (rule.application_id, rule.api_id) in pairs
        )
        if rule.reason in (API_UNDEPLOYED, SUBSCRIPTION_REMOVED) and not back:
            rules[rule] = max(until, rules.get(rule, 0.0))
    if compare_apis:
        for api_id in previous.api_ids - api_ids:
            rules[Rule(api_id=api_id, reason=API_UNDEPLOYED)] = now + linger
    if compare_subscriptions:
        for app_id, api_id in previous.pairs - pairs:
            rule = Rule(application_id=app_id, api_id=api_id, reason=SUBSCRIPTION_REMOVED)
            rules[rule] = now + linger
    return RuleState(rules=MappingProxyType(rules), api_ids=api_ids, pairs=pairs)


def epoch(version: str) -> str:
    """The adapter boot epoch in an xDS version ``"<counter>.<epoch>"`` ("" when none)."""
    return version.rpartition(".")[2] if "." in version else ""


def refusal(
    connection: enforcer_pb2.LiveConnection, policies: PolicySet, state: SubscriptionState
) -> str | None:
    """Why a connection allowed as ``connection`` would be refused now (a close reason), or None.

    Only what a rule could close for is looked at: the API (undeployed, blocked), the token
    (revoked), and, for a connection allowed under a subscription, the application and the
    subscription (removed, blocked, blocked for production keys).
    """
    entry = policies.apis.get(connection.api_id)
    if entry is None:
        return API_UNDEPLOYED
    if entry.api.lifecycle_status.upper() == BLOCKED:
        return API_BLOCKED
    if state.is_revoked(connection.token_id):
        return TOKEN_REVOKED
    if not connection.subscription_id:
        return None
    if connection.application_id not in state.applications:
        return APPLICATION_REMOVED
    sub = state.by_pair.get((connection.application_id, connection.api_id))
    if sub is None:
        return SUBSCRIPTION_REMOVED
    if sub.state == BLOCKED:
        return SUBSCRIPTION_BLOCKED
    if sub.state == PROD_ONLY_BLOCKED and connection.key_type.upper() == PRODUCTION:
        return SUBSCRIPTION_PROD_BLOCKED
    return None
