"""The adapter's REST credentials: Basic users and its own pinned-algorithm tokens."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import jwt
import pytest

from adapter.auth import ALGORITHM, Authenticator, AuthError, load_secret

SECRET = b"s" * 64


def _auth() -> Authenticator:
    return Authenticator({"admin": "admin", "ops": "pw"}, SECRET)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic() -> None:
    auth = _auth()
    assert auth.authenticate(_basic("ops", "pw")) == "ops"
    for bad in (_basic("ops", "x"), _basic("nobody", "pw"), "Basic !!!", "Basic " + "b25seQ=="):
        with pytest.raises(AuthError) as info:
            auth.authenticate(bad)
        assert not info.value.missing


@pytest.mark.parametrize("header", [None, "", "Digest abc", "Bearer "])
def test_missing(header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        _auth().authenticate(header)
    assert info.value.missing


def test_token_round_trip_and_expiry() -> None:
    auth = _auth()
    token = auth.issue("admin")
    assert auth.authenticate(f"Bearer {token}") == "admin"
    assert jwt.get_unverified_header(token)["alg"] == ALGORITHM
    old = auth.issue("admin", now=time.time() - 7200)
    with pytest.raises(AuthError, match="expired"):
        auth.authenticate(f"Bearer {old}")


def test_tokens_signed_otherwise_are_refused() -> None:
    auth = _auth()
    claims = jwt.decode(auth.issue("admin"), options={"verify_signature": False})
    forged = jwt.encode(claims, b"x" * 32, algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")
    other_alg = jwt.encode(claims, SECRET, algorithm="HS512")
    for token in (forged, unsigned, other_alg, "a.b.c"):
        with pytest.raises(AuthError):
            auth.authenticate(f"Bearer {token}")


def test_token_of_removed_user_is_refused() -> None:
    token = _auth().issue("ops")
    with pytest.raises(AuthError):
        Authenticator({"admin": "admin"}, SECRET).authenticate(f"Bearer {token}")


def test_secret_is_created_once_and_private(tmp_path: Path) -> None:
    first = load_secret(tmp_path / "adapter")
    assert len(first) == 32
    assert load_secret(tmp_path / "adapter") == first
    assert (tmp_path / "adapter" / "token-secret").stat().st_mode & 0o077 == 0
