"""The safe-default check: no listening beyond loopback with the built-in admin:admin user."""

from __future__ import annotations

import pytest

from wsgate_common.safety import default_user_problem, is_loopback
from wsgate_common.settings import CommonSettings, parse_users

BUILT_IN = {"admin": "admin"}


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.5.6.7", "localhost", "LOCALHOST", "::1", "[::1]", "api.localhost"]
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "10.0.0.5", "192.168.1.1", "example.com", "localhost.evil.com"]
)
def test_everything_else_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def check(host: str, users: dict[str, str], insecure_dev: bool = False) -> str | None:
    return default_user_problem(
        "control-plane", host, users, "WSGATE_CP_USERS", "WSGATE_CP_HOST", insecure_dev
    )


def test_built_in_user_on_every_interface_is_refused_in_one_line_naming_the_setting() -> None:
    problem = check("0.0.0.0", BUILT_IN)
    assert problem is not None
    assert "\n" not in problem
    assert problem.startswith("wsgate control-plane: refusing to listen on 0.0.0.0")
    assert "WSGATE_CP_USERS" in problem and "WSGATE_CP_HOST" in problem
    assert "--insecure-dev" in problem and "WSGATE_INSECURE_DEV=true" in problem
    assert check("", BUILT_IN) is not None
    assert check("10.1.2.3", {"bob": "pw", "admin": "admin"}) is not None


def test_loopback_own_users_or_the_override_let_it_start() -> None:
    assert check("127.0.0.1", BUILT_IN) is None
    assert check("localhost", BUILT_IN) is None
    assert check("0.0.0.0", {"admin": "s3cret"}) is None
    assert check("0.0.0.0", {"alice": "admin"}) is None
    assert check("0.0.0.0", {}) is None  # nobody can log in: nothing to guess
    assert check("0.0.0.0", BUILT_IN, insecure_dev=True) is None


def test_the_override_is_a_common_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSGATE_INSECURE_DEV", raising=False)
    assert CommonSettings().insecure_dev is False
    monkeypatch.setenv("WSGATE_INSECURE_DEV", "true")
    assert CommonSettings().insecure_dev is True


@pytest.mark.parametrize(
    ("module", "argv", "env"),
    [
        ("control_plane.main", ["--host", "0.0.0.0"], {}),
        ("adapter.main", ["--host", "0.0.0.0"], {}),
        ("enforcer.main", ["--host", "0.0.0.0"], {}),
        ("control_plane.main", [], {"WSGATE_CP_HOST": "192.0.2.1"}),
        ("adapter.main", [], {"WSGATE_ADAPTER_HOST": "::"}),
        ("enforcer.main", [], {"WSGATE_ENFORCER_HOST": "0.0.0.0"}),
    ],
)
def test_each_component_refuses_before_binding(
    module: str,
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """main() returns 2 with the one-line message (nothing is bound: the address is not even
    one of this machine's in some cases)."""
    import importlib

    monkeypatch.delenv("WSGATE_INSECURE_DEV", raising=False)
    for name in ("WSGATE_CP_USERS", "WSGATE_ADAPTER_USERS", "WSGATE_ENFORCER_USERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    main = importlib.import_module(module).main
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    component = module.split(".")[0].replace("_", "-")
    assert err.startswith(f"wsgate {component}: refusing to listen on")
    setting = {"control-plane": "CP", "adapter": "ADAPTER", "enforcer": "ENFORCER"}[component]
    assert f"WSGATE_{setting}_USERS" in err


def test_parse_users_still_reads_the_built_in_default() -> None:
    assert parse_users("admin:admin") == BUILT_IN


def test_the_enforcer_only_minds_its_users_while_test_keys_are_on() -> None:
    from enforcer.main import startup_problem
    from enforcer.settings import EnforcerSettings

    exposed = EnforcerSettings(enforcer_host="0.0.0.0", enforcer_users="admin:admin")
    problem = startup_problem(exposed)
    assert problem is not None and "WSGATE_ENFORCER_USERS" in problem
    assert startup_problem(exposed.model_copy(update={"testkey_enabled": False})) is None
    assert startup_problem(exposed.model_copy(update={"insecure_dev": True})) is None
    with pytest.raises(ValueError):
        startup_problem(exposed.model_copy(update={"enforcer_users": "no-colon"}))
