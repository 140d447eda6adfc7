"""Issuing and revoking access tokens for applications' consumer keys."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, object_session

from control_plane import tokens
from control_plane.models import Api, KeyMapping, RevokedToken
from control_plane.secret_hash import verify_secret
from control_plane.signing import SigningKey


@dataclass(frozen=True)
class TokenIssuer:
    """What issuing needs besides the database: the key, ``iss``, lifetimes, users' roles."""

    key: SigningKey
    issuer: str
    default_validity: int
    roles: Mapping[str, frozenset[str]]
    #: ``iss`` of API keys (``apikeys.api_key_issuer``), and the longest validity they get.
    api_key_issuer: str = ""
    api_key_max_validity: int = 31_536_000


@dataclass(frozen=True)
class Issued:
    token: str
    claims: dict[str, Any]
    scopes: list[str]
    validity: int


def api_scopes(session: Session) -> dict[str, list[str]]:
    """Scope -> role bindings over every API.

    Scopes are one namespace, as in WSO2's key manager: what a token may carry depends on the
    owner's roles, not on subscriptions, so a token taken before subscribing already has them.
    """
    found: dict[str, list[str]] = {}
    for definition in session.scalars(select(Api.definition)):
        for item in (definition or {}).get("scopes") or []:
            scope = item.get("scope", {}) if isinstance(item, dict) else {}
            name = scope.get("name")
            if isinstance(name, str):
                found.setdefault(name, []).extend(scope.get("bindings") or [])
    return found


def authenticate(session: Session, consumer_key: str, secret: str) -> KeyMapping | None:
    mapping = session.scalar(select(KeyMapping).where(KeyMapping.consumer_key == consumer_key))
    if mapping is None:
        verify_secret(secret, "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAA")  # same cost
        return None
    return mapping if verify_secret(secret, mapping.secret_hash) else None


def issue(
    issuer: TokenIssuer,
    mapping: KeyMapping,
    requested: list[str],
    validity: int | None = None,
) -> Issued:
    app = mapping.application
    session = object_session(mapping)
    if session is None:
        raise RuntimeError("key mapping is not attached to a session")
    granted = tokens.grant_scopes(requested, api_scopes(session), issuer.roles.get(app.owner, ()))
    lifetime = validity or mapping.validity_time or issuer.default_validity
    claims = tokens.claims(
        issuer=issuer.issuer,
        app=tokens.AppInfo(
            id=str(app.id), name=app.name, tier=app.throttling_policy, owner=app.owner
        ),
        consumer_key=mapping.consumer_key,
        key_type=mapping.key_type,
        scopes=granted,
        now=int(time.time()),
        validity=lifetime,
    )
    return Issued(tokens.sign(issuer.key, claims), claims, granted, lifetime)


def revoke(session: Session, issuer: TokenIssuer, mapping: KeyMapping, token: str) -> str:
    """Revoke one of ``mapping``'s tokens (RFC 7009).

    Returns:
        "revoked", "ignored" (not our token, or already expired: nothing to do) or "foreign"
        (a valid token issued to another client).
    """
    claims = tokens.read_own(issuer.key, token)
    if claims is None or not isinstance(claims.get("jti"), str):
        return "ignored"
    if claims.get("azp") != mapping.consumer_key:
        return "foreign"
    now = int(time.time())
    expires = int(claims.get("exp", 0))
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    if expires <= now or session.get(RevokedToken, claims["jti"]) is not None:
        session.commit()
        return "ignored"
    session.add(RevokedToken(jti=claims["jti"], expires_at=expires))
    session.commit()
    return "revoked"
