"""Signed, stateless console sessions: the cookie holds the session itself, HMAC-signed.

Pure except for ``load_or_create_secret`` (the secret lives in the data directory, next to the
token signing key, so sessions survive a restart and every replica sharing the directory
accepts them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

SECRET_FILE = "session-secret"
COOKIE = "wsgate_console"
#: Seconds a session lives after it was last written (sign-in, flash, ...).
MAX_AGE = 8 * 3600


def load_or_create_secret(directory: Path) -> bytes:
    """32 random bytes kept in ``directory/session-secret`` (mode 0600), made when missing.

    Raises:
        ValueError: the file exists but holds fewer than 32 bytes.
    """
    path = directory / SECRET_FILE
    if path.exists():
        secret = path.read_bytes()
        if len(secret) < 32:
            raise ValueError(f"{path} holds fewer than 32 bytes; delete it to make a new one")
        return secret
    directory.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    os.replace(temporary, path)
    return secret


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """``dumps``/``loads`` a JSON object as ``payload.signature`` with an expiry inside."""

    def __init__(self, secret: bytes, max_age: int = MAX_AGE) -> None:
        self._secret = secret
        self.max_age = max_age

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def dumps(self, data: dict[str, Any], now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.max_age)
        payload = _b64(json.dumps({"d": data, "e": expires}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str, now: float | None = None) -> dict[str, Any] | None:
        """The data, or None when the value is malformed, forged or expired."""
        payload, sep, signature = value.partition(".")
        if not sep or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            decoded = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(decoded, dict) or not isinstance(decoded.get("d"), dict):
            return None
        expires = decoded.get("e")
        if not isinstance(expires, int) or expires < (time.time() if now is None else now):
            return None
        data: dict[str, Any] = decoded["d"]
        return data


class Session:
    """One request's session: who is signed in, the CSRF token and one-shot flash messages.

    ``modified`` tells the middleware to write the cookie back.
    """

    def __init__(self, data: dict[str, Any] | None) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.modified = data is None
        if not isinstance(self.data.get("csrf"), str):
            self.data["csrf"] = secrets.token_urlsafe(32)
            self.modified = True

    @property
    def user(self) -> str | None:
        user = self.data.get("user")
        return user if isinstance(user, str) else None

    @property
    def csrf(self) -> str:
        token: str = self.data["csrf"]
        return token

    @property
    def sid(self) -> str | None:
        sid = self.data.get("sid")
        return sid if isinstance(sid, str) else None

    def sign_in(self, user: str) -> None:
        """A new session id and CSRF token with every sign-in, so a token seen before it is
        worthless."""
        self.data = {
            "user": user,
            "csrf": secrets.token_urlsafe(32),
            "sid": secrets.token_urlsafe(16),
        }
        self.modified = True

    def sign_out(self) -> str | None:
        """Forget the user; returns the session id that must no longer be accepted."""
        sid = self.sid
        self.data = {"csrf": secrets.token_urlsafe(32)}
        self.modified = True
        return sid

    def flash(self, message: str, kind: str = "info") -> None:
        """A message shown once, on the next page rendered (after a redirect)."""
        self.data.setdefault("flash", []).append([kind, message])
        self.modified = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        found = self.data.pop("flash", None)
        if not found:
            return []
        self.modified = True
        return [(str(kind), str(text)) for kind, text in found]

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf)


class SignedOut:
    """Session ids signed out before their cookie expires, so a copy of a signed-out cookie is
    refused. In memory: a restart forgets them (sessions then still end at their expiry)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def add(self, sid: str, until: float) -> None:
        self._until[sid] = until

    def __contains__(self, sid: object) -> bool:
        return isinstance(sid, str) and sid in self._until

    def prune(self, now: float) -> None:
        for sid, until in list(self._until.items()):
            if until < now:
                self._until.pop(sid, None)
