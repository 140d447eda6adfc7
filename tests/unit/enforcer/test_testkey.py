from __future__ import annotations

import base64
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from enforcer.denials import Denial
from enforcer.issuers import IssuerRegistry, keys_from_jwks
from enforcer.testkey import (
    TESTKEY_AUDIENCE,
    TESTKEY_ISSUER,
    TestKeySigner,
    basic_auth_user,
    load_or_create_key,
    parse_request,
    thumbprint,
)
from enforcer.tokens import validate

from .conftest import NOW

USERS = {"admin": "admin", "bob": "pw:with:colons"}


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


def test_issued_token_claims(signer: TestKeySigner) -> None:
    token = signer.issue("admin", ["read", "write"], NOW, validity=120)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == signer.kid == thumbprint(signer.private_key.public_key())
    payload = jwt.decode(
        token,
        signer.private_key.public_key(),
        algorithms=["RS256"],
        audience=TESTKEY_AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert payload["iss"] == TESTKEY_ISSUER
    assert payload["sub"] == "admin"
    assert payload["scope"] == "read write"
    assert payload["keytype"] == "PRODUCTION"
    assert (payload["iat"], payload["exp"]) == (NOW, NOW + 120)
    assert len(payload["jti"]) == 36


def test_no_scope_claim_when_none_asked(signer: TestKeySigner) -> None:
    token = signer.issue("admin", [], NOW)
    assert "scope" not in jwt.decode(token, options={"verify_signature": False})


def test_issued_token_validates_with_builtin_issuer(signer: TestKeySigner) -> None:
    token = signer.issue("admin", ["read"], NOW, key_type="SANDBOX")
    result = validate(token, IssuerRegistry([signer.as_issuer()]), NOW + 10)
    assert result.scopes == ("read",)
    assert result.key_type == "SANDBOX"
    assert not result.check_subscriptions
    with pytest.raises(Denial, match="expired"):
        validate(token, IssuerRegistry([signer.as_issuer()]), NOW + 3600 + 31)


def test_jwks_publishes_the_verification_key(signer: TestKeySigner) -> None:
    keys = keys_from_jwks(signer.jwks())
    assert list(keys) == [signer.kid]
    key = keys[signer.kid]
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.public_numbers() == signer.private_key.public_key().public_numbers()


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "enforcer" / "testkey.pem"
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_key(path)
    assert first.private_numbers() == second.private_numbers()


def test_basic_auth_accepts_known_user() -> None:
    assert basic_auth_user(basic("admin:admin"), USERS) == "admin"
    assert basic_auth_user(basic("bob:pw:with:colons"), USERS) == "bob"
    assert basic_auth_user("basic " + basic("admin:admin")[6:], USERS) == "admin"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, 900902),
        ("", 900902),
        ("Bearer abc", 900902),
        ("Basic", 900902),
        (basic("admin:wrong"), 900901),
        (basic("nobody:admin"), 900901),
        (basic("admin"), 900901),
        ("Basic !!!not-base64", 900901),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), 900901),
    ],
)
def test_basic_auth_failures(header: str | None, code: int) -> None:
    with pytest.raises(Denial) as err:
        basic_auth_user(header, USERS)
    assert err.value.http_status == 401
    assert err.value.code == code


def test_parse_request_defaults() -> None:
    assert parse_request({}) == ([], 3600, "PRODUCTION")
    assert parse_request({"scope": " a  b ", "validity_period": "60", "key_type": "sandbox"}) == (
        ["a", "b"],
        60,
        "SANDBOX",
    )


@pytest.mark.parametrize(
    "form",
    [
        {"validity_period": "0"},
        {"validity_period": "-5"},
        {"validity_period": "1e3"},
        {"validity_period": "²"},
        {"validity_period": "99999999999"},
        {"key_type": "STAGING"},
    ],
)
def test_parse_request_rejects(form: dict[str, str]) -> None:
    with pytest.raises(Denial) as err:
        parse_request(form)
    assert err.value.http_status == 400


def test_validity_is_capped_by_the_setting() -> None:
    assert parse_request({}, max_validity=600)[1] == 600  # the default shrinks to the cap
    assert parse_request({"validity_period": "600"}, max_validity=600)[1] == 600
    with pytest.raises(Denial) as err:
        parse_request({"validity_period": "601"}, max_validity=600)
    assert "between 1 and 600" in err.value.description
    with pytest.raises(Denial):
        parse_request({"validity_period": "3601"})  # one hour unless configured
    assert parse_request({"validity_period": "86400"}, max_validity=86400)[1] == 86400


def test_test_key_issuer_is_marked(signer: TestKeySigner) -> None:
    assert signer.as_issuer().test_key
