"""Who may call what: the subscription data streamed over xDS, and the pure lookups on it.

The adapter serves six types (applications, subscriptions, key mappings, throttle policies, key
managers, revoked tokens), each a complete set per update. :class:`SubscriptionStore` holds one
immutable :class:`SubscriptionState`; each type's handler builds the new mapping aside and swaps
in a new state with one assignment, so a bad update (NACK) leaves the last good one serving.

The lookups (:func:`resolve`, :func:`quotas`) are pure: the handshake decision calls them with
the state it read once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from enforcer.denials import AuthError, Denial, ErrorCode
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

log = logging.getLogger(__name__)

PRODUCTION = "PRODUCTION"
BLOCKED = "BLOCKED"
PROD_ONLY_BLOCKED = "PROD_ONLY_BLOCKED"
UNLIMITED = "Unlimited"
SECONDS_PER_UNIT = {"sec": 1, "min": 60, "hour": 3600, "day": 86400}

FORBIDDEN_MESSAGE = "Resource forbidden"
NO_APPLICATION = "no application is registered for this consumer key"
NO_KEY_APPLICATION = "the application this API key was issued to is not registered"
NOT_SUBSCRIBED = (
    "User is NOT authorized to access the Resource. API Subscription validation failed."
)
BLOCKED_MESSAGE = "The requested API is temporarily blocked"

M = TypeVar("M", bound=Message)
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Subscription:
    """The subscription a handshake is made under (what the allowed answer reports)."""

    tier: str
    application_id: str = ""
    application_name: str = ""
    application_tier: str = ""
    subscriber: str = ""
    subscription_id: str = ""


def _frozen(mapping: Mapping[K, V]) -> Mapping[K, V]:
    return MappingProxyType(dict(mapping))


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SubscriptionState:
    """Every subscription-data item this enforcer knows, indexed for the handshake lookups."""

    applications: Mapping[str, sp.Application] = field(default_factory=_empty)
    subscriptions: Mapping[str, sp.Subscription] = field(default_factory=_empty)
    # (application_id, api_id) -> subscription
    by_pair: Mapping[tuple[str, str], sp.Subscription] = field(default_factory=_empty)
    key_mappings: Mapping[str, sp.KeyMapping] = field(default_factory=_empty)
    # (kind, name) -> policy; kind "" for a policy that did not say
    policies: Mapping[tuple[str, str], sp.ThrottlePolicy] = field(default_factory=_empty)
    key_managers: Mapping[str, sp.KeyManager] = field(default_factory=_empty)
    revoked: Mapping[str, int] = field(default_factory=_empty)  # jti -> expires_at
    versions: Mapping[str, str] = field(default_factory=_empty)

    def is_revoked(self, token_id: str) -> bool:
        return bool(token_id) and token_id in self.revoked

    def policy(self, kind: str, name: str) -> sp.ThrottlePolicy | None:
        return self.policies.get((kind, name)) or self.policies.get(("", name))


EMPTY_STATE = SubscriptionState()


# ---- building a state from xDS resources (pure; ValueError means NACK) -----------------------


def unpack(type_url: str, cls: type[M], resources: Sequence[any_pb2.Any]) -> list[M]:
    """Every resource as a ``cls`` message.

    Raises:
        ValueError: a resource is of another type or does not parse.
    """
    items = []
    for index, resource in enumerate(resources):
        if resource.type_url != type_url:
            raise ValueError(f"resource #{index} has type {resource.type_url!r}")
        item = cls()
        try:
            item.ParseFromString(resource.value)
        except DecodeError as exc:
            raise ValueError(f"resource #{index} does not parse: {exc}") from exc
        items.append(item)
    return items


def _index(items: Sequence[M], key: Callable[[M], str], what: str) -> dict[str, M]:
    indexed: dict[str, M] = {}
    for item in items:
        name = key(item)
        if not name:
            raise ValueError(f"a {what} has no id")
        if name in indexed:
            raise ValueError(f"{what} {name!r} appears twice")
        indexed[name] = item
    return indexed


def with_applications(
    state: SubscriptionState, version: str, resources: Sequence[any_pb2.Any]
) -> SubscriptionState:
    apps = _index(unpack(APPLICATION_TYPE_URL, sp.Application, resources), lambda a: a.id, "app")
    return _bump(state, APPLICATION_TYPE_URL, version, applications=_frozen(apps))


def with_subscriptions(
    state: SubscriptionState, version: str, resources: Sequence[any_pb2.Any]
) -> SubscriptionState:
    items = unpack(SUBSCRIPTION_TYPE_URL, sp.Subscription, resources)
    by_id = _index(items, lambda s: s.id, "subscription")
    by_pair: dict[tuple[str, str], sp.Subscription] = {}
    for sub in items:
        if not sub.api_id or not sub.application_id:
            raise ValueError(f"subscription {sub.id!r} lacks its API or application")
        if sub.state not in ("", "UNBLOCKED", BLOCKED, PROD_ONLY_BLOCKED):
            raise ValueError(f"subscription {sub.id!r} has unknown state {sub.state!r}")
        pair = (sub.application_id, sub.api_id)
        if pair in by_pair:
            raise ValueError(f"application {pair[0]!r} is subscribed twice to API {pair[1]!r}")
        by_pair[pair] = sub
    return _bump(
        state,
        SUBSCRIPTION_TYPE_URL,
        version,
        subscriptions=_frozen(by_id),
        by_pair=_frozen(by_pair),
    )


def with_key_mappings(
    state: SubscriptionState, version: str, resources: Sequence[any_pb2.Any]
) -> SubscriptionState:
    items = unpack(KEY_MAPPING_TYPE_URL, sp.KeyMapping, resources)
    for mapping in items:
        if mapping.key_type not in ("PRODUCTION", "SANDBOX"):
            raise ValueError(f"consumer key {mapping.consumer_key!r} has no valid key type")
    mappings = _index(items, lambda m: m.consumer_key, "consumer key")
    return _bump(state, KEY_MAPPING_TYPE_URL, version, key_mappings=_frozen(mappings))


def with_policies(
    state: SubscriptionState, version: str, resources: Sequence[any_pb2.Any]
) -> SubscriptionState:
    policies: dict[tuple[str, str], sp.ThrottlePolicy] = {}
    for policy in unpack(THROTTLE_POLICY_TYPE_URL, sp.ThrottlePolicy, resources):
        key = (policy.kind, policy.name)
        if not policy.name:
            raise ValueError("a throttle policy has no name")
        if key in policies:
            raise ValueError(f"throttle policy {policy.kind}/{policy.name} appears twice")
        policies[key] = policy
    return _bump(state, THROTTLE_POLICY_TYPE_URL, version, policies=_frozen(policies))


def with_key_managers(
    state: SubscriptionState, version: str, resources: Sequence[any_pb2.Any]
) -> SubscriptionState:
    kms = _index(
        unpack(KEY_MANAGER_TYPE_URL, sp.KeyManager, resources), lambda k: k.name, "key manager"
    )
    return _bump(state, KEY_MANAGER_TYPE_URL, version, key_managers=_frozen(kms))


def with_revoked_tokens(
    state: SubscriptionState, version: str, resources: Sequence[any_pb2.Any]
) -> SubscriptionState:
    tokens = _index(
        unpack(REVOKED_TOKEN_TYPE_URL, sp.RevokedToken, resources), lambda t: t.jti, "jti"
    )
    revoked = {jti: token.expires_at for jti, token in tokens.items()}
    return _bump(state, REVOKED_TOKEN_TYPE_URL, version, revoked=_frozen(revoked))


def _bump(
    state: SubscriptionState, type_url: str, version: str, **changes: object
) -> SubscriptionState:
    versions = _frozen({**state.versions, type_url: version})
    return replace(state, versions=versions, **changes)  # type: ignore[arg-type]


BUILDERS: dict[str, Callable[[SubscriptionState, str, Sequence[any_pb2.Any]], SubscriptionState]]
BUILDERS = {
    APPLICATION_TYPE_URL: with_applications,
    SUBSCRIPTION_TYPE_URL: with_subscriptions,
    KEY_MAPPING_TYPE_URL: with_key_mappings,
    THROTTLE_POLICY_TYPE_URL: with_policies,
    KEY_MANAGER_TYPE_URL: with_key_managers,
    REVOKED_TOKEN_TYPE_URL: with_revoked_tokens,
}


class SubscriptionStore:
    """Holds the current :class:`SubscriptionState`; :meth:`handler` gives each type's xDS
    handler. ``on_change(type_url, before, after)`` runs after every applied update."""

    def __init__(
        self,
        on_change: Callable[[str, SubscriptionState, SubscriptionState], None] | None = None,
    ) -> None:
        self.current: SubscriptionState = EMPTY_STATE
        self.on_change = on_change

    def apply(self, type_url: str, version: str, resources: list[any_pb2.Any]) -> None:
        """Replace one type's items; raise (NACK) and keep the old state when they are bad."""
        before = self.current
        after = BUILDERS[type_url](before, version, resources)
        self.current = after
        log.info(
            "applied %s version %s (%d items)",
            type_url.rpartition(".")[2],
            version,
            len(resources),
        )
        if self.on_change is not None:
            self.on_change(type_url, before, after)

    def handler(self, type_url: str) -> Callable[[str, list[any_pb2.Any]], None]:
        if type_url not in BUILDERS:
            raise KeyError(type_url)
        return lambda version, resources: self.apply(type_url, version, resources)


# ---- the handshake lookups (pure) --------------------------------------------------------------


def resolve(state: SubscriptionState, claims: Claims, api_id: str) -> Subscription:
    """The subscription that lets the token's application call ``api_id``.

    Raises:
        Denial: 403 900908 (no application for the consumer key, or not subscribed),
            401 900901 (the key mapping's key type differs from the token's),
            403 900907 (the subscription is blocked, for every key or for production keys).
    """
    mapping = state.key_mappings.get(claims.consumer_key) if claims.consumer_key else None
    app = state.applications.get(mapping.application_id) if mapping is not None else None
    if mapping is None or app is None:
        raise Denial(403, ErrorCode.FORBIDDEN, FORBIDDEN_MESSAGE, NO_APPLICATION)
    if mapping.key_type != claims.key_type:
        raise AuthError("wrong key type")
    return subscribed(state, app, claims.key_type, api_id)


def resolve_application(
    state: SubscriptionState, application_id: str, key_type: str, api_id: str
) -> Subscription:
    """The subscription that lets an API key's application (named in the key) call ``api_id``
    with ``key_type``.

    Raises:
        Denial: 403 900908 (unknown application, or not subscribed), 403 900907 (blocked).
    """
    app = state.applications.get(application_id) if application_id else None
    if app is None:
        raise Denial(403, ErrorCode.FORBIDDEN, FORBIDDEN_MESSAGE, NO_KEY_APPLICATION)
    return subscribed(state, app, key_type, api_id)


def subscribed(
    state: SubscriptionState, app: sp.Application, key_type: str, api_id: str
) -> Subscription:
    """``app``'s subscription to ``api_id``, unless missing or blocked for ``key_type``.

    Raises:
        Denial: 403 900908 (not subscribed), 403 900907 (blocked).
    """
    sub = state.by_pair.get((app.id, api_id))
    if sub is None:
        raise Denial(403, ErrorCode.FORBIDDEN, FORBIDDEN_MESSAGE, NOT_SUBSCRIBED)
    if sub.state == BLOCKED:
        raise Denial(
            403, ErrorCode.SUBSCRIPTION_BLOCKED, BLOCKED_MESSAGE, "The subscription is blocked"
        )
    if sub.state == PROD_ONLY_BLOCKED and key_type == PRODUCTION:
        raise Denial(
            403,
            ErrorCode.SUBSCRIPTION_BLOCKED,
            BLOCKED_MESSAGE,
            "The subscription is blocked for production keys",
        )
    return Subscription(
        tier=sub.tier,
        application_id=app.id,
        application_name=app.name,
        application_tier=app.tier,
        subscriber=app.owner,
        subscription_id=sub.id,
    )


def quota(state: SubscriptionState, kind: str, name: str, key: str) -> enforcer_pb2.Quota | None:
    """The frame quota of policy ``name`` (of ``kind``) under counter ``key``; None when the
    policy is unknown or unlimited."""
    if not name or name == UNLIMITED:
        return None
    policy = state.policy(kind, name)
    if policy is None or policy.message_count <= 0 or policy.unit_time <= 0:
        return None
    unit = SECONDS_PER_UNIT.get(policy.time_unit or "min")  # no unit given: per minute
    if unit is None:
        return None
    return enforcer_pb2.Quota(
        key=key,
        policy=policy.name,
        message_count=policy.message_count,
        window_seconds=float(policy.unit_time * unit),
        stop_on_quota_reach=policy.stop_on_quota_reach,
    )


def quotas(
    state: SubscriptionState,
    api: config_pb2.ApiPolicy,
    subscription: Subscription | None,
    topic: config_pb2.TopicPolicy | None = None,
) -> list[enforcer_pb2.Quota]:
    """API-level, topic-level, subscription tier and application policy quotas, in that order
    (the last two only with a subscription; unlimited and unknown ones are left out).

    A topic's ``throttling_policy`` (WSO2 ``operations[].throttlingPolicy``) names an API-kind
    (advanced) policy like the API-level one; its counter ``topic:<api_id>:<topic path>`` is
    shared by every connection to that topic of the API, whoever opens it.
    """
    wanted = [("api", api.api_throttling_policy, f"api:{api.api_id}")]
    if topic is not None:
        wanted.append(("api", topic.throttling_policy, f"topic:{api.api_id}:{topic.path}"))
    if subscription is not None:
        app_id = subscription.application_id
        wanted += [
            ("subscription", subscription.tier, f"sub:{app_id}:{api.api_id}"),
            (
                "application",
                subscription.application_tier,
                f"app:{app_id}:{subscription.subscriber}",
            ),
        ]
    found = (quota(state, kind, name, key) for kind, name, key in wanted)
    return [q for q in found if q is not None]
