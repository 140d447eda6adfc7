"""Who may call the adapter's REST API: HTTP Basic users, or Bearer tokens it issued itself.

Tokens are HS256 JWTs signed with a secret kept in ``<data_dir>/adapter/token-secret`` (so they
outlive a restart); the algorithm is pinned on both sides, never read from the token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

ALGORITHM = "HS256"
ISSUER = "wsgate-adapter"
AUDIENCE = "wsgate-adapter"
TOKEN_TTL_SECONDS = 3600


class AuthError(Exception):
    """Credentials are absent (``missing``) or wrong."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def load_secret(directory: Path) -> bytes:
    """The token signing secret, created on first use with owner-only permissions."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "token-secret"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # fails if another process created it first: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


@dataclass(frozen=True)
class Authenticator:
    users: dict[str, str]
    secret: bytes

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        # compare_digest on both branches so unknown users take as long as wrong passwords
        if expected is None:
            hmac.compare_digest(password.encode(), password.encode())
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    def issue(self, username: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": username,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": issued,
            "exp": issued + TOKEN_TTL_SECONDS,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify_token(self, token: str) -> str:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid access token: {exc}") from None
        subject = claims["sub"]
        if subject not in self.users:
            raise AuthError("the token's user no longer exists")
        return str(subject)

    def authenticate(self, authorization: str | None) -> str:
        """Check an Authorization header; returns the user name.

        Raises:
            AuthError: missing, malformed or wrong credentials.
        """
        if not authorization:
            raise AuthError("missing credentials", missing=True)
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip():
            return self.verify_token(value.strip())
        if scheme == "basic" and value.strip():
            username, password = decode_basic(value.strip())
            if self.check_password(username, password):
                return username
            raise AuthError("invalid user name or password")
        raise AuthError("unsupported authorization scheme", missing=True)


def decode_basic(value: str) -> tuple[str, str]:
    """Decode the part after ``Basic `` into (user, password).

    Raises:
        AuthError: not base64 of ``user:password``.
    """
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise AuthError("malformed Basic credentials")
    return username, password
