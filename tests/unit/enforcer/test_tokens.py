from __future__ import annotations

import hashlib
import hmac

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from enforcer.denials import AuthError, UnknownKeyError
from enforcer.issuers import Issuer, IssuerRegistry
from enforcer.testkey import TestKeySigner
from enforcer.tokens import validate

from .conftest import NOW, b64, claims, rs256, unsigned


def test_valid_token_gives_claims(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(), signer.kid)
    result = validate(token, registry, NOW)
    assert result.subject == "alice"
    assert result.scopes == ("read", "write")
    assert result.key_type == "PRODUCTION"
    assert result.token_id == "jti-1"
    assert result.expires_at == NOW + 3600
    assert result.issuer_name == "testkey"
    assert result.check_subscriptions is False
    assert result.application is None


def test_expired_token(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(exp=NOW - 31), signer.kid)
    with pytest.raises(AuthError) as err:
        validate(token, registry, NOW)
    assert err.value.http_status == 401
    assert err.value.code == 900901
    assert err.value.description == "Access token expired"


def test_expiry_has_no_leeway(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    just_expired = rs256(signer.private_key, claims(exp=NOW - 1), signer.kid)
    with pytest.raises(AuthError, match="Access token expired"):
        validate(just_expired, registry, NOW)
    still_valid = rs256(signer.private_key, claims(exp=NOW + 1), signer.kid)
    assert validate(still_valid, registry, NOW).expires_at == NOW + 1


def test_unknown_issuer(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(iss="https://evil.example"), signer.kid)
    with pytest.raises(AuthError, match="Unknown token issuer"):
        validate(token, registry, NOW)


def test_bad_signature(
    signer: TestKeySigner, other_rsa_key: rsa.RSAPrivateKey, registry: IssuerRegistry
) -> None:
    token = rs256(other_rsa_key, claims(), signer.kid)  # right kid, wrong key
    with pytest.raises(AuthError, match="Invalid token signature"):
        validate(token, registry, NOW)


def test_tampered_payload(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    head, _, sig = rs256(signer.private_key, claims(), signer.kid).split(".")
    forged = unsigned({}, claims(scope="admin")).split(".")[1]
    with pytest.raises(AuthError, match="signature"):
        validate(f"{head}.{forged}.{sig}", registry, NOW)


def test_alg_none_is_rejected(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": signer.kid}, claims())
    with pytest.raises(AuthError, match="not accepted"):
        validate(token, registry, NOW)


def test_hs256_with_public_key_as_secret_is_rejected(
    signer: TestKeySigner, registry: IssuerRegistry
) -> None:
    """Key confusion: an attacker signs with HMAC, using the published RSA key as the secret."""
    public_pem = signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head_body = unsigned({"alg": "HS256", "typ": "JWT", "kid": signer.kid}, claims())
    head_body = head_body.rsplit(".", 1)[0]
    mac = hmac.new(public_pem, head_body.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError):
        validate(f"{head_body}.{b64(mac)}", registry, NOW)


def test_hs256_is_rejected_even_when_header_claims_rs256(
    signer: TestKeySigner, registry: IssuerRegistry
) -> None:
    public_pem = signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head_body = unsigned({"alg": "RS256", "kid": signer.kid}, claims()).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, head_body.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError, match="signature"):
        validate(f"{head_body}.{b64(mac)}", registry, NOW)


def test_algorithm_not_pinned_for_issuer(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = jwt.encode(claims(), signer.private_key, algorithm="RS512", headers={"kid": signer.kid})
    with pytest.raises(AuthError, match="'RS512' is not accepted"):
        validate(token, registry, NOW)


def test_missing_exp(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(exp=None), signer.kid)
    with pytest.raises(AuthError, match="no 'exp' claim"):
        validate(token, registry, NOW)


def test_non_numeric_exp(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(exp="tomorrow"), signer.kid)
    with pytest.raises(AuthError, match="Malformed"):
        validate(token, registry, NOW)


def test_kid_mismatch(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(), "some-other-kid")
    with pytest.raises(UnknownKeyError) as err:
        validate(token, registry, NOW)
    assert err.value.issuer == "testkey"
    assert err.value.kid == "some-other-kid"
    assert err.value.code == 900901


def test_no_kid_uses_the_only_key(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(), None)
    assert validate(token, registry, NOW).subject == "alice"


def test_iat_far_in_the_future(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(iat=NOW + 600), signer.kid)
    with pytest.raises(AuthError, match="issued in the future"):
        validate(token, registry, NOW)


def test_nbf_in_the_future(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(nbf=NOW + 600), signer.kid)
    with pytest.raises(AuthError, match="not yet valid"):
        validate(token, registry, NOW)


def test_wrong_audience(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(aud="https://someone-else"), signer.kid)
    with pytest.raises(AuthError, match="audience"):
        validate(token, registry, NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "....", "Bearer x.y.z"])
def test_malformed(token: str, registry: IssuerRegistry) -> None:
    with pytest.raises(AuthError) as err:
        validate(token, registry, NOW)
    assert err.value.code == 900901


def test_no_iss(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(iss=None), signer.kid)
    with pytest.raises(AuthError, match="no 'iss'"):
        validate(token, registry, NOW)


def test_scope_list_keytype_and_application(
    ec_key: ec.EllipticCurvePrivateKey, registry: IssuerRegistry
) -> None:
    payload = claims(
        iss="https://km.example/oauth2/token",
        aud=None,
        scope=["read", "chat:write"],
        keytype="sandbox",
        application={"id": 7, "uuid": "app-uuid", "name": "App", "tier": "Gold", "owner": "bob"},
    )
    token = jwt.encode(payload, ec_key, algorithm="ES256", headers={"kid": "km-1"})
    result = validate(token, registry, NOW)
    assert result.scopes == ("read", "chat:write")
    assert result.key_type == "SANDBOX"
    assert result.application is not None
    assert (result.application.id, result.application.name) == ("app-uuid", "App")
    assert (result.application.tier, result.application.owner) == ("Gold", "bob")
    assert result.check_subscriptions is True


def test_flat_application_claims(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(
        signer.private_key, claims(application_id="a1", application_name="Flat"), signer.kid
    )
    app = validate(token, registry, NOW).application
    assert app is not None and (app.id, app.name, app.tier) == ("a1", "Flat", "")


def test_unknown_keytype(signer: TestKeySigner, registry: IssuerRegistry) -> None:
    token = rs256(signer.private_key, claims(keytype="STAGING"), signer.kid)
    with pytest.raises(AuthError, match="keytype"):
        validate(token, registry, NOW)


def test_rsa_token_for_ec_issuer_is_rejected(
    rsa_key: rsa.RSAPrivateKey, registry: IssuerRegistry
) -> None:
    token = rs256(rsa_key, claims(iss="https://km.example/oauth2/token", aud=None), "km-1")
    with pytest.raises(AuthError, match="not accepted"):
        validate(token, registry, NOW)


def test_audience_pinned_issuer(ec_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = Issuer(
        name="aud",
        issuer="https://aud.example",
        algorithms=("ES256",),
        default_key=ec_key.public_key(),
        audience=("gw-a", "gw-b"),
    )
    registry = IssuerRegistry([issuer])
    ok = jwt.encode(claims(iss="https://aud.example", aud=["x", "gw-b"]), ec_key, "ES256")
    assert validate(ok, registry, NOW).subject == "alice"
    missing = jwt.encode(claims(iss="https://aud.example", aud=None), ec_key, "ES256")
    with pytest.raises(AuthError):
        validate(missing, registry, NOW)
