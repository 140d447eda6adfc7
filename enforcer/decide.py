"""The handshake decision (pure): given a request, the API's policy and a token validator, allow
or deny with a WSO2 error.

Rules in order: unknown API (404), unknown topic (404), API blocked (503), unsecured topic
(allowed as PRODUCTION, any token ignored), missing or non-Bearer credentials (401 900902),
invalid token (401 900901), revoked token (401 900901, any issuer), then for key-manager tokens
(not test keys) the subscription (:func:`enforcer.subscriptions.resolve`: 403 900908 unknown
consumer key or not subscribed, 401 900901 wrong key type, 403 900907 blocked), topic scopes
(403 900910), key type without a matching endpoint (401 900901). An allowed answer carries the
application, subscription and the frame quotas to enforce.
"""

from __future__ import annotations

from collections.abc import Callable

from enforcer.denials import AuthError, Denial, ErrorCode
from enforcer.policies import ApiEntry
from enforcer.subscriptions import (
    EMPTY_STATE,
    UNLIMITED,
    Subscription,
    SubscriptionState,
    quotas,
    resolve,
)
from enforcer.tokens import Claims
from wsgate_proto import enforcer_pb2

Authenticate = Callable[[str], Claims]
"""Verify a raw token (no ``Bearer``): returns its claims or raises AuthError."""

MISSING_CREDENTIALS_DESCRIPTION = (
    "Make sure your API invocation call has a header: 'Authorization : Bearer ACCESS_TOKEN'"
)
BLOCKED = "BLOCKED"
PRODUCTION = "PRODUCTION"
SANDBOX = "SANDBOX"


def deny(denial: Denial) -> enforcer_pb2.HandshakeResponse:
    return enforcer_pb2.HandshakeResponse(
        allowed=False,
        http_status=denial.http_status,
        error_code=denial.code,
        message=denial.message,
        description=denial.description,
    )


def bearer_token(authorization: str) -> str:
    """The token in an ``Authorization: Bearer <token>`` value.

    Raises:
        Denial: 401 900902 when absent, not Bearer, or empty.
    """
    scheme, _, token = authorization.strip().partition(" ")
    if not scheme:
        raise Denial(
            401,
            ErrorCode.MISSING_CREDENTIALS,
            "Missing Credentials",
            MISSING_CREDENTIALS_DESCRIPTION,
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise Denial(
            401,
            ErrorCode.MISSING_CREDENTIALS,
            "Missing Credentials",
            "Only 'Authorization: Bearer ACCESS_TOKEN' is accepted",
        )
    return token.strip()


def _check(
    request: enforcer_pb2.HandshakeRequest,
    entry: ApiEntry | None,
    authenticate: Authenticate,
    state: SubscriptionState,
) -> enforcer_pb2.HandshakeResponse:
    if entry is None:
        raise Denial(404, ErrorCode.NOT_FOUND, "Not Found", "No API is deployed for this request")
    api = entry.api
    topic = entry.topics.get(request.topic)
    if topic is None:
        raise Denial(
            404,
            ErrorCode.RESOURCE_NOT_FOUND,
            "No matching resource found for given API Request",
            f"The API has no topic {request.topic!r}",
        )
    if api.lifecycle_status.upper() == BLOCKED:
        raise Denial(
            503,
            ErrorCode.API_BLOCKED,
            "API blocked",
            "This API has been blocked temporarily. "
            "Please try again later or contact the system administrators.",
        )
    if not topic.secured:
        return enforcer_pb2.HandshakeResponse(
            allowed=True,
            key_type=PRODUCTION,
            api_tier=api.api_throttling_policy,
            quotas=quotas(state, api, None),
        )
    claims = authenticate(bearer_token(request.authorization))
    if state.is_revoked(claims.token_id):
        raise AuthError("Access token revoked")
    subscription: Subscription | None = None
    if claims.check_subscriptions:
        subscription = resolve(state, claims, api.api_id)
    if topic.scopes and not set(topic.scopes) & set(claims.scopes):
        raise Denial(
            403,
            ErrorCode.INVALID_SCOPE,
            "The access token does not allow you to access the requested resource",
            f"User is NOT authorized to access the Resource: {request.topic}. "
            "Scope validation failed.",
        )
    if claims.key_type == SANDBOX and not api.has_sandbox_endpoint:
        raise AuthError("Sandbox key offered to an API with no sandbox endpoint")
    if claims.key_type == PRODUCTION and not api.has_production_endpoint:
        raise AuthError("Production key offered to an API with no production endpoint")
    response = enforcer_pb2.HandshakeResponse(
        allowed=True,
        key_type=claims.key_type,
        subscriber=claims.subject,
        subscription_tier=UNLIMITED,
        api_tier=api.api_throttling_policy,
        token_id=claims.token_id,
        token_expires_at=claims.expires_at,
        scopes=list(claims.scopes),
        quotas=quotas(state, api, subscription),
    )
    if subscription is not None:
        response.application_id = subscription.application_id
        response.application_name = subscription.application_name
        response.application_tier = subscription.application_tier
        response.subscriber = subscription.subscriber or claims.subject
        response.subscription_id = subscription.subscription_id
        response.subscription_tier = subscription.tier
    elif claims.application is not None:  # a test key may name an application: report it
        app = claims.application
        response.application_id = app.id
        response.application_name = app.name
        response.application_tier = app.tier
    return response


def decide(
    request: enforcer_pb2.HandshakeRequest,
    entry: ApiEntry | None,
    authenticate: Authenticate,
    state: SubscriptionState = EMPTY_STATE,
) -> enforcer_pb2.HandshakeResponse:
    """Allow or deny one handshake; every refusal becomes a denial response, never an error."""
    try:
        return _check(request, entry, authenticate, state)
    except Denial as denial:
        return deny(denial)
