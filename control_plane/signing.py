"""The RSA key the OAuth2 service signs access tokens with, kept in the data directory."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_FILE = "token-signing-key.pem"
ALGORITHM = "RS256"


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def public_jwk(public: rsa.RSAPublicKey) -> dict[str, str]:
    """The RFC 7517 members of an RSA public key (no kid)."""
    numbers = public.public_numbers()
    return {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an RSA key: the required members, sorted, no
    whitespace."""
    canonical = json.dumps(
        {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SigningKey:
    private: rsa.RSAPrivateKey
    kid: str

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        jwk: dict[str, Any] = {
            **public_jwk(self.public),
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
        }
        return {"keys": [jwk]}


def from_private(private: rsa.RSAPrivateKey) -> SigningKey:
    return SigningKey(private, thumbprint(public_jwk(private.public_key())))


def load_or_create(directory: Path) -> SigningKey:
    """The key in ``directory/token-signing-key.pem``, made (2048-bit RSA, mode 0600) if
    missing.

    Raises:
        ValueError: the file exists but does not hold an RSA private key.
    """
    path = directory / KEY_FILE
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return from_private(loaded)
    directory.mkdir(parents=True, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(temporary, path)
    return from_private(private)
