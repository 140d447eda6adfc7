"""Applications' OAuth2 keys (consumer key + hashed secret per key type) and their tokens."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.devportal_schemas import (
    ApplicationKey,
    ApplicationToken,
    KeyGenerateBody,
    TokenGenerateBody,
)
from control_plane.errors import ApiError, not_found
from control_plane.models import Application, KeyMapping, utcnow
from control_plane.push import Gateway
from control_plane.secret_hash import hash_secret, new_consumer_key, new_consumer_secret
from control_plane.services import oauth
from control_plane.subscription_data import RESIDENT_KEY_MANAGER

#: Names a client may give for the one key manager there is.
_KEY_MANAGER_NAMES = {RESIDENT_KEY_MANAGER.lower(), "default", "resident"}


def to_out(
    row: KeyMapping, secret: str | None = None, token: ApplicationToken | None = None
) -> ApplicationKey:
    return ApplicationKey(
        key_mapping_id=str(row.id),
        key_manager=RESIDENT_KEY_MANAGER,
        consumer_key=row.consumer_key,
        consumer_secret=secret,
        supported_grant_types=list(row.grant_types),
        callback_url=row.callback_url,
        key_type=row.key_type,  # type: ignore[arg-type]
        token=token,
    )


def to_token(issued: oauth.Issued) -> ApplicationToken:
    return ApplicationToken(
        access_token=issued.token, token_scopes=issued.scopes, validity_time=issued.validity
    )


def load(session: Session, app: Application, key_mapping_id: str) -> KeyMapping:
    try:
        key = uuid.UUID(key_mapping_id)
    except ValueError:
        raise not_found("key mapping", key_mapping_id) from None
    row = session.get(KeyMapping, key)
    if row is None or row.application_id != app.id:
        raise not_found("key mapping", f"{key_mapping_id} of application {app.id}")
    return row


def generate(
    session: Session,
    app: Application,
    body: KeyGenerateBody,
    issuer: oauth.TokenIssuer,
    gateway: Gateway,
) -> ApplicationKey:
    """New consumer key and secret for one key type; 409 when that type has keys already.

    The answer is the only place the secret appears. With ``client_credentials`` among the
    grant types it carries a first access token too, as WSO2's does.
    """
    if body.key_manager and body.key_manager.lower() not in _KEY_MANAGER_NAMES:
        raise ApiError(
            400, f"keyManager: {body.key_manager!r} is unknown (only {RESIDENT_KEY_MANAGER!r})"
        )
    if any(row.key_type == body.key_type for row in app.keys):
        raise ApiError(
            409,
            f"application {app.name} already has {body.key_type} keys;"
            " regenerate the secret or use them",
        )
    secret = new_consumer_secret()
    row = KeyMapping(
        id=uuid.uuid4(),
        application_id=app.id,
        key_type=body.key_type,
        consumer_key=new_consumer_key(),
        secret_hash=hash_secret(secret),
        grant_types=list(body.grant_types_to_be_supported),
        validity_time=body.validity_time or issuer.default_validity,
        callback_url=body.callback_url,
        created_at=utcnow(),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, f"application {app.name} already has {body.key_type} keys") from None
    session.refresh(app)
    gateway.subscriptions_changed()
    token = None
    if "client_credentials" in row.grant_types:
        token = to_token(oauth.issue(issuer, row, body.scopes))
    return to_out(row, secret, token)


def regenerate_secret(session: Session, app: Application, key_mapping_id: str) -> tuple[str, str]:
    """A new secret for the key (the old one stops working); (consumer key, secret)."""
    row = load(session, app, key_mapping_id)
    secret = new_consumer_secret()
    row.secret_hash = hash_secret(secret)
    session.commit()
    return row.consumer_key, secret


def generate_token(
    session: Session,
    app: Application,
    key_mapping_id: str,
    body: TokenGenerateBody,
    issuer: oauth.TokenIssuer,
    gateway: Gateway,
) -> ApplicationToken:
    """An access token for the key, revoking ``revokeToken`` first when given."""
    row = load(session, app, key_mapping_id)
    if body.revoke_token and oauth.revoke(session, issuer, row, body.revoke_token) == "revoked":
        gateway.subscriptions_changed()
    return to_token(oauth.issue(issuer, row, body.scopes, body.validity_period))
