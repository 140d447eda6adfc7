"""Consumer secrets: random when issued, stored only as a salted scrypt hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: scrypt cost: ~16 MiB and a few tens of ms per check (the token endpoint does one per call).
_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


def new_consumer_key() -> str:
    return secrets.token_urlsafe(21)  # 28 characters, like WSO2's


def new_consumer_secret() -> str:
    return secrets.token_urlsafe(24)  # 32 characters


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64url), for the key_mappings table."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` hashes to ``stored``; False for a malformed ``stored`` too."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = _unb64(digest)
        given = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)
