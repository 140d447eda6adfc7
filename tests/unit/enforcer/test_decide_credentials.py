"""The handshake decision with every credential carrier: which credential applies, per-API
security schemes, API keys (subscription, IP and referrer restrictions), Origin, test keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from types import MappingProxyType

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from enforcer.decide import Options, decide, ip_permitted, origin_allowed, referer_permitted
from enforcer.denials import AuthError
from enforcer.keymanagers import IssuerBook
from enforcer.policies import ApiEntry
from enforcer.subscriptions import EMPTY_STATE, SubscriptionState
from enforcer.testkey import public_jwk
from enforcer.tokens import Application, Claims, validate
from wsgate_proto import config_pb2, enforcer_pb2
from wsgate_proto import subscription_pb2 as sp

from .conftest import NOW

API_ID = "chat:1.0.0"
KEY_ISS = "https://localhost:9443/api-keys"


def entry(
    schemes: Sequence[str] = (),
    *,
    cors: config_pb2.Cors | None = None,
    source: str = "control-plane",
    scopes: Sequence[str] = (),
) -> ApiEntry:
    topic = config_pb2.TopicPolicy(path="/rooms", secured=True, scopes=list(scopes))
    api = config_pb2.ApiPolicy(
        api_id=API_ID,
        api_version="1.0.0",
        base_path="/chat/1.0.0",
        lifecycle_status="PUBLISHED",
        topics=[topic],
        has_production_endpoint=True,
        has_sandbox_endpoint=True,
        security_schemes=list(schemes),
        cors=cors,
        source=source,
    )
    return ApiEntry(api=api, topics=MappingProxyType({topic.path: topic}))


def request(
    *credentials: tuple[str, str, str],
    authorization: str = "",
    origin: str = "",
    referer: str = "",
    client_ip: str = "10.1.2.3",
) -> enforcer_pb2.HandshakeRequest:
    return enforcer_pb2.HandshakeRequest(
        request_id="r",
        api_id=API_ID,
        topic="/rooms",
        authorization=authorization,
        client_ip=client_ip,
        origin=origin,
        referer=referer,
        credentials=[enforcer_pb2.Credential(kind=k, source=s, token=t) for k, s, t in credentials],
    )


def oauth_claims(*, test_key: bool = False, check: bool = False) -> Claims:
    return Claims(
        issuer="iss",
        issuer_name="km",
        subject="alice",
        scopes=("read",),
        key_type="PRODUCTION",
        token_id="jti-oauth",
        expires_at=NOW + 60,
        application=None,
        check_subscriptions=check,
        raw={},
        test_key=test_key,
    )


def key_claims(
    *,
    app_id: str = "app-1",
    key_type: str = "PRODUCTION",
    ips: str = "",
    referers: str = "",
    jti: str = "jti-key",
) -> Claims:
    return Claims(
        issuer=KEY_ISS,
        issuer_name="api-keys",
        subject="bob",
        scopes=(),
        key_type=key_type,
        token_id=jti,
        expires_at=0,
        application=Application(id=app_id, name="App", tier="Unlimited", owner="bob"),
        check_subscriptions=True,
        raw={"permittedIP": ips, "permittedReferer": referers},
        token_kind="api_key",
    )


def by_token(known: dict[str, Claims]) -> Callable[[str], Claims]:
    def authenticate(token: str) -> Claims:
        if token not in known:
            raise AuthError("Invalid token signature")
        return known[token]

    return authenticate


def never(token: str) -> Claims:
    raise AssertionError("the token must not be looked at")


def subscribed(state: str = "UNBLOCKED", app_id: str = "app-1") -> SubscriptionState:
    return SubscriptionState(
        applications=MappingProxyType(
            {app_id: sp.Application(id=app_id, name="App", owner="bob", tier="Unlimited")}
        ),
        by_pair=MappingProxyType(
            {
                (app_id, API_ID): sp.Subscription(
                    id="sub-1", api_id=API_ID, application_id=app_id, tier="Gold", state=state
                )
            }
        ),
    )


OAUTH = by_token({"tok": oauth_claims()})


# ---- which credential ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    [("oauth2", "header", "tok"), ("oauth2", "query", "tok"), ("oauth2", "subprotocol", "tok")],
)
def test_an_access_token_from_any_carrier(credential: tuple[str, str, str]) -> None:
    response = decide(request(credential), entry(), OAUTH)
    assert response.allowed and response.credential_kind == "oauth2"


def test_the_same_token_in_several_places_is_one_credential() -> None:
    response = decide(
        request(("oauth2", "header", "tok"), ("oauth2", "query", "tok")), entry(), OAUTH
    )
    assert response.allowed


def test_disagreeing_credentials_are_refused_before_any_is_verified() -> None:
    response = decide(
        request(("oauth2", "header", "tok"), ("oauth2", "subprotocol", "other")), entry(), never
    )
    assert (response.http_status, response.error_code) == (401, 900901)
    assert response.message == "Invalid Credentials"
    assert "more than one place disagree" in response.description
    assert "header (oauth2)" in response.description
    assert "subprotocol (oauth2)" in response.description
    assert "tok" not in response.description.replace("token", "")


def test_one_token_as_two_kinds_is_refused() -> None:
    response = decide(
        request(("oauth2", "header", "tok"), ("api_key", "query", "tok")),
        entry(["oauth2", "api_key"]),
        never,
    )
    assert (response.http_status, response.error_code) == (401, 900901)


def test_legacy_router_authorization_only() -> None:
    assert decide(request(authorization="Bearer tok"), entry(), OAUTH).allowed
    basic = decide(request(authorization="Basic YTpi"), entry(), never)
    assert (basic.http_status, basic.error_code) == (401, 900902)


@pytest.mark.parametrize(
    ("schemes", "wanted", "unwanted"),
    [
        ((), ["Authorization : Bearer", "access_token=", "choreo-oauth2-key"], ["apikey"]),
        (("api_key",), ["apikey : API_KEY", "?apikey=", "choreo-api-key"], ["Bearer"]),
        (("oauth2", "api_key"), ["Bearer", "access_token", "apikey", "choreo-api-key"], []),
    ],
)
def test_missing_credentials_lists_what_the_api_accepts(
    schemes: tuple[str, ...], wanted: list[str], unwanted: list[str]
) -> None:
    response = decide(request(), entry(schemes), never)
    assert (response.http_status, response.error_code) == (401, 900902)
    assert response.message == "Missing Credentials"
    for text in wanted:
        assert text in response.description
    for text in unwanted:
        assert text not in response.description


def test_an_api_key_only_api_refuses_an_oauth2_token() -> None:
    response = decide(request(("oauth2", "header", "tok")), entry(["api_key"]), never)
    assert (response.http_status, response.error_code) == (401, 900901)
    assert "does not accept an OAuth2 access token" in response.description
    assert "apikey" in response.description


def test_an_oauth2_only_api_refuses_an_api_key() -> None:
    response = decide(request(("api_key", "header", "key")), entry(["oauth2"]), never)
    assert (response.http_status, response.error_code) == (401, 900901)
    assert "does not accept an API key" in response.description


def test_a_token_offered_as_another_kind_is_refused() -> None:
    both = entry(["oauth2", "api_key"])
    as_key = decide(request(("api_key", "query", "tok")), both, OAUTH)
    assert (as_key.http_status, as_key.error_code) == (401, 900901)
    assert "was offered as an API key" in as_key.description
    keys = by_token({"key": key_claims()})
    as_token = decide(request(("oauth2", "query", "key")), both, keys, subscribed())
    assert (as_token.http_status, as_token.error_code) == (401, 900901)


# ---- API keys --------------------------------------------------------------------------------


def test_api_key_allowed_with_its_application_subscription() -> None:
    keys = by_token({"key": key_claims()})
    response = decide(request(("api_key", "header", "key")), entry(["api_key"]), keys, subscribed())
    assert response.allowed
    assert response.credential_kind == "api_key"
    assert (response.application_id, response.subscription_id) == ("app-1", "sub-1")
    assert response.subscription_tier == "Gold" and response.token_id == "jti-key"
    assert response.token_expires_at == 0


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        (EMPTY_STATE, 403, 900908),  # the application is unknown
        (subscribed(app_id="app-2"), 403, 900908),  # not this application's subscription
        (subscribed("BLOCKED"), 403, 900907),
        (subscribed("PROD_ONLY_BLOCKED"), 403, 900907),
    ],
)
def test_api_key_subscription_refusals(state: SubscriptionState, status: int, code: int) -> None:
    keys = by_token({"key": key_claims()})
    response = decide(request(("api_key", "query", "key")), entry(["api_key"]), keys, state)
    assert (response.http_status, response.error_code) == (status, code)


def test_sandbox_api_key_passes_a_production_only_block() -> None:
    keys = by_token({"key": key_claims(key_type="SANDBOX")})
    state = subscribed("PROD_ONLY_BLOCKED")
    response = decide(request(("api_key", "query", "key")), entry(["api_key"]), keys, state)
    assert response.allowed and response.key_type == "SANDBOX"


def test_revoked_api_key() -> None:
    keys = by_token({"key": key_claims()})
    state = subscribed()
    state = SubscriptionState(
        applications=state.applications,
        by_pair=state.by_pair,
        revoked=MappingProxyType({"jti-key": NOW + 60}),
    )
    response = decide(request(("api_key", "header", "key")), entry(["api_key"]), keys, state)
    assert (response.http_status, response.error_code) == (401, 900901)
    assert response.description == "API key revoked"


@pytest.mark.parametrize(
    ("ips", "client_ip", "allowed"),
    [
        ("", "10.1.2.3", True),
        ("10.1.2.3", "10.1.2.3", True),
        ("192.168.0.1, 10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/24", "10.1.2.3", False),
        ("192.168.0.1", "10.1.2.3", False),
        ("127.0.0.1", "::ffff:127.0.0.1", True),
        ("::1", "::1", True),
        ("2001:db8::/32", "2001:db8::5", True),
        ("not-an-ip", "10.1.2.3", False),
        ("10.1.2.3", "", False),
    ],
)
def test_api_key_permitted_ip(ips: str, client_ip: str, allowed: bool) -> None:
    keys = by_token({"key": key_claims(ips=ips)})
    response = decide(
        request(("api_key", "header", "key"), client_ip=client_ip),
        entry(["api_key"]),
        keys,
        subscribed(),
    )
    assert response.allowed is allowed
    if not allowed:
        assert (response.http_status, response.error_code) == (403, 900908)
        assert response.message == "Resource forbidden"
        assert response.description.startswith(
            "Access failure for API: /chat/1.0.0, version: 1.0.0 status: (900908) - "
        )
        assert "IP address" in response.description


@pytest.mark.parametrize(
    ("patterns", "referer", "allowed"),
    [
        ("", "", True),
        ("www.example.com/*", "https://www.example.com/app/page", True),
        ("*.example.com/*", "https://shop.example.com/x", True),
        ("https://app.example.com/chat", "https://app.example.com/chat", True),
        ("www.example.com/*", "https://www.example.com.evil.net/x", False),
        ("www.example.com/*", "https://evil.net/?www.example.com/", False),
        ("www.example.com/*", "", False),
    ],
)
def test_api_key_permitted_referer(patterns: str, referer: str, allowed: bool) -> None:
    keys = by_token({"key": key_claims(referers=patterns)})
    response = decide(
        request(("api_key", "header", "key"), referer=referer),
        entry(["api_key"]),
        keys,
        subscribed(),
    )
    assert response.allowed is allowed
    if not allowed:
        assert (response.http_status, response.error_code) == (403, 900908)
        assert "referrer" in response.description


def test_api_keys_carry_no_scopes() -> None:
    keys = by_token({"key": key_claims()})
    response = decide(
        request(("api_key", "header", "key")),
        entry(["api_key"], scopes=["read"]),
        keys,
        subscribed(),
    )
    assert (response.http_status, response.error_code) == (403, 900910)


def test_helpers_directly() -> None:
    assert ip_permitted("10.0.0.1", ["10.0.0.0/8"]) and not ip_permitted("x", ["10.0.0.0/8"])
    assert referer_permitted("http://a.example/", ["a.example/*"])
    assert not referer_permitted("http://a.example/", [])


# ---- origins ---------------------------------------------------------------------------------


LOCAL = ("http://localhost:*", "http://127.0.0.1:*")


@pytest.mark.parametrize(
    ("origin", "patterns", "allowed"),
    [
        ("https://app.example.com", ["https://app.example.com"], True),
        ("https://APP.example.com/", ["https://app.example.com"], True),
        ("https://app.example.com", ["http://app.example.com"], False),
        ("https://app.example.com:8443", ["https://app.example.com"], False),
        ("https://evil.example", ["*"], True),
        ("http://localhost:3000", LOCAL, True),
        ("http://localhost", LOCAL, True),
        ("http://localhost.evil.net", LOCAL, False),
        ("http://localhost:3000.evil.net", LOCAL, False),
        ("https://a.b.example.com", ["https://*.example.com"], True),
        ("https://example.com", ["https://*.example.com"], False),
        ("https://evilexample.com", ["https://*.example.com"], False),
        ("null", LOCAL, False),
        ("null", ["null"], True),
        ("garbage", LOCAL, False),
    ],
)
def test_origin_allowed(origin: str, patterns: Sequence[str], allowed: bool) -> None:
    assert origin_allowed(origin, patterns) is allowed


def test_origin_follows_the_api_cors_or_the_gateway_default() -> None:
    options = Options(allowed_origins=LOCAL)
    token = ("oauth2", "header", "tok")
    api_cors = config_pb2.Cors(enabled=True, allow_origins=["https://app.example.com"])
    cases = [
        (entry(), "", True),  # no Origin: not a browser, unaffected
        (entry(), "http://localhost:8080", True),
        (entry(), "https://app.example.com", False),
        (entry(cors=api_cors), "https://app.example.com", True),
        (entry(cors=api_cors), "http://localhost:8080", False),  # the API's list replaces it
        (entry(cors=config_pb2.Cors(enabled=True, allow_origins=["*"])), "https://x.y", True),
        (entry(cors=config_pb2.Cors(enabled=False, allow_origins=["*"])), "https://x.y", False),
        (entry(cors=config_pb2.Cors(enabled=True)), "http://localhost:8080", False),
    ]
    for api, origin, allowed in cases:
        response = decide(request(token, origin=origin), api, OAUTH, options=options)
        assert response.allowed is allowed, (api.api.cors, origin)
        if not allowed:
            assert (response.http_status, response.error_code) == (403, 900908)
            assert "is not allowed to connect" in response.description


def test_a_bad_origin_is_refused_before_the_credential_is_looked_at() -> None:
    response = decide(request(origin="https://evil.example"), entry(), never)
    assert (response.http_status, response.error_code) == (403, 900908)


# ---- test keys -----------------------------------------------------------------------------


def test_test_keys_on_control_plane_apis_only_when_allowed() -> None:
    testkey = by_token({"tok": oauth_claims(test_key=True)})
    token = request(("oauth2", "header", "tok"))
    assert decide(token, entry(source="adapter"), testkey).allowed
    refused = decide(token, entry(source="control-plane"), testkey)
    assert (refused.http_status, refused.error_code) == (401, 900901)
    assert "Test keys are not accepted" in refused.description
    allowed = Options(testkeys_on_control_plane=True)
    assert decide(token, entry(source="control-plane"), testkey, options=allowed).allowed
    # A key manager's token is not a test key.
    assert decide(token, entry(source="control-plane"), OAUTH).allowed


def test_cli_apis_take_test_keys_but_no_credential_that_needs_a_subscription() -> None:
    """A CLI-deployed (standalone) API is unknown to the control plane, so no application can
    subscribe to it: its application tokens and API keys are refused with a 403 that says so,
    even if subscription data named the API (issue 13); test keys open it."""
    cli = entry(["oauth2", "api_key"], source="adapter")
    state = subscribed()
    credentials = {
        "app-token": oauth_claims(check=True),
        "api-key": key_claims(),
        "test-key": oauth_claims(test_key=True),
    }
    known = by_token(credentials)
    for token, kind in (("app-token", "oauth2"), ("api-key", "api_key")):
        refused = decide(request((kind, "header", token)), cli, known, state)
        assert (refused.http_status, refused.error_code) == (403, 900908), token
        assert "deployed with the CLI (standalone mode)" in refused.description
        assert "use a test key (POST /testkey)" in refused.description
        # The same credential on a control-plane API with that subscription is let in.
        cp = entry(["oauth2", "api_key"], source="control-plane")
        if kind == "api_key":
            assert decide(request((kind, "header", token)), cp, known, state).allowed
    assert decide(request(("oauth2", "header", "test-key")), cli, known, state).allowed
    # An issuer configured not to check subscriptions (the issuers file) opens it too.
    unchecked = by_token({"tok": oauth_claims(check=False)})
    assert decide(request(("oauth2", "header", "tok")), cli, unchecked, state).allowed


# ---- API-key issuers (real signatures) -------------------------------------------------------


def api_key_issuer(key: rsa.RSAPrivateKey) -> IssuerBook:
    jwks = {"keys": [{**public_jwk(key.public_key()), "kid": "ak", "alg": "RS256"}]}
    book = IssuerBook([])
    book.set_key_managers(
        [
            sp.KeyManager(
                name="api-keys",
                issuer=KEY_ISS,
                algorithms=["RS256"],
                jwks_json=json.dumps(jwks),
                token_kind="api_key",
            )
        ]
    )
    return book


def test_api_key_issuer_tokens(rsa_key: rsa.RSAPrivateKey) -> None:
    registry = api_key_issuer(rsa_key).registry
    payload = {
        "iss": KEY_ISS,
        "sub": "bob",
        "jti": "k1",
        "iat": NOW,
        "keytype": "SANDBOX",
        "application": {"uuid": "app-1", "name": "App", "tier": "Unlimited", "owner": "bob"},
        "permittedIP": "",
        "permittedReferer": "",
        "tokenType": "apiKey",
    }
    never_expires = validate(jwt.encode(payload, rsa_key, "RS256", {"kid": "ak"}), registry, NOW)
    assert never_expires.token_kind == "api_key" and never_expires.expires_at == 0
    assert never_expires.application is not None and never_expires.application.id == "app-1"
    assert never_expires.key_type == "SANDBOX"
    expired = jwt.encode({**payload, "exp": NOW - 1}, rsa_key, "RS256", {"kid": "ak"})
    with pytest.raises(AuthError, match="API key expired"):
        validate(expired, registry, NOW)
    wrong_type = jwt.encode({**payload, "tokenType": "JWT"}, rsa_key, "RS256", {"kid": "ak"})
    with pytest.raises(AuthError, match="tokenType"):
        validate(wrong_type, registry, NOW)
    hs = jwt.encode(payload, "s" * 32, "HS256", {"kid": "ak"})
    with pytest.raises(AuthError, match="algorithm"):
        validate(hs, registry, NOW)


def test_bad_token_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="token kind"):
        IssuerBook([]).set_key_managers(
            [
                sp.KeyManager(
                    name="x",
                    issuer="i",
                    algorithms=["RS256"],
                    jwks_url="https://i/j",
                    token_kind="cookie",
                )
            ]
        )
