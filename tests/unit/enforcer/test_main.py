from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.main import main, parse_args, serve
from enforcer.settings import EnforcerSettings


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_ENFORCER_GRPC_PORT", "1111")
    monkeypatch.setenv("WSGATE_LABEL", "EnvLabel")
    monkeypatch.setenv("WSGATE_ENFORCER_ISSUERS_FILE", "/etc/issuers.yaml")
    args = parse_args(["--grpc-port", "2222", "--xds-address", "adapter:1"])
    settings = EnforcerSettings(**{k: v for k, v in vars(args).items() if v is not None})
    assert settings.enforcer_grpc_port == 2222
    assert settings.label == "EnvLabel"
    assert settings.xds_address == "adapter:1"
    assert settings.enforcer_issuers_file == Path("/etc/issuers.yaml")
    assert settings.enforcer_http_port == 8082


def test_bad_environment_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WSGATE_ENFORCER_HTTP_PORT", "eighty")
    assert main([]) == 2
    assert "enforcer_http_port" in capsys.readouterr().err


def test_bad_flag_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--grpc-port", "many"])
    assert exit_.value.code == 1  # one Error: line, status 1 (wsgate_common.args)


async def test_bad_issuers_file_stops_start(tmp_path: Path) -> None:
    (tmp_path / "issuers.yaml").write_text("issuers: [{name: x, issuer: y}]")
    settings = EnforcerSettings(data_dir=tmp_path, enforcer_issuers_file=tmp_path / "issuers.yaml")
    assert await serve(settings) == 1


async def test_bad_users_stop_start(tmp_path: Path) -> None:
    settings = EnforcerSettings(data_dir=tmp_path, enforcer_users="nocolon")
    assert await serve(settings) == 1


def test_browser_and_test_key_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = EnforcerSettings()
    assert "http://localhost:*" in defaults.allowed_origins
    assert "https://127.0.0.1:*" in defaults.allowed_origins
    assert "*" not in defaults.allowed_origins
    assert defaults.testkey_enabled and not defaults.testkey_control_plane_apis
    assert defaults.testkey_max_validity == 3600
    monkeypatch.setenv("WSGATE_ENFORCER_ALLOWED_ORIGINS", " https://a.example , https://b.example")
    monkeypatch.setenv("WSGATE_TESTKEY_ENABLED", "false")
    monkeypatch.setenv("WSGATE_TESTKEY_MAX_VALIDITY", "600")
    monkeypatch.setenv("WSGATE_TESTKEY_CONTROL_PLANE_APIS", "true")
    settings = EnforcerSettings()
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert not settings.testkey_enabled and settings.testkey_control_plane_apis
    assert settings.testkey_max_validity == 600
