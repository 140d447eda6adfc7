"""The subscription data set (pure): checking it and turning it into xDS resources.

The control plane pushes the complete set (applications, subscriptions, key mappings, throttle
policies, key managers, revoked tokens) with PutSubscriptionData; the adapter serves it on every
gateway label, one resource per item. Nothing here does I/O; the adapter keeps no copy across a
restart (the control plane re-sends the set when it sees a new boot id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from google.protobuf import any_pb2
from google.protobuf.message import Message

from wsgate_common.resources import (
    APPLICATION_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
    SUBSCRIPTION_TYPE_URL,
    THROTTLE_POLICY_TYPE_URL,
)
from wsgate_proto import subscription_pb2

KEY_TYPES = frozenset({"PRODUCTION", "SANDBOX"})
SUBSCRIPTION_STATES = frozenset({"", "UNBLOCKED", "BLOCKED", "PROD_ONLY_BLOCKED"})
POLICY_KINDS = frozenset({"", "subscription", "application", "api"})
TIME_UNITS = frozenset({"", "sec", "min", "hour", "day"})
# Asymmetric JWT algorithms only: HS* and "none" would let a public key act as a secret.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_ERRORS = 20

Resources = dict[str, dict[str, any_pb2.Any]]


class InvalidSubscriptionData(ValueError):
    """The set is refused as a whole (gRPC INVALID_ARGUMENT); the message lists the problems."""

    def __init__(self, errors: list[str]) -> None:
        shown = errors[:MAX_ERRORS]
        more = len(errors) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more" if more else ""))
        self.errors = errors


def policy_name(policy: subscription_pb2.ThrottlePolicy) -> str:
    """A policy's resource name: ``<kind>/<name>`` (WSO2 reuses names such as ``Unlimited``
    across kinds), or the bare name when the kind is empty."""
    return f"{policy.kind}/{policy.name}" if policy.kind else policy.name


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def _check_key_manager(km: subscription_pb2.KeyManager) -> list[str]:
    errors = []
    where = f"key manager {km.name!r}"
    if not km.issuer:
        errors.append(f"{where}: no issuer")
    bad = [a for a in km.algorithms if a not in ALGORITHMS]
    if not km.algorithms or bad:
        errors.append(f"{where}: algorithms must be some of {', '.join(sorted(ALGORITHMS))}")
    if not (km.jwks_json or km.jwks_url or km.certificate_pem):
        errors.append(f"{where}: needs jwks_json, jwks_url or certificate_pem")
    if km.jwks_json:
        try:
            document = json.loads(km.jwks_json)
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            errors.append(f"{where}: jwks_json is not a JWKS document")
        elif not document["keys"] and not (km.jwks_url or km.certificate_pem):
            errors.append(f"{where}: jwks_json holds no key")
    if km.jwks_url and not km.jwks_url.startswith(("https://", "http://")):
        errors.append(f"{where}: jwks_url must be an http(s) URL")
    if km.certificate_pem and "-----BEGIN " not in km.certificate_pem:
        errors.append(f"{where}: certificate_pem is not PEM")
    return errors


def check(data: subscription_pb2.SubscriptionData) -> list[str]:
    """Every problem with the set, one line each (empty when it can be served)."""
    errors: list[str] = []
    apps = [a.id for a in data.applications]
    subs = [s.id for s in data.subscriptions]
    keys = [k.consumer_key for k in data.key_mappings]
    policies = [policy_name(p) for p in data.policies]
    kms = [k.name for k in data.key_managers]
    jtis = [t.jti for t in data.revoked_tokens]
    for what, ids in (
        ("application id", apps),
        ("subscription id", subs),
        ("consumer key", keys),
        ("throttle policy", policies),
        ("key manager name", kms),
        ("revoked token jti", jtis),
    ):
        if any(not i for i in ids):
            errors.append(f"a {what} is empty")
        errors += [f"{what} {i!r} appears twice" for i in _duplicates(i for i in ids if i)]
    known_apps = set(apps)
    for sub in data.subscriptions:
        where = f"subscription {sub.id!r}"
        if not sub.api_id:
            errors.append(f"{where}: no api_id")
        if sub.application_id not in known_apps:
            errors.append(f"{where}: unknown application {sub.application_id!r}")
        if sub.state not in SUBSCRIPTION_STATES:
            errors.append(
                f"{where}: state {sub.state!r} is not UNBLOCKED, BLOCKED or PROD_ONLY_BLOCKED"
            )
    pairs = _duplicates(f"{s.application_id} -> {s.api_id}" for s in data.subscriptions)
    errors += [f"application is subscribed twice: {pair}" for pair in pairs]
    for mapping in data.key_mappings:
        where = f"consumer key {mapping.consumer_key!r}"
        if mapping.application_id not in known_apps:
            errors.append(f"{where}: unknown application {mapping.application_id!r}")
        if mapping.key_type not in KEY_TYPES:
            errors.append(f"{where}: key_type {mapping.key_type!r} is not PRODUCTION or SANDBOX")
    for policy in data.policies:
        where = f"throttle policy {policy_name(policy)!r}"
        if policy.kind not in POLICY_KINDS:
            errors.append(f"{where}: kind must be subscription, application or api")
        if policy.time_unit not in TIME_UNITS:
            errors.append(f"{where}: time_unit must be sec, min, hour or day")
        if policy.message_count < 0 or policy.unit_time < 0:
            errors.append(f"{where}: negative message_count or unit_time")
    for km in data.key_managers:
        errors += _check_key_manager(km)
    errors += [
        f"issuer {iss!r} appears in two key managers"
        for iss in _duplicates(k.issuer for k in data.key_managers if k.issuer)
    ]
    return errors


def _packed(items: Iterable[tuple[str, Message]]) -> dict[str, any_pb2.Any]:
    named: dict[str, any_pb2.Any] = {}
    for name, item in items:
        packed = any_pb2.Any()
        packed.Pack(item, deterministic=True)
        named[name] = packed
    return named


def to_resources(data: subscription_pb2.SubscriptionData) -> Resources:
    """One resource per item, named by its id (policies by ``kind/name``), per type URL.

    Raises:
        InvalidSubscriptionData: :func:`check` found problems.
    """
    errors = check(data)
    if errors:
        raise InvalidSubscriptionData(errors)
    return {
        APPLICATION_TYPE_URL: _packed((a.id, a) for a in data.applications),
        SUBSCRIPTION_TYPE_URL: _packed((s.id, s) for s in data.subscriptions),
        KEY_MAPPING_TYPE_URL: _packed((k.consumer_key, k) for k in data.key_mappings),
        THROTTLE_POLICY_TYPE_URL: _packed((policy_name(p), p) for p in data.policies),
        KEY_MANAGER_TYPE_URL: _packed((k.name, k) for k in data.key_managers),
        REVOKED_TOKEN_TYPE_URL: _packed((t.jti, t) for t in data.revoked_tokens),
    }
