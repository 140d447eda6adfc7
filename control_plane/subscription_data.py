"""Database rows -> ``wsgate.subscription.v1.SubscriptionData``, the complete set the adapter
hands to enforcers. Pure: rows and the time in, a message out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from control_plane.models import (
    Application,
    KeyMapping,
    RevokedToken,
    Subscription,
    ThrottlingPolicy,
)
from wsgate_proto import subscription_pb2

RESIDENT_KEY_MANAGER = "Resident Key Manager"
#: The key manager entry under which enforcers trust the control plane's API keys.
API_KEY_ISSUER = "Resident API Key Issuer"


def resident_key_manager(issuer: str, jwks: Mapping[str, Any]) -> subscription_pb2.KeyManager:
    """The control plane's own OAuth2 service as a key manager the enforcers trust."""
    return subscription_pb2.KeyManager(
        name=RESIDENT_KEY_MANAGER,
        issuer=issuer,
        algorithms=["RS256"],
        jwks_json=json.dumps(jwks, sort_keys=True),
        consumer_key_claim="azp",
    )


def api_key_issuer(issuer: str, jwks: Mapping[str, Any]) -> subscription_pb2.KeyManager:
    """The control plane's API keys: same signing key, their own ``iss``, token_kind api_key."""
    return subscription_pb2.KeyManager(
        name=API_KEY_ISSUER,
        issuer=issuer,
        algorithms=["RS256"],
        jwks_json=json.dumps(jwks, sort_keys=True),
        token_kind="api_key",
    )


def _name(manager: subscription_pb2.KeyManager) -> str:
    return str(manager.name)


def build(
    *,
    applications: Iterable[Application],
    subscriptions: Iterable[Subscription],
    key_mappings: Iterable[KeyMapping],
    policies: Iterable[ThrottlingPolicy],
    key_managers: Iterable[subscription_pb2.KeyManager],
    revoked: Iterable[RevokedToken],
    now: float,
) -> subscription_pb2.SubscriptionData:
    """Everything in a stable order (by id), so equal data gives equal messages.

    Revoked tokens that have expired are left out: an expired token fails anyway.
    """
    managers: list[subscription_pb2.KeyManager] = sorted(key_managers, key=_name)
    return subscription_pb2.SubscriptionData(
        applications=[
            subscription_pb2.Application(
                id=str(app.id),
                name=app.name,
                owner=app.owner,
                tier=app.throttling_policy,
                attributes={str(k): str(v) for k, v in (app.attributes or {}).items()},
            )
            for app in sorted(applications, key=lambda a: str(a.id))
        ],
        subscriptions=[
            subscription_pb2.Subscription(
                id=str(sub.id),
                api_id=str(sub.api_id),
                application_id=str(sub.application_id),
                tier=sub.tier,
                state=sub.state,
            )
            for sub in sorted(subscriptions, key=lambda s: str(s.id))
        ],
        key_mappings=[
            subscription_pb2.KeyMapping(
                consumer_key=key.consumer_key,
                application_id=str(key.application_id),
                key_type=key.key_type,
                key_manager=RESIDENT_KEY_MANAGER,
            )
            for key in sorted(key_mappings, key=lambda k: k.consumer_key)
        ],
        policies=[
            subscription_pb2.ThrottlePolicy(
                name=policy.name,
                kind=policy.kind,
                message_count=policy.count,
                unit_time=policy.unit_time,
                time_unit=policy.time_unit,
                stop_on_quota_reach=policy.stop_on_quota_reach,
            )
            for policy in sorted(policies, key=lambda p: (p.kind, p.name))
        ],
        key_managers=managers,
        revoked_tokens=[
            subscription_pb2.RevokedToken(jti=token.jti, expires_at=token.expires_at)
            for token in sorted(revoked, key=lambda t: t.jti)
            if token.expires_at > now
        ],
    )
