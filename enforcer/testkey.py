"""Test keys: RS256 JWTs the enforcer signs itself so an API can be tried without a key manager.

Claims: ``iss`` :data:`TESTKEY_ISSUER`, ``sub`` the Basic-auth user, ``aud``
:data:`TESTKEY_AUDIENCE` (the audience WSO2 gateways use for their own tokens), ``scope``
(space-separated, may be absent), ``keytype``, ``iat``, ``exp``, ``jti``. The signing key is
generated once and kept in ``<data_dir>/enforcer/testkey.pem`` (mode 0600); its ``kid`` is the
RFC 7638 thumbprint of the public key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enforcer.denials import Denial, ErrorCode
from enforcer.issuers import Issuer

TESTKEY_ISSUER = "https://localhost:9095/testkey"
TESTKEY_AUDIENCE = "http://org.wso2.apimgt/gateway"
DEFAULT_VALIDITY = 3600
MAX_VALIDITY = 7 * 24 * 3600
KEY_BITS = 2048


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a stable kid for the key."""
    canonical = json.dumps(public_jwk(public_key), separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The test-key signing key at ``path``, generated on first use (locked against races)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{path} does not hold an RSA private key")
            return key
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        tmp = path.with_name(path.name + ".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tmp.replace(path)
        return key


@dataclass(frozen=True)
class TestKeySigner:
    """Signs test keys and publishes the matching verification key."""

    __test__ = False  # not a pytest test class, despite the name

    private_key: rsa.RSAPrivateKey
    issuer: str = TESTKEY_ISSUER
    audience: str = TESTKEY_AUDIENCE

    @cached_property
    def kid(self) -> str:
        return thumbprint(self.private_key.public_key())

    def issue(
        self,
        subject: str,
        scopes: list[str],
        now: int,
        validity: int = DEFAULT_VALIDITY,
        key_type: str = "PRODUCTION",
    ) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "keytype": key_type,
            "iat": now,
            "exp": now + validity,
            "jti": str(uuid.uuid4()),
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        return jwt.encode(
            claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"}
        )

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        jwk = {**public_jwk(self.private_key.public_key()), "kid": self.kid}
        return {"keys": [{**jwk, "use": "sig", "alg": "RS256"}]}

    def as_issuer(self) -> Issuer:
        """The built-in trusted issuer for these keys (no subscription checks)."""
        return Issuer(
            name="testkey",
            issuer=self.issuer,
            algorithms=("RS256",),
            keys={self.kid: self.private_key.public_key()},
            audience=(self.audience,),
            check_subscriptions=False,
            test_key=True,
        )


def basic_auth_user(authorization: str | None, users: Mapping[str, str]) -> str:
    """The user a ``Basic`` Authorization header proves, compared in constant time.

    Raises:
        Denial: 401 900902 when absent or not Basic, 401 900901 when wrong.
    """
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise Denial(
            401,
            ErrorCode.MISSING_CREDENTIALS,
            "Missing Credentials",
            "Use an 'Authorization: Basic <base64(user:password)>' header",
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    name, sep, password = decoded.partition(":")
    expected = users.get(name)
    ok = (
        bool(sep)
        and expected is not None
        and hmac.compare_digest(password.encode(), expected.encode())
    )
    if not ok:
        raise Denial(
            401,
            ErrorCode.INVALID_CREDENTIALS,
            "Invalid Credentials",
            "Wrong user name or password",
        )
    return name


def parse_request(
    form: Mapping[str, str], max_validity: int = DEFAULT_VALIDITY
) -> tuple[list[str], int, str]:
    """Scopes, validity and key type from the form fields ``scope``, ``validity_period`` and
    ``key_type``; the validity is at most ``max_validity`` seconds (and its default).

    Raises:
        Denial: 400 when a field is malformed.
    """
    scopes = form.get("scope", "").split()
    raw_validity = form.get("validity_period", "").strip()
    validity = min(DEFAULT_VALIDITY, max_validity)
    if raw_validity:
        digits = raw_validity.isascii() and raw_validity.isdigit()
        if not digits or not 0 < int(raw_validity) <= max_validity:
            raise Denial(
                400,
                400,
                "Bad Request",
                f"validity_period must be whole seconds between 1 and {max_validity}",
            )
        validity = int(raw_validity)
    key_type = form.get("key_type", "PRODUCTION").strip().upper() or "PRODUCTION"
    if key_type not in ("PRODUCTION", "SANDBOX"):
        raise Denial(400, 400, "Bad Request", "key_type must be PRODUCTION or SANDBOX")
    return scopes, validity, key_type
