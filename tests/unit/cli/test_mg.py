"""`wsgate mg`: request building, output formatting, config storage, error lines."""

from __future__ import annotations

import base64
import io
import json
import stat
import time
import zipfile
from pathlib import Path

import pytest

from wsgate import adapter_client as ac
from wsgate import mg
from wsgate.cliconfig import CliError, Config, Store, Token, jwt_expiry, tls_verify, trusted_cas

REPO = Path(__file__).resolve().parents[3]
ADAPTER = "https://localhost:9843"


def _jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSGATE_CLI_HOME", str(tmp_path / "cli"))
    monkeypatch.setenv("WSGATE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "cli"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = mg.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_urls_are_built_under_the_adapter_base_path() -> None:
    assert ac.api_url(ADAPTER, "/apis") == f"{ADAPTER}/api/mgw/adapter/0.1/apis"
    assert ac.api_url(ADAPTER + "/", "/apis") == f"{ADAPTER}/api/mgw/adapter/0.1/apis"
    assert ac.api_url(ADAPTER + "/api/mgw/adapter/0.1", "/x").endswith("/0.1/x")


def test_token_request_posts_json_credentials() -> None:
    req = ac.token_request(ADAPTER, "admin", "pw")
    assert (req.method, req.url) == ("POST", f"{ADAPTER}/api/mgw/adapter/0.1/oauth2/token")
    assert req.json_body == {"username": "admin", "password": "pw"}
    assert "Authorization" not in req.headers


def test_deploy_request_is_multipart_with_bearer_and_optional_override() -> None:
    req = ac.deploy_request(ADAPTER, "tok", "p.zip", b"PK", override=False)
    assert req.params == {}
    assert req.headers == {"Authorization": "Bearer tok"}
    assert req.files == {"file": ("p.zip", b"PK", "application/zip")}
    assert ac.deploy_request(ADAPTER, "tok", "p.zip", b"PK", True).params == {"override": "true"}


def test_undeploy_and_list_requests_carry_their_query_parameters() -> None:
    req = ac.undeploy_request(ADAPTER, "t", "Echo", "1.0.0", None)
    assert req.method == "DELETE"
    assert req.params == {"apiName": "Echo", "version": "1.0.0"}
    assert ac.undeploy_request(ADAPTER, "t", "E", "1", "example.com").params["vhost"] == (
        "example.com"
    )
    assert ac.list_request(ADAPTER, "t", None, None).params == {}
    assert ac.list_request(ADAPTER, "t", "name:E", 5).params == {"query": "name:E", "limit": "5"}


def test_error_bodies_become_one_line() -> None:
    body = json.dumps({"code": 409, "message": "API exists", "description": "use --override"})
    assert ac.error_from_response(409, body).line() == "Error: API exists (use --override)"
    assert ac.error_from_response(409, body).status == 409
    assert ac.error_from_response(502, "<html>bad gateway</html>\n").line() == (
        "Error: adapter answered HTTP 502 (<html>bad gateway</html>)"
    )
    assert ac.error_from_response(500, "").line() == (
        "Error: adapter answered HTTP 500 (no error body)"
    )
    assert CliError("just this").line() == "Error: just this"


def test_apis_table_matches_apictl_columns() -> None:
    listing = {
        "total": 2,
        "count": 2,
        "list": [
            {
                "apiName": "EchoWebSocket",
                "version": "1.0.0",
                "apiType": "WS",
                "context": "/echowebsocket/1.0.0",
                "gateway-envs": ["Default"],
                "vhost": "localhost",
                "source": "adapter",
            },
            {"apiName": "Chat", "version": "2", "apiType": "WS", "context": "/chat/2"},
            {
                "apiName": "Prices",
                "version": "1",
                "apiType": "WS",
                "context": "/prices/1",
                "gateway-envs": ["Default"],
                "source": "control-plane",
            },
        ],
    }
    lines = ac.apis_table(listing).splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "TYPE", "CONTEXT", "GATEWAY_ENVS", "OWNER"]
    assert lines[1].split() == [
        "EchoWebSocket",
        "1.0.0",
        "WS",
        "/echowebsocket/1.0.0",
        "Default",
        "cli",
    ]
    assert lines[1].index("1.0.0") == lines[0].index("VERSION")
    assert lines[2].split() == ["Chat", "2", "WS", "/chat/2"]
    assert lines[3].split()[-1] == "control-plane"
    assert lines[3].index("control-plane") == lines[0].index("OWNER")
    assert len(ac.apis_table(listing, limit=1).splitlines()) == 2


def test_project_folder_is_zipped_with_its_top_folder() -> None:
    name, payload = ac.zip_project(REPO / "examples" / "EchoWebSocket-1.0.0")
    assert name == "EchoWebSocket-1.0.0.zip"
    names = zipfile.ZipFile(io.BytesIO(payload)).namelist()
    assert "EchoWebSocket-1.0.0/api.yaml" in names
    assert "EchoWebSocket-1.0.0/Definitions/asyncapi.yaml" in names
    assert all(n.startswith("EchoWebSocket-1.0.0/") for n in names)


def test_a_zip_file_is_sent_as_is_and_other_paths_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    archive.write_bytes(b"PK\x03\x04whatever")
    assert ac.zip_project(archive) == ("p.zip", b"PK\x03\x04whatever")
    with pytest.raises(CliError, match="does not exist"):
        ac.zip_project(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CliError):
        ac.zip_project(tmp_path / "notes.txt")


def test_config_round_trips_with_mode_0600(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    config = Config({"dev": ADAPTER}, {"dev": Token("abc", "admin", 12.5)})
    store.save(config)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == config


def test_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.path.write_text("environments: [unclosed")
    with pytest.raises(CliError, match="cannot read"):
        store.load()


def test_jwt_expiry_is_read_without_verification() -> None:
    assert jwt_expiry(_jwt({"exp": 1700000000})) == 1700000000.0
    assert jwt_expiry(_jwt({"sub": "x"})) is None
    assert jwt_expiry("opaque-token") is None
    assert jwt_expiry("a.!!!.c") is None
    assert Token(_jwt({"exp": time.time() - 1}), "u", 0).expired()
    assert not Token(_jwt({"exp": time.time() + 3600}), "u", 0).expired()
    assert not Token("opaque", "u", 0).expired()


def test_trust_includes_cli_certs_and_the_local_ca(tmp_path: Path) -> None:
    from wsgate_common.pki import ensure_pki

    pki = ensure_pki(tmp_path / "data" / "pki")
    store = Store(tmp_path / "home")
    (store.home / "certs").mkdir(parents=True)
    (store.home / "certs" / "gw.pem").write_bytes(pki.ca_cert.read_bytes())
    cas = trusted_cas(store, tmp_path / "data")
    assert cas == [store.home / "certs" / "gw.pem", pki.ca_cert]
    assert tls_verify(True, cas) is False
    assert not isinstance(tls_verify(False, cas), bool)
    (store.home / "certs" / "broken.pem").write_text("not a cert")
    with pytest.raises(CliError, match="cannot load certificate"):
        tls_verify(False, trusted_cas(store, tmp_path / "data"))


def test_env_commands_add_list_and_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["add", "env", "dev", "--adapter", ADAPTER], capsys)[0] == 0
    assert run(["add", "env", "dev", "--adapter", ADAPTER], capsys)[0] == 0  # same URL: fine
    code, _, err = run(["add", "env", "dev", "--adapter", "https://other:1"], capsys)
    assert code == 1
    assert err.startswith("Error: environment 'dev' already exists")
    assert "--force" in err
    code, out, _ = run(["get", "envs"], capsys)
    assert out.split() == ["NAME", "ADAPTER", "dev", ADAPTER]
    code, out, _ = run(["get", "envs", "--format", "json"], capsys)
    assert json.loads(out) == [{"name": "dev", "adapter": ADAPTER}]
    assert run(["remove", "env", "dev"], capsys)[0] == 0
    code, _, err = run(["remove", "env", "dev"], capsys)
    assert (code, err.strip()) == (
        1,
        "Error: environment 'dev' not found (nothing to remove; environments: none)",
    )


def test_bad_adapter_url_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["add", "env", "dev", "--adapter", "localhost:9843"], capsys)
    assert code == 1
    assert "invalid adapter URL" in err


def test_commands_without_login_say_how_to_log_in(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["add", "env", "dev", "--adapter", ADAPTER], capsys)
    project = str(REPO / "examples" / "EchoWebSocket-1.0.0")
    code, _, err = run(["deploy", "api", "-f", project, "-e", "dev", "-k"], capsys)
    assert code == 1
    assert err.strip() == (
        "Error: not logged in to environment 'dev' (run `wsgate mg login dev -u admin -k` first)"
    )


def test_an_expired_login_says_to_log_in_again(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(home)
    store.save(Config({"dev": ADAPTER}, {"dev": Token(_jwt({"exp": 1}), "admin", 0)}))
    code, _, err = run(["get", "apis", "-e", "dev", "-k"], capsys)
    assert code == 1
    assert "expired" in err
    assert "wsgate mg login dev" in err


def test_logout_forgets_the_token(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(home)
    store.save(Config({"dev": ADAPTER}, {"dev": Token("t", "admin", 0)}))
    assert run(["logout", "dev"], capsys)[0] == 0
    assert store.load().tokens == {}


def test_login_without_password_on_a_pipe_is_an_error(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(["add", "env", "dev", "--adapter", ADAPTER], capsys)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(["login", "dev", "-u", "admin", "-k"], capsys)
    assert code == 1
    assert "no password given" in err


def test_unreachable_adapter_is_one_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.procs import free_port

    run(["add", "env", "dev", "--adapter", f"https://127.0.0.1:{free_port()}"], capsys)
    code, _, err = run(["login", "dev", "-u", "admin", "-p", "admin", "-k"], capsys)
    assert code == 1
    assert err.startswith("Error: cannot connect to https://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        mg.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in ("add", "remove", "get", "login", "logout", "deploy", "undeploy"):
        assert verb in out


def test_status_text_and_a_warning_per_client_refusing_the_current_version() -> None:
    route = "type.googleapis.com/wsgate.config.v1.Route"
    status = {
        "bootId": "b1",
        "labels": {
            "Default": {
                route: {
                    "version": "3.e",
                    "clients": [
                        {
                            "peer": "ipv4:1",
                            "acked": "2.e",
                            "lastNack": {"version": "3.e", "error": "no"},
                        }
                    ],
                }
            }
        },
        "nackedCurrent": [
            {
                "label": "Default",
                "type": route,
                "version": "3.e",
                "peer": "ipv4:1",
                "acked": "2.e",
                "error": "no",
            }
        ],
    }
    [warning] = ac.nack_warnings(status)
    assert warning == (
        "Warning: a client of label Default (ipv4:1) rejected Route version 3.e and keeps "
        "version 2.e: no"
    )
    text = ac.status_text(status)
    assert "Default   Route   3.e" in text and "3.e: no" in text and text.endswith(warning)
    assert ac.nack_warnings({"nackedCurrent": []}) == []
