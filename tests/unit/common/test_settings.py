"""Shared settings: env overrides and the users list format."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsgate_common.errors import error_json
from wsgate_common.settings import CommonSettings, parse_users


def test_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WSGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WSGATE_LOG_FORMAT", "json")
    settings = CommonSettings()
    assert settings.data_dir == tmp_path
    assert settings.pki_dir == tmp_path / "pki"
    assert settings.log_format == "json"


def test_parse_users() -> None:
    assert parse_users("admin:admin, bob:p:w") == {"admin": "admin", "bob": "p:w"}
    assert parse_users("") == {}


@pytest.mark.parametrize("spec", ["admin", ":pw", "a:b,nocolon"])
def test_parse_users_rejects_bad_entries(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_users(spec)


def test_error_json_shape() -> None:
    assert error_json(404, "Not Found", "x") == (
        b'{"code": 404, "message": "Not Found", "description": "x"}'
    )


@pytest.mark.parametrize(
    "spec", ["alice:pw;bob:pw2", "admin:", "bad name:pw", "a:b,c:secret;"], ids=str
)
def test_malformed_users_name_the_format_never_the_password(spec: str) -> None:
    """Issue 12 item 8: a ';'-separated list used to make one odd user silently."""
    with pytest.raises(ValueError) as info:
        parse_users(spec)
    assert "name:password,name:password" in str(info.value)
    assert "pw2" not in str(info.value) and "secret" not in str(info.value)
