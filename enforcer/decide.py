"""The handshake decision (pure): given a request, the API's policy and a token validator, allow
or deny with a WSO2 error.

Rules in order: unknown API (404), unknown topic (404), an ``Origin`` the API (or, when its
CORS is off, the gateway) does not allow (403 900908), API blocked (503), unsecured topic
(allowed as PRODUCTION, any credential ignored), then the credential (:func:`credential`):
none (401 900902, naming the forms the API accepts), several that disagree (401 900901), a
kind the API does not accept (401 900901, naming what it accepts), invalid (401 900901), of
another kind than it was offered as (401 900901), revoked (401 900901, any issuer), a test key
on a control-plane API unless allowed (401 900901), a credential that needs a subscription (a
key-manager token or an API key) on a CLI-deployed API, which no application can subscribe to
(403 900908 saying so); then for key-manager tokens (not test keys)
the subscription (:func:`enforcer.subscriptions.resolve`: 403 900908 unknown consumer key or
not subscribed, 401 900901 wrong key type, 403 900907 blocked), for API keys the subscription
of the application the key names (:func:`enforcer.subscriptions.resolve_application`) and its
IP and referrer restrictions (403 900908), topic scopes (403 900910; an API key carries none),
key type without a matching endpoint (401 900901). An allowed answer carries the application,
subscription, the accepted credential kind and the frame quotas to enforce.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from enforcer.denials import AuthError, Denial, ErrorCode
from enforcer.issuers import API_KEY, OAUTH2
from enforcer.policies import ApiEntry
from enforcer.subscriptions import (
    EMPTY_STATE,
    FORBIDDEN_MESSAGE,
    UNLIMITED,
    Subscription,
    SubscriptionState,
    quotas,
    resolve,
    resolve_application,
)
from enforcer.tokens import Claims
from wsgate_proto import config_pb2, enforcer_pb2

Authenticate = Callable[[str], Claims]
"""Verify a raw token (no ``Bearer``): returns its claims or raises AuthError."""

MISSING_CREDENTIALS_DESCRIPTION = (
    "Make sure your API invocation call has a header: 'Authorization : Bearer ACCESS_TOKEN'"
)
# How a client may present each kind (the router reads all of these).
FORMS = {
    OAUTH2: "an OAuth2 access token ('Authorization : Bearer ACCESS_TOKEN' header, "
    "'?access_token=ACCESS_TOKEN' or 'Sec-WebSocket-Protocol: choreo-oauth2-key, ACCESS_TOKEN')",
    API_KEY: "an API key ('apikey : API_KEY' header, '?apikey=API_KEY' or "
    "'Sec-WebSocket-Protocol: choreo-api-key, API_KEY')",
}
KIND_NAMES = {OAUTH2: "an OAuth2 access token", API_KEY: "an API key"}
CONTROL_PLANE = "control-plane"
BLOCKED = "BLOCKED"
PRODUCTION = "PRODUCTION"
SANDBOX = "SANDBOX"
MAX_SHOWN = 100  # characters of a client-supplied value a description may repeat
# An API deployed with the CLI (standalone mode) is not in the control plane, so no application
# can subscribe to it: credentials that need a subscription cannot open it (issue 13).
STANDALONE_REFUSAL = (
    "this API was deployed with the CLI (standalone mode), so no application can subscribe to "
    "it and application access tokens and API keys are not accepted; use a test key "
    "(POST /testkey), or deploy the API through the control plane"
)


@dataclass(frozen=True)
class Options:
    """Gateway-wide settings the decision depends on (from the enforcer's settings).

    Attributes:
        allowed_origins: browser origins allowed on APIs whose own CORS configuration is off:
            exact origins, ``*`` (any), ``scheme://*.domain`` (any subdomain) and
            ``scheme://host:*`` (any port, or none).
        testkeys_on_control_plane: accept test keys on APIs the control plane manages.
    """

    allowed_origins: tuple[str, ...] = ()
    testkeys_on_control_plane: bool = False


DEFAULT_OPTIONS = Options()


@dataclass(frozen=True)
class Offered:
    """The credential a handshake is decided on."""

    kind: str
    token: str


def deny(denial: Denial) -> enforcer_pb2.HandshakeResponse:
    return enforcer_pb2.HandshakeResponse(
        allowed=False,
        http_status=denial.http_status,
        error_code=denial.code,
        message=denial.message,
        description=denial.description,
    )


def accepted_kinds(api: config_pb2.ApiPolicy) -> tuple[str, ...]:
    """The credential kinds the API accepts (WSO2's default when it says none: OAuth2)."""
    kinds = tuple(k for k in (OAUTH2, API_KEY) if k in api.security_schemes)
    return kinds or (OAUTH2,)


def _missing(kinds: Sequence[str]) -> Denial:
    if tuple(kinds) == (OAUTH2,):
        description = (
            f"{MISSING_CREDENTIALS_DESCRIPTION} (or '?access_token=ACCESS_TOKEN', or "
            "'Sec-WebSocket-Protocol: choreo-oauth2-key, ACCESS_TOKEN')"
        )
    else:
        description = "This API accepts " + " or ".join(FORMS[k] for k in kinds)
    return Denial(401, ErrorCode.MISSING_CREDENTIALS, "Missing Credentials", description)


def bearer_token(authorization: str) -> str:
    """The token in an ``Authorization: Bearer <token>`` value.

    Raises:
        Denial: 401 900902 when absent, not Bearer, or empty.
    """
    scheme, _, token = authorization.strip().partition(" ")
    if not scheme:
        raise _missing((OAUTH2,))
    if scheme.lower() != "bearer" or not token.strip():
        raise Denial(
            401,
            ErrorCode.MISSING_CREDENTIALS,
            "Missing Credentials",
            "Only 'Authorization: Bearer ACCESS_TOKEN' is accepted",
        )
    return token.strip()


def credential(request: enforcer_pb2.HandshakeRequest, kinds: Sequence[str]) -> Offered:
    """The one credential the request offers, of a kind in ``kinds``.

    A router that fills ``credentials`` says where each came from; an older one only sends
    ``authorization``. The same token in several places is one credential.

    Raises:
        Denial: 401 900902 none offered; 401 900901 several that disagree, or a kind the API
            does not accept.
    """
    offered = [(c.kind, c.token) for c in request.credentials if c.token]
    if not offered:
        if not request.authorization.strip():
            raise _missing(kinds)
        offered = [(OAUTH2, bearer_token(request.authorization))]
    tokens = {token for _, token in offered}
    if len(tokens) > 1:
        places = sorted({f"{c.source} ({c.kind})" for c in request.credentials if c.token})
        raise AuthError(
            "Credentials in more than one place disagree ("
            + ", ".join(places)
            + "): send one credential, or the same one in every place"
        )
    offered_kinds = {kind for kind, _ in offered}
    if len(offered_kinds) > 1:
        raise AuthError(
            "The same credential was offered both as an OAuth2 access token and as an API key"
        )
    kind = offered_kinds.pop()
    if kind not in (OAUTH2, API_KEY):
        raise AuthError(f"Unknown credential kind {kind[:MAX_SHOWN]!r}")
    if kind not in kinds:
        raise AuthError(
            f"This API does not accept {KIND_NAMES[kind]}; it accepts "
            + " or ".join(FORMS[k] for k in kinds)
        )
    return Offered(kind, tokens.pop())


# ---- origins ------------------------------------------------------------------------------------

_ORIGIN = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[^\]]*\]|[^:/\[\]]*)(?::(?P<port>\d+|\*))?$"
)


def _origin_parts(origin: str) -> tuple[str, str, str] | None:
    match = _ORIGIN.match(origin.strip().rstrip("/").lower())
    if match is None:
        return None
    return match["scheme"], match["host"], match["port"] or ""


def origin_allowed(origin: str, patterns: Sequence[str]) -> bool:
    """Whether a browser ``Origin`` matches one of ``patterns``: ``*``, an exact origin,
    ``scheme://*.domain`` (a subdomain of ``domain``, not ``domain`` itself) or
    ``scheme://host:*`` (any port, or none). ``null`` only matches ``*`` or ``null``."""
    text = origin.strip().rstrip("/").lower()
    got = _origin_parts(text)
    for raw in patterns:
        pattern = raw.strip().rstrip("/").lower()
        if pattern == "*" or pattern == text:
            return True
        want = _origin_parts(pattern)
        if want is None or got is None or want[0] != got[0]:
            continue
        host_ok = want[1] == got[1] or (
            want[1].startswith("*.")
            and got[1].endswith(want[1][1:])
            and len(got[1]) > len(want[1]) - 1
        )
        port_ok = want[2] == got[2] or want[2] == "*"
        if host_ok and port_ok:
            return True
    return False


def _check_origin(
    request: enforcer_pb2.HandshakeRequest, api: config_pb2.ApiPolicy, options: Options
) -> None:
    if not request.origin:
        return
    patterns = list(api.cors.allow_origins) if api.cors.enabled else list(options.allowed_origins)
    if not origin_allowed(request.origin, patterns):
        raise Denial(
            403,
            ErrorCode.FORBIDDEN,
            FORBIDDEN_MESSAGE,
            f"Origin {request.origin[:MAX_SHOWN]!r} is not allowed to connect to this API",
        )


# ---- API key restrictions ------------------------------------------------------------------------


def _listed(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def ip_permitted(client_ip: str, permitted: Sequence[str]) -> bool:
    """Whether ``client_ip`` is one of the IPs or inside one of the CIDR ranges listed
    (an IPv4 address seen as IPv4-mapped IPv6 counts as IPv4; bad entries match nothing)."""
    try:
        address = ipaddress.ip_address(client_ip.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for entry in permitted:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if address.version == network.version and address in network:
            return True
    return False


def _referer_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE)


def referer_permitted(referer: str, permitted: Sequence[str]) -> bool:
    """Whether ``referer`` matches one of the patterns (``*`` matches anything) as a whole,
    with or without its ``http(s)://`` (WSO2 patterns are usually written without)."""
    if not referer:
        return False
    bare = re.sub(r"^https?://", "", referer, flags=re.IGNORECASE)
    for pattern in permitted:
        regex = _referer_pattern(pattern)
        if regex.fullmatch(referer) or regex.fullmatch(bare):
            return True
    return False


def _access_failure(api: config_pb2.ApiPolicy, why: str) -> Denial:
    return Denial(
        403,
        ErrorCode.FORBIDDEN,
        FORBIDDEN_MESSAGE,
        f"Access failure for API: {api.base_path or api.api_id}, version: {api.api_version} "
        f"status: ({int(ErrorCode.FORBIDDEN)}) - {why}",
    )


def _api_key_subscription(
    request: enforcer_pb2.HandshakeRequest,
    api: config_pb2.ApiPolicy,
    claims: Claims,
    state: SubscriptionState,
) -> Subscription:
    app = claims.application
    if app is None or not app.id:
        raise AuthError("Malformed API key: it names no application")
    subscription = resolve_application(state, app.id, claims.key_type, api.api_id)
    ips = _listed(claims.raw.get("permittedIP"))
    if ips and not ip_permitted(request.client_ip, ips):
        raise _access_failure(api, "the API key is not allowed from this IP address")
    referers = _listed(claims.raw.get("permittedReferer"))
    if referers and not referer_permitted(request.referer, referers):
        raise _access_failure(api, "the API key is not allowed from this referrer")
    return subscription


# ---- the decision --------------------------------------------------------------------------------


def _check(
    request: enforcer_pb2.HandshakeRequest,
    entry: ApiEntry | None,
    authenticate: Authenticate,
    state: SubscriptionState,
    options: Options,
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
    _check_origin(request, api, options)
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
            quotas=quotas(state, api, None, topic),
        )
    offered = credential(request, accepted_kinds(api))
    claims = authenticate(offered.token)
    if claims.token_kind != offered.kind:
        raise AuthError(
            f"{KIND_NAMES[claims.token_kind].capitalize()} was offered as "
            f"{KIND_NAMES[offered.kind]}"
        )
    if state.is_revoked(claims.token_id):
        raise AuthError("API key revoked" if offered.kind == API_KEY else "Access token revoked")
    if claims.test_key and api.source == CONTROL_PLANE and not options.testkeys_on_control_plane:
        raise AuthError(
            "Test keys are not accepted on APIs managed by the control plane: use an "
            "application's access token or API key"
        )
    if api.source != CONTROL_PLANE and (offered.kind == API_KEY or claims.check_subscriptions):
        raise _access_failure(api, STANDALONE_REFUSAL)
    subscription: Subscription | None = None
    if offered.kind == API_KEY:
        subscription = _api_key_subscription(request, api, claims, state)
    elif claims.check_subscriptions:
        subscription = resolve(state, claims, api.api_id)
    if topic.scopes and not set(topic.scopes) & set(claims.scopes):
        raise Denial(
            403,
            ErrorCode.INVALID_SCOPE,
            "The access token does not allow you to access the requested resource",
            f"User is NOT authorized to access the Resource: {request.topic}. "
            + (
                "The topic requires a scope, which API keys do not carry: use an access token."
                if offered.kind == API_KEY
                else "Scope validation failed."
            ),
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
        quotas=quotas(state, api, subscription, topic),
        credential_kind=offered.kind,
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
    options: Options = DEFAULT_OPTIONS,
) -> enforcer_pb2.HandshakeResponse:
    """Allow or deny one handshake; every refusal becomes a denial response, never an error."""
    try:
        return _check(request, entry, authenticate, state, options)
    except Denial as denial:
        return deny(denial)
