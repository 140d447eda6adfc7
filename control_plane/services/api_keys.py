"""Minting and revoking applications' API keys; a revoked key's ``jti`` joins the revoked
tokens every enforcer receives, which also closes live connections opened with it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane import apikeys, tokens
from control_plane.devportal_schemas import ApiKeyGenerateBody, ApiKeyOut, ApiKeyRevokeBody
from control_plane.errors import ApiError
from control_plane.models import ApiKey, Application, RevokedToken, utcnow
from control_plane.push import Gateway
from control_plane.services.oauth import TokenIssuer


def _key_type(value: str) -> str:
    try:
        return apikeys.key_type(value)
    except apikeys.ApiKeyInputError as exc:
        raise ApiError(400, str(exc)) from None


def generate(
    session: Session,
    app: Application,
    key_type: str,
    body: ApiKeyGenerateBody,
    issuer: TokenIssuer,
) -> ApiKeyOut:
    """A new API key for ``app`` and ``key_type``; the key is shown only in this answer."""
    kind = _key_type(key_type)
    try:
        validity = apikeys.lifetime(body.validity_period, issuer.api_key_max_validity)
        limits = apikeys.restrictions(body.additional_properties)
    except apikeys.ApiKeyInputError as exc:
        raise ApiError(400, str(exc)) from None
    now = int(time.time())
    jti = str(uuid.uuid4())
    claims = apikeys.claims(
        issuer=issuer.api_key_issuer,
        app=tokens.AppInfo(
            id=str(app.id), name=app.name, tier=app.throttling_policy, owner=app.owner
        ),
        key_type=kind,
        now=now,
        validity=validity,
        limits=limits,
        jti=jti,
    )
    session.add(
        ApiKey(
            jti=jti,
            application_id=app.id,
            key_type=kind,
            issued_at=utcnow(),
            expires_at=claims.get("exp"),
            revoked=False,
        )
    )
    session.commit()
    return ApiKeyOut(
        key_name=apikeys.key_name(app.name, kind, jti),
        apikey=tokens.sign(issuer.key, claims),
        validity_time=apikeys.NO_EXPIRY_ANSWER if validity is None else validity,
    )


def _revoke_rows(session: Session, rows: Iterable[ApiKey], now: float) -> int:
    """Mark ``rows`` revoked and list the live ones as revoked tokens; how many were live."""
    count = 0
    for row in rows:
        if row.revoked:
            continue
        row.revoked = True
        if row.expires_at is not None and row.expires_at <= now:
            continue  # expired already: every enforcer refuses it anyway
        if session.get(RevokedToken, row.jti) is None:
            session.add(RevokedToken(jti=row.jti, expires_at=apikeys.revoked_until(row.expires_at)))
            count += 1
    return count


def revoke(
    session: Session,
    app: Application,
    key_type: str,
    body: ApiKeyRevokeBody,
    issuer: TokenIssuer,
    gateway: Gateway,
) -> None:
    """Revoke one of ``app``'s API keys of ``key_type``; revoking twice is not an error.

    Raises:
        ApiError: 400 when the key is not an API key of this application and key type.
    """
    kind = _key_type(key_type)
    claims = tokens.read_own(issuer.key, body.apikey.strip())
    application = claims.get("application") if claims else None
    row = (
        session.get(ApiKey, claims["jti"])
        if claims and isinstance(claims.get("jti"), str)
        else None
    )
    if (
        claims is None
        or claims.get("iss") != issuer.api_key_issuer
        or not isinstance(application, dict)
        or application.get("uuid") != str(app.id)
        or row is None
        or row.application_id != app.id
    ):
        raise ApiError(400, f"apikey: not an API key of application {app.name}")
    if row.key_type != kind:
        raise ApiError(400, f"apikey: the key is a {row.key_type} key, not {kind}")
    live = _revoke_rows(session, [row], time.time())
    try:
        session.commit()
    except IntegrityError:  # a concurrent revoke of the same key listed it first
        session.rollback()
        return
    if live:
        gateway.subscriptions_changed()


def revoke_all(session: Session, app: Application) -> int:
    """Revoke every key of ``app`` (before it is deleted); the caller commits and pushes."""
    return _revoke_rows(session, list(app.api_keys), time.time())
