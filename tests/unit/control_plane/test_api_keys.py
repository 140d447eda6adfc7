"""Developer portal API keys: generate (claims, validity, IP/referrer restrictions), revoke (the
jti reaches enforcers as a revoked token), owner-only, and revoked with their application."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane import apikeys
from control_plane.app import create_app
from control_plane.models import ApiKey, RevokedToken
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.helpers import (
    AUTH,
    DEVPORTAL,
    FakeAdapter,
    create_application,
    published_api,
    subscribe,
)
from tests.unit.control_plane.test_push import wait_until

ISSUER = "https://cp.example/oauth2/token"
APPS = f"{DEVPORTAL}/applications"


@pytest.fixture
def devs(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    settings = settings.model_copy(
        update={
            "cp_users": "admin:admin,ann:ann,bob:bob",
            "cp_token_issuer": ISSUER,
            "cp_api_key_max_validity": 86_400,
        }
    )
    with TestClient(create_app(settings)) as client:
        client.auth = ("ann", "ann")
        yield client


def generate(client: TestClient, app_id: str, key_type: str = "PRODUCTION", **body: Any) -> Any:
    return client.post(f"{APPS}/{app_id}/api-keys/{key_type}/generate", json=body)


def revoke(client: TestClient, app_id: str, apikey: str, key_type: str = "PRODUCTION") -> Any:
    return client.post(f"{APPS}/{app_id}/api-keys/{key_type}/revoke", json={"apikey": apikey})


def verify(client: TestClient, apikey: str) -> dict[str, Any]:
    """The key's claims, checked with the published JWKS under the API-key issuer."""
    jwk = client.get("/oauth2/jwks").json()["keys"][0]
    claims: dict[str, Any] = jwt.decode(
        apikey,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        issuer=f"{ISSUER}/apikey",
        options={"require": ["iss", "jti", "iat"]},
    )
    return claims


def rows(client: TestClient, model: Any) -> list[Any]:
    factory = client.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        return list(session.scalars(select(model)).all())


def test_generate_answers_wso2_shape_with_the_api_key_claims(devs: TestClient) -> None:
    app = create_application(devs, "Browser", throttlingPolicy="10PerMin")
    answer = generate(
        devs,
        app["applicationId"],
        validityPeriod=600,
        additionalProperties={
            "permittedIP": "10.0.0.1, 192.168.7.9/24,::1",
            "permittedReferer": "www.example.com/*, https://*.example.org/app/*",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"keyName", "apikey", "validityTime"}
    assert body["validityTime"] == 600
    claims = verify(devs, body["apikey"])
    assert claims["iss"] == f"{ISSUER}/apikey"
    assert claims["sub"] == "ann"
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 10
    assert claims["keytype"] == "PRODUCTION"
    assert claims["tokenType"] == "apiKey"
    assert claims["application"] == {
        "uuid": app["applicationId"],
        "name": "Browser",
        "tier": "10PerMin",
        "owner": "ann",
    }
    assert claims["permittedIP"] == "10.0.0.1,192.168.7.0/24,::1"
    assert claims["permittedReferer"] == "www.example.com/*,https://*.example.org/app/*"
    assert body["keyName"] == f"Browser-production-{claims['jti'][:8]}"
    assert "aud" not in claims and "scope" not in claims
    [row] = rows(devs, ApiKey)
    assert (row.jti, str(row.application_id), row.key_type) == (
        claims["jti"],
        app["applicationId"],
        "PRODUCTION",
    )
    assert (row.expires_at, row.revoked) == (claims["exp"], False)


def test_validity_no_expiry_default_and_bounds(devs: TestClient) -> None:
    app_id = create_application(devs)["applicationId"]
    for never in (-1, 0):
        answer = generate(devs, app_id, "SANDBOX", validityPeriod=never)
        assert answer.status_code == 200, answer.text
        assert answer.json()["validityTime"] == -1
        claims = verify(devs, answer.json()["apikey"])
        assert "exp" not in claims
        assert claims["keytype"] == "SANDBOX"
        assert claims["permittedIP"] == "" and claims["permittedReferer"] == ""
    default = generate(devs, app_id)
    assert default.json()["validityTime"] == 3600
    claims = verify(devs, default.json()["apikey"])
    assert claims["exp"] - claims["iat"] == 3600
    no_body = devs.post(f"{APPS}/{app_id}/api-keys/PRODUCTION/generate")
    assert no_body.status_code == 200 and no_body.json()["validityTime"] == 3600
    assert generate(devs, app_id, validityPeriod=86_400).status_code == 200
    for bad in (86_401, -2, 10**30):
        answer = generate(devs, app_id, validityPeriod=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["description"].startswith("validityPeriod: must be 1..86400")
    assert len(rows(devs, ApiKey)) == 5  # the refused ones left no row


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"permittedIP": "10.0.0.300"}, "permittedIP"),
        ({"permittedIP": "example.com"}, "permittedIP"),
        ({"permittedIP": "10.0.0.0/33"}, "permittedIP"),
        ({"permittedIP": ",".join(f"10.0.0.{n}" for n in range(51))}, "permittedIP: at most 50"),
        ({"permittedIP": 42}, "additionalProperties.permittedIP"),
        ({"permittedReferer": "www.example.com/ a"}, "permittedReferer"),
        ({"permittedReferer": "x" * 256}, "permittedReferer"),
        ({"permittedReferer": "evil\r\nSet-Cookie: a"}, "permittedReferer"),
        ({"permittedReferer": "<script>"}, "permittedReferer"),
    ],
)
def test_bad_restrictions_are_400_naming_the_field(
    devs: TestClient, properties: dict[str, Any], field: str
) -> None:
    app_id = create_application(devs)["applicationId"]
    answer = generate(devs, app_id, additionalProperties=properties)
    assert answer.status_code == 400, answer.text
    assert answer.json()["description"].startswith(field)
    assert rows(devs, ApiKey) == []


def test_key_type_and_ownership(devs: TestClient) -> None:
    app_id = create_application(devs)["applicationId"]
    bad = generate(devs, app_id, "STAGING")
    assert bad.status_code == 400 and "keyType" in bad.json()["description"]
    assert generate(devs, app_id, "sandbox").status_code == 200  # case does not matter
    bob = ("bob", "bob")
    others = devs.post(f"{APPS}/{app_id}/api-keys/PRODUCTION/generate", json={}, auth=bob)
    assert others.status_code == 404
    apikey = generate(devs, app_id).json()["apikey"]
    stolen = devs.post(
        f"{APPS}/{app_id}/api-keys/PRODUCTION/revoke", json={"apikey": apikey}, auth=bob
    )
    assert stolen.status_code == 404
    assert devs.post(f"{APPS}/not-a-uuid/api-keys/PRODUCTION/generate").status_code == 404
    nobody = devs.post(f"{APPS}/{app_id}/api-keys/PRODUCTION/generate", auth=None)
    assert nobody.status_code == 401


def test_revoke_lists_the_jti_once_and_checks_the_key(devs: TestClient) -> None:
    app_id = create_application(devs)["applicationId"]
    other_app = create_application(devs, "Other")["applicationId"]
    apikey = generate(devs, app_id, validityPeriod=600).json()["apikey"]
    forever = generate(devs, app_id, validityPeriod=-1).json()["apikey"]
    claims = verify(devs, apikey)
    # not this application's, not this key type, not an API key at all
    assert revoke(devs, other_app, apikey).status_code == 400
    wrong_type = revoke(devs, app_id, apikey, "SANDBOX")
    assert wrong_type.status_code == 400 and "PRODUCTION key" in wrong_type.json()["description"]
    assert revoke(devs, app_id, "garbage").status_code == 400
    assert revoke(devs, app_id, "x" * 20_000).status_code == 400
    assert revoke(devs, app_id, apikey, "BOGUS").status_code == 400
    assert rows(devs, RevokedToken) == []
    assert revoke(devs, app_id, apikey).status_code == 200
    assert revoke(devs, app_id, apikey).status_code == 200  # twice is fine
    assert revoke(devs, app_id, forever).status_code == 200
    revoked = {(r.jti, r.expires_at) for r in rows(devs, RevokedToken)}
    assert revoked == {
        (claims["jti"], claims["exp"]),
        (verify(devs, forever)["jti"], apikeys.FOREVER),
    }
    assert all(row.revoked for row in rows(devs, ApiKey))


def test_an_access_token_is_not_an_api_key(devs: TestClient) -> None:
    """Same signing key, other issuer: the revoke endpoint does not take OAuth2 tokens."""
    app_id = create_application(devs)["applicationId"]
    keys = devs.post(
        f"{APPS}/{app_id}/generate-keys",
        json={"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]},
    ).json()
    access_token = keys["token"]["accessToken"]
    assert revoke(devs, app_id, access_token).status_code == 400


Pair = tuple[TestClient, FakeAdapter]


def test_revocation_and_application_delete_reach_the_gateways(adapter_client: Pair) -> None:
    client, adapter = adapter_client
    api_id = published_api(client, securityScheme=["api_key"])
    app_id = create_application(client)["applicationId"]
    assert subscribe(client, app_id, api_id).status_code == 201
    first = generate(client, app_id, validityPeriod=600).json()["apikey"]
    second = generate(client, app_id, "SANDBOX", validityPeriod=-1).json()["apikey"]
    expired_jti = "0" * 36
    factory = client.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        [row] = session.scalars(select(ApiKey).where(ApiKey.key_type == "SANDBOX")).all()
        session.add(
            ApiKey(
                jti=expired_jti,
                application_id=row.application_id,
                key_type="PRODUCTION",
                expires_at=int(time.time()) - 5,
                revoked=False,
            )
        )
        session.commit()
    first_jti = jwt.decode(first, options={"verify_signature": False})["jti"]
    second_jti = jwt.decode(second, options={"verify_signature": False})["jti"]
    wait_until(lambda: bool(adapter.subscription_data))
    assert "api_key" in [m.token_kind for m in adapter.latest().key_managers]
    assert revoke(client, app_id, first).status_code == 200
    wait_until(lambda: [t.jti for t in adapter.latest().revoked_tokens] == [first_jti])
    assert client.delete(f"{APPS}/{app_id}").status_code == 200
    wait_until(lambda: not adapter.latest().applications)
    listed = {(t.jti, t.expires_at) for t in adapter.latest().revoked_tokens}
    assert (second_jti, apikeys.FOREVER) in listed
    assert {jti for jti, _ in listed} == {first_jti, second_jti}  # the expired one is left out
    assert rows(client, ApiKey) == []


def test_api_key_issuer_can_be_configured(settings: ControlPlaneSettings) -> None:
    settings = settings.model_copy(update={"cp_api_key_issuer": "https://keys.example"})
    with TestClient(create_app(settings)) as client:
        client.auth = AUTH
        app_id = create_application(client)["applicationId"]
        apikey = generate(client, app_id).json()["apikey"]
        assert jwt.decode(apikey, options={"verify_signature": False})["iss"] == (
            "https://keys.example"
        )
        assert revoke(client, app_id, apikey).status_code == 200


def test_pure_rules() -> None:
    assert apikeys.api_key_issuer("https://a/oauth2/token/") == "https://a/oauth2/token/apikey"
    assert apikeys.lifetime(None, 60) == 60  # the default never exceeds the maximum
    assert apikeys.lifetime(-1, 60) is None
    assert (apikeys.revoked_until(None), apikeys.revoked_until(1234)) == (apikeys.FOREVER, 1234)
    assert apikeys.permitted_ips(" 10.1.2.3/8 , 10.0.0.0/8,  ") == "10.0.0.0/8"
    assert apikeys.permitted_referrers("a.com/*,a.com/*") == "a.com/*"
    assert apikeys.restrictions({"permittedIP": ["1.2.3.4", "::1"]}).permitted_ip == ("1.2.3.4,::1")
