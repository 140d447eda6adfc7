"""Token validation (pure): from a compact JWT to trusted :class:`Claims`, or an AuthError.

Nothing in the token decides how it is checked: the unverified ``iss`` only selects an issuer,
whose pinned algorithms and key do the verification. Time checks use the ``now`` passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from enforcer.denials import AuthError, UnknownKeyError
from enforcer.issuers import API_KEY, OAUTH2, IssuerRegistry

# Seconds of clock skew tolerated for nbf and iat. None for exp: the router closes a connection
# when its token expires, so a token already past exp must not be upgraded only to be closed.
LEEWAY = 30
KEY_TYPES = ("PRODUCTION", "SANDBOX")


@dataclass(frozen=True)
class Application:
    """The client application a token was issued to, when the token says."""

    id: str = ""
    name: str = ""
    tier: str = ""
    owner: str = ""


@dataclass(frozen=True)
class Claims:
    """What a verified token proves."""

    issuer: str
    issuer_name: str
    subject: str
    scopes: tuple[str, ...]
    key_type: str
    token_id: str
    expires_at: int
    application: Application | None
    check_subscriptions: bool
    raw: Mapping[str, Any]
    # The OAuth2 client id (from the issuer's consumer key claim); "" when the token has none.
    consumer_key: str = ""
    # "oauth2" or "api_key": the kind of token its issuer issues.
    token_kind: str = OAUTH2
    # Signed by the built-in test-key issuer.
    test_key: bool = False


def _number(payload: Mapping[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"Malformed token: '{claim}' is not a number")
    return float(value)


def _scopes(payload: Mapping[str, Any]) -> tuple[str, ...]:
    value = payload.get("scope", payload.get("scp"))
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise AuthError("Malformed token: 'scope' is neither a string nor a list of strings")


def _text(value: Any) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value)


def _application(payload: Mapping[str, Any]) -> Application | None:
    """The ``application`` object (WSO2 style) or flat ``application_*`` claims."""
    nested = payload.get("application")
    if isinstance(nested, dict):
        return Application(
            id=_text(nested.get("uuid", nested.get("id"))),
            name=_text(nested.get("name")),
            tier=_text(nested.get("tier")),
            owner=_text(nested.get("owner")),
        )
    flat = {part: payload.get(f"application_{part}") for part in ("id", "name", "tier", "owner")}
    if any(v is not None for v in flat.values()):
        return Application(**{k: _text(v) for k, v in flat.items()})
    return None


def _key_type(payload: Mapping[str, Any]) -> str:
    value = payload.get("keytype", "PRODUCTION")
    key_type = value.upper() if isinstance(value, str) else ""
    if key_type not in KEY_TYPES:
        raise AuthError("Malformed token: 'keytype' is neither PRODUCTION nor SANDBOX")
    return key_type


def _consumer_key(payload: Mapping[str, Any], claim: str) -> str:
    value = payload.get(claim)
    if value is None and claim == "azp":
        value = payload.get("client_id")  # the RFC 9068 name for the same thing
    return value if isinstance(value, str) else ""


def validate(token: str, issuers: IssuerRegistry, now: float) -> Claims:
    """Verify ``token`` against the issuer its ``iss`` names.

    An API-key issuer's tokens may lack ``exp`` (a key that never expires: ``expires_at`` 0)
    and, when they say a ``tokenType``, it must be ``apiKey``.

    Raises:
        UnknownKeyError: the issuer has no key for the token's ``kid``.
        AuthError: anything else wrong with it; the description says what.
    """
    if not token or token.count(".") != 2:
        raise AuthError("Malformed token: not a compact JWT")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except InvalidTokenError as exc:
        raise AuthError(f"Malformed token: {exc}") from None
    iss = unverified.get("iss")
    if not isinstance(iss, str) or not iss:
        raise AuthError("Malformed token: no 'iss' claim")
    issuer = issuers.get(iss)
    if issuer is None:
        raise AuthError("Unknown token issuer")
    alg = header.get("alg")
    if alg not in issuer.algorithms:
        raise AuthError(f"Token algorithm {alg!r} is not accepted for this issuer")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError("Malformed token: 'kid' is not a string")
    key = issuer.key_for(kid)
    if key is None:
        raise UnknownKeyError(issuer.name, kid)
    api_key = issuer.token_kind == API_KEY
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=list(issuer.algorithms),
            audience=list(issuer.audience) or None,
            issuer=issuer.issuer,
            options={
                "require": ["iss"] if api_key else ["exp", "iss"],
                "verify_exp": False,  # checked below against the caller's clock
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": bool(issuer.audience),
            },
        )
    except InvalidSignatureError:
        raise AuthError("Invalid token signature") from None
    except InvalidAlgorithmError:
        raise AuthError(f"Token algorithm {alg!r} is not accepted for this issuer") from None
    except MissingRequiredClaimError as exc:
        raise AuthError(f"Malformed token: no '{exc.claim}' claim") from None
    except InvalidAudienceError:
        raise AuthError("Token audience is not accepted") from None
    except InvalidTokenError as exc:
        raise AuthError(f"Malformed token: {exc}") from None
    exp = _number(payload, "exp")
    if (exp is None and not api_key) or (exp is not None and exp <= now):
        raise AuthError("API key expired" if api_key else "Access token expired")
    if api_key and payload.get("tokenType", "apiKey") != "apiKey":
        raise AuthError("Malformed API key: 'tokenType' is not 'apiKey'")
    nbf = _number(payload, "nbf")
    if nbf is not None and nbf > now + LEEWAY:
        raise AuthError("Access token is not yet valid")
    iat = _number(payload, "iat")
    if iat is not None and iat > now + LEEWAY:
        raise AuthError("Access token was issued in the future")
    subject = payload.get("sub", "")
    if not isinstance(subject, str):
        raise AuthError("Malformed token: 'sub' is not a string")
    return Claims(
        issuer=iss,
        issuer_name=issuer.name,
        subject=subject,
        scopes=_scopes(payload),
        key_type=_key_type(payload),
        token_id=_text(payload.get("jti")),
        expires_at=int(exp) if exp is not None else 0,
        application=_application(payload),
        check_subscriptions=issuer.check_subscriptions,
        raw=payload,
        consumer_key=_consumer_key(payload, issuer.consumer_key_claim),
        token_kind=issuer.token_kind,
        test_key=issuer.test_key,
    )
