"""OAuth2 token service: client credentials, RFC 6749 errors, scopes, JWT claims, revocation."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.app import create_app
from control_plane.models import RevokedToken
from control_plane.settings import ControlPlaneSettings
from control_plane.signing import thumbprint
from control_plane.tokens import grant_scopes
from tests.unit.control_plane.helpers import (
    DEVPORTAL,
    create_application,
    generate_keys,
    published_api,
)

ISSUER = "https://cp.example/oauth2/token"


def scoped_api(client: TestClient, **changes: Any) -> str:
    scopes = [
        {"scope": {"name": "read", "bindings": ["subscriber"]}},
        {"scope": {"name": "admin:all", "bindings": ["admin"]}},
        {"scope": {"name": "open", "bindings": []}},
    ]
    operations = [
        {"target": "/notifications", "verb": "SUBSCRIBE", "scopes": ["read"]},
        {"target": "/ops", "verb": "PUBLISH", "scopes": ["admin:all"]},
        {"target": "/open", "verb": "PUBLISH", "scopes": ["open"]},
    ]
    return published_api(client, scopes=scopes, operations=operations, **changes)


@pytest.fixture
def oauth(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    settings = settings.model_copy(
        update={"cp_users": "admin:admin,dev:dev", "cp_token_issuer": ISSUER}
    )
    with TestClient(create_app(settings)) as client:
        client.auth = ("admin", "admin")
        yield client


def keys_for(client: TestClient, user: str, api_id: str, key_type: str = "PRODUCTION") -> Any:
    auth = (user, user)
    body = {"name": f"{user}-app", "throttlingPolicy": "10PerMin"}
    app = client.post(f"{DEVPORTAL}/applications", json=body, auth=auth).json()
    sub = client.post(
        f"{DEVPORTAL}/subscriptions",
        json={
            "applicationId": app["applicationId"],
            "apiId": api_id,
            "throttlingPolicy": "AsyncGold",
        },
        auth=auth,
    )
    assert sub.status_code == 201, sub.text
    made = client.post(
        f"{DEVPORTAL}/applications/{app['applicationId']}/generate-keys",
        json={"keyType": key_type, "grantTypesToBeSupported": ["client_credentials"]},
        auth=auth,
    )
    assert made.status_code == 200, made.text
    return app, made.json()


def token(client: TestClient, keys: Any, scope: str = "", **form: str) -> Any:
    data = {"grant_type": "client_credentials", **form}
    if scope:
        data["scope"] = scope
    return client.post(
        "/oauth2/token", data=data, auth=(keys["consumerKey"], keys["consumerSecret"])
    )


def verify(client: TestClient, access_token: str, audience: str) -> dict[str, Any]:
    """Check the token the way an enforcer would: JWKS by kid, RS256 pinned."""
    jwks = client.get("/oauth2/jwks").json()
    kid = jwt.get_unverified_header(access_token)["kid"]
    [jwk] = [k for k in jwks["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk).key
    claims: dict[str, Any] = jwt.decode(
        access_token, key, algorithms=["RS256"], audience=audience, issuer=ISSUER
    )
    return claims


def test_grant_scopes_rules() -> None:
    available = {"read": ["subscriber"], "admin:all": ["admin"], "open": []}
    assert grant_scopes(["read", "open", "admin:all", "x"], available, {"subscriber"}) == [
        "read",
        "open",
    ]
    assert grant_scopes(["admin:all"], available, {"subscriber"}) == ["default"]
    assert grant_scopes([], available, {"admin"}) == ["default"]
    assert grant_scopes(["read", "read"], available, {"subscriber"}) == ["read"]


def test_scopes_do_not_depend_on_subscriptions(oauth: TestClient) -> None:
    scoped_api(oauth)
    auth = ("dev", "dev")
    app = oauth.post(
        f"{DEVPORTAL}/applications",
        json={"name": "early", "throttlingPolicy": "10PerMin"},
        auth=auth,
    ).json()
    made = oauth.post(
        f"{DEVPORTAL}/applications/{app['applicationId']}/generate-keys",
        json={"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]},
        auth=auth,
    )
    assert made.status_code == 200, made.text
    before = token(oauth, made.json(), "read admin:all")
    assert before.json()["scope"] == "read"  # not subscribed yet; still a subscriber's scope


def test_token_claims_verify_against_jwks(oauth: TestClient) -> None:
    api_id = scoped_api(oauth)
    app, keys = keys_for(oauth, "dev", api_id)
    answer = token(oauth, keys, "read admin:all open unknown")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "read open"  # dev is a subscriber, not an admin
    claims = verify(oauth, body["access_token"], keys["consumerKey"])
    assert claims["sub"] == "dev"
    assert claims["azp"] == keys["consumerKey"]
    assert claims["keytype"] == "PRODUCTION"
    assert claims["scope"] == "read open"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 10
    assert claims["application"] == {
        "id": app["applicationId"],
        "name": "dev-app",
        "tier": "10PerMin",
        "owner": "dev",
    }
    assert len(claims["jti"]) == 36
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    jwk = oauth.get("/oauth2/jwks").json()["keys"][0]
    assert header["kid"] == thumbprint(jwk)
    # the admin owner gets the admin-bound scope too
    _, admin_keys = keys_for(oauth, "admin", api_id, "SANDBOX")
    admin_token = token(oauth, admin_keys, "admin:all").json()
    assert admin_token["scope"] == "admin:all"
    assert verify(oauth, admin_token["access_token"], admin_keys["consumerKey"])["keytype"] == (
        "SANDBOX"
    )


def test_a_token_signed_otherwise_is_rejected_by_the_pinned_check(oauth: TestClient) -> None:
    forged = jwt.encode({"iss": ISSUER, "aud": "x"}, "secret", algorithm="HS256")
    jwk = oauth.get("/oauth2/jwks").json()["keys"][0]
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(forged, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="x")


def test_client_auth_in_form_and_defaults(oauth: TestClient) -> None:
    _, keys = keys_for(oauth, "dev", scoped_api(oauth))
    answer = oauth.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": keys["consumerKey"],
            "client_secret": keys["consumerSecret"],
        },
        auth=None,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "default"


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.mark.parametrize(
    ("form", "headers", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, {}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, basic("nobody", "x"), 401, "invalid_client"),
        (
            {"grant_type": "client_credentials"},
            {"Authorization": "Basic !!"},
            401,
            "invalid_client",
        ),
        ({"grant_type": "password"}, None, 400, "unsupported_grant_type"),
        ({}, None, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": 'a"b'}, None, 400, "invalid_scope"),
    ],
    ids=["no-auth", "unknown", "garbled", "grant", "no-grant", "scope"],
)
def test_token_errors_follow_rfc6749(
    oauth: TestClient,
    form: dict[str, str],
    headers: dict[str, str] | None,
    status: int,
    error: str,
) -> None:
    _, keys = keys_for(oauth, "dev", scoped_api(oauth))
    sent = headers if headers is not None else basic(keys["consumerKey"], keys["consumerSecret"])
    answer = oauth.post("/oauth2/token", data=form, headers=sent, auth=None)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["error_description"]
    if status == 401:
        assert "www-authenticate" in answer.headers


def test_wrong_secret_is_invalid_client(oauth: TestClient) -> None:
    _, keys = keys_for(oauth, "dev", scoped_api(oauth))
    answer = oauth.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(keys["consumerKey"], "wrong"),
    )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


def test_revoke(oauth: TestClient) -> None:
    api_id = scoped_api(oauth)
    _, keys = keys_for(oauth, "dev", api_id)
    _, other = keys_for(oauth, "admin", api_id)
    issued = token(oauth, keys).json()["access_token"]
    claims = jwt.decode(issued, options={"verify_signature": False})
    auth = (keys["consumerKey"], keys["consumerSecret"])
    foreign = oauth.post(
        "/oauth2/revoke",
        data={"token": issued},
        auth=(other["consumerKey"], other["consumerSecret"]),
    )
    assert foreign.status_code == 400 and foreign.json()["error"] == "unauthorized_client"
    assert oauth.post("/oauth2/revoke", data={"token": issued}, auth=auth).status_code == 200
    assert oauth.post("/oauth2/revoke", data={"token": issued}, auth=auth).status_code == 200
    assert oauth.post("/oauth2/revoke", data={"token": "garbage"}, auth=auth).status_code == 200
    missing = oauth.post("/oauth2/revoke", data={}, auth=auth)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    unauthenticated = oauth.post("/oauth2/revoke", data={"token": issued}, auth=None)
    assert unauthenticated.status_code == 401
    factory = oauth.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        rows = session.scalars(select(RevokedToken)).all()
        assert [(r.jti, r.expires_at) for r in rows] == [(claims["jti"], claims["exp"])]


def test_generate_token_can_revoke_the_previous_one(oauth: TestClient) -> None:
    app_id = create_application(oauth)["applicationId"]
    keys = generate_keys(oauth, app_id).json()
    path = f"{DEVPORTAL}/applications/{app_id}/oauth-keys/{keys['keyMappingId']}/generate-token"
    first = oauth.post(path, json={}).json()["accessToken"]
    second = oauth.post(path, json={"revokeToken": first})
    assert second.status_code == 200
    jti = jwt.decode(first, options={"verify_signature": False})["jti"]
    factory = oauth.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        assert session.get(RevokedToken, jti) is not None


def test_signing_key_survives_a_restart(settings: ControlPlaneSettings) -> None:
    with TestClient(create_app(settings)) as first:
        jwks = first.get("/oauth2/jwks").json()
    with TestClient(create_app(settings)) as second:
        assert second.get("/oauth2/jwks").json() == jwks
    key = jwks["keys"][0]
    canonical = json.dumps({"e": key["e"], "kty": "RSA", "n": key["n"]}, separators=(",", ":"))
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert key["kid"] == digest.decode().rstrip("=")  # RFC 7638
