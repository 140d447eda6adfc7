"""Keys and token builders shared by the enforcer unit tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from enforcer.issuers import Issuer, IssuerRegistry
from enforcer.testkey import TestKeySigner

NOW = 1_800_000_000


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def signer(rsa_key: rsa.RSAPrivateKey) -> TestKeySigner:
    return TestKeySigner(rsa_key)


@pytest.fixture(scope="session")
def registry(signer: TestKeySigner, ec_key: ec.EllipticCurvePrivateKey) -> IssuerRegistry:
    km = Issuer(
        name="km",
        issuer="https://km.example/oauth2/token",
        algorithms=("ES256",),
        keys={"km-1": ec_key.public_key()},
    )
    return IssuerRegistry([signer.as_issuer(), km])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for headers PyJWT refuses to produce."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "https://localhost:9095/testkey",
        "sub": "alice",
        "aud": "http://org.wso2.apimgt/gateway",
        "iat": NOW,
        "exp": NOW + 3600,
        "jti": "jti-1",
        "scope": "read write",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rs256(key: rsa.RSAPrivateKey, payload: dict[str, Any], kid: str | None) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm="RS256", headers=headers)
