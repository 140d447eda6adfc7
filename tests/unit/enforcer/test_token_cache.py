"""The verified-token cache: hits until exp, emptied by a new issuer registry, bounded, and
never a way around revocation (checked per Check after authentication)."""

from __future__ import annotations

import dataclasses

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from enforcer.issuers import IssuerRegistry
from enforcer.service import HandshakeService
from enforcer.subscriptions import EMPTY_STATE, SubscriptionStore
from enforcer.testkey import TestKeySigner
from enforcer.token_cache import TokenCache
from enforcer.tokens import Claims

from .conftest import NOW
from .test_service import ask, store


def claims(exp: int, jti: str = "j") -> Claims:
    return Claims("iss", "n", "sub", (), "PRODUCTION", jti, exp, None, False, {})


def test_hit_until_exp_then_miss() -> None:
    cache, registry = TokenCache(), IssuerRegistry([])
    cache.put("t", registry, claims(NOW + 10))
    assert cache.get("t", registry, NOW) == claims(NOW + 10)
    assert cache.get("t", registry, NOW + 10) is None  # exp reached: not valid any more
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (1, 1)


def test_new_registry_empties_the_cache() -> None:
    cache, old, new = TokenCache(), IssuerRegistry([]), IssuerRegistry([])
    cache.put("t", old, claims(NOW + 10))
    assert cache.get("t", new, NOW) is None
    assert len(cache) == 0
    assert cache.get("t", old, NOW) is None  # and going back does not resurrect it


def test_least_recently_used_is_evicted_at_capacity() -> None:
    cache, registry = TokenCache(2), IssuerRegistry([])
    cache.put("a", registry, claims(NOW + 10))
    cache.put("b", registry, claims(NOW + 10))
    assert cache.get("a", registry, NOW) is not None  # a is now the most recent
    cache.put("c", registry, claims(NOW + 10))
    assert len(cache) == 2
    assert cache.get("b", registry, NOW) is None
    assert cache.get("a", registry, NOW) is not None


def test_capacity_zero_disables() -> None:
    cache, registry = TokenCache(0), IssuerRegistry([])
    cache.put("a", registry, claims(NOW + 10))
    assert cache.get("a", registry, NOW) is None
    with pytest.raises(ValueError):
        TokenCache(-1)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_service_verifies_a_token_once_and_still_checks_revocation(
    signer: TestKeySigner,
) -> None:
    subscriptions = SubscriptionStore()
    clock = Clock(NOW)
    service = HandshakeService(
        store(), IssuerRegistry([signer.as_issuer()]), subscriptions, clock=clock
    )
    token = signer.issue("admin", ["read"], NOW, validity=60)
    assert ask(service, token).allowed
    assert ask(service, token).allowed
    assert (service.tokens.hits, len(service.tokens)) == (1, 1)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    subscriptions.current = dataclasses.replace(EMPTY_STATE, revoked={jti: NOW + 60})
    revoked = ask(service, token)
    assert (revoked.allowed, revoked.description) == (False, "Access token revoked")
    subscriptions.current = EMPTY_STATE
    clock.now = NOW + 60  # exp: the cached claims are not used any more
    expired = ask(service, token)
    assert (expired.allowed, expired.description) == (False, "Access token expired")


def test_service_rechecks_after_the_issuer_keys_change(
    signer: TestKeySigner, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    service = HandshakeService(store(), IssuerRegistry([signer.as_issuer()]), clock=lambda: NOW)
    token = signer.issue("admin", ["read"], NOW)
    assert ask(service, token).allowed
    rotated = dataclasses.replace(signer.as_issuer(), keys={signer.kid: other_rsa_key.public_key()})
    service.issuers = IssuerRegistry([rotated])  # the key behind the token's kid was replaced
    denied = ask(service, token)
    assert (denied.allowed, denied.description) == (False, "Invalid token signature")


def test_a_key_without_exp_stays_cached() -> None:
    cache, registry = TokenCache(), IssuerRegistry([])
    cache.put("t", registry, claims(0))
    assert cache.get("t", registry, NOW + 10**9) is not None
