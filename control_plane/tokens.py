"""Access tokens: which scopes to grant, the claims, signing, and reading our own tokens back.

Pure functions (the key is passed in); ``services/oauth.py`` adds the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from control_plane.signing import ALGORITHM, SigningKey

DEFAULT_SCOPE = "default"


def grant_scopes(
    requested: Iterable[str],
    api_scopes: Mapping[str, Sequence[str]],
    roles: Iterable[str],
) -> list[str]:
    """The requested scopes the caller may have, in request order; ``["default"]`` if none.

    Args:
        requested: scopes the client asked for.
        api_scopes: scope name -> role bindings, over every API;
            a scope without bindings is open to everyone.
        roles: the application owner's roles.
    """
    have = set(roles)
    granted: list[str] = []
    for scope in requested:
        if scope in granted or scope not in api_scopes:
            continue
        bindings = api_scopes[scope]
        if not bindings or have.intersection(bindings):
            granted.append(scope)
    return granted or [DEFAULT_SCOPE]


@dataclass(frozen=True)
class AppInfo:
    id: str
    name: str
    tier: str
    owner: str


def claims(
    *,
    issuer: str,
    app: AppInfo,
    consumer_key: str,
    key_type: str,
    scopes: Sequence[str],
    now: int,
    validity: int,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claims of an access token issued to ``consumer_key`` of ``app``."""
    return {
        "iss": issuer,
        "sub": app.owner,
        "aud": consumer_key,
        "azp": consumer_key,
        "client_id": consumer_key,
        "iat": now,
        "nbf": now,
        "exp": now + validity,
        "jti": jti or str(uuid.uuid4()),
        "scope": " ".join(scopes),
        "keytype": key_type,
        "token_type": "application",
        "application": {"id": app.id, "name": app.name, "tier": app.tier, "owner": app.owner},
    }


def sign(key: SigningKey, token_claims: Mapping[str, Any]) -> str:
    return jwt.encode(
        dict(token_claims), key.private, algorithm=ALGORITHM, headers={"kid": key.kid}
    )


def read_own(key: SigningKey, token: str) -> dict[str, Any] | None:
    """The claims of a token this service signed (expired ones too); None for anything else."""
    try:
        decoded: dict[str, Any] = jwt.decode(
            token,
            key.public,
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "verify_aud": False, "verify_nbf": False},
        )
    except jwt.PyJWTError:
        return None
    return decoded
