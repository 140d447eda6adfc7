"""Issue 13 item 5: every `wsgate` / `wsgate mg` failure is one line with exit status 1, and
each message says what happened and what to do (checked against the exact wording)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.auth import Authenticator
from adapter.cache import SnapshotCache
from adapter.deployments import Registry
from adapter.rest import AdapterState, create_app
from adapter.xds import XdsStatus
from wsgate import adapter_client as ac
from wsgate import cli, mg
from wsgate.cliconfig import Config, Store, Token, trusted_cas
from wsgate_common.pki import ensure_pki
from wsgate_proto import definition_pb2

REPO = Path(__file__).resolve().parents[3]
ADAPTER = "https://localhost:9843"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSGATE_CLI_HOME", str(tmp_path / "cli"))
    monkeypatch.setenv("WSGATE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "cli"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = mg.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["deploy", "api", "-e", "dev"], "the following arguments are required: -f/--file"),
        (["deploy"], "the following arguments are required: WHAT"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["get", "apis", "-e", "dev", "--format", "xml"], "invalid choice: 'xml'"),
        (["get", "apis", "-e", "dev", "-l", "many"], "invalid int value: 'many'"),
    ],
)
def test_argument_errors_are_one_line_with_status_1(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 1
    line = one_error_line(err)
    assert expected in line
    assert line.endswith("--help` shows the usage)")
    assert out == ""


def test_the_process_exits_1_with_one_line_on_a_bad_argument(tmp_path: Path) -> None:
    """As a user runs it: `python -m wsgate mg deploy api` without -f (argparse: exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "wsgate", "mg", "deploy", "api", "-e", "dev"],
        capture_output=True,
        text=True,
        env={"WSGATE_CLI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1
    assert one_error_line(result.stderr) == (
        "Error: the following arguments are required: -f/--file "
        "(`wsgate mg deploy api --help` shows the usage)"
    )


def test_version_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"wsgate {cli.version()}"
    assert cli.version()[0].isdigit()
    assert cli.main(["-V"]) == 0
    capsys.readouterr()
    assert cli.main(["deploy"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("Error: unknown command 'deploy' (commands: control-plane, ")
    assert "`wsgate --help`" in line


def test_not_logged_in_prints_a_login_command_that_works(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(["add", "env", "dev", "--adapter", ADAPTER], capsys)
    _code, _, err = run(["get", "apis", "-e", "dev"], capsys)
    hint = one_error_line(err).split("(run `", 1)[1].split("`", 1)[0]
    assert hint == "wsgate mg login dev -u admin"
    # The printed command parses, and on a terminal only the password is asked for.
    args = mg.build_parser().parse_args(hint.split()[2:])
    assert (args.name, args.username, args.password) == ("dev", "admin", None)
    monkeypatch.setattr("sys.stdin", _Tty())
    monkeypatch.setattr("getpass.getpass", lambda prompt: "secret")
    assert mg._credentials(args) == ("admin", "secret")
    # Without a terminal, the error names every flag a script needs.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    _code, _, err = run(["login", "dev", "-k"], capsys)
    assert one_error_line(err) == (
        "Error: no username given "
        "(pass -u USERNAME with -p PASSWORD or --password-stdin, or run it on a terminal)"
    )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_deploy_paths_that_are_not_projects(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = Store(home)
    store.save(Config({"dev": ADAPTER}, {"dev": Token("t", "admin", 0)}))
    missing = tmp_path / "nonexistent"
    code, _, err = run(["deploy", "api", "-f", str(missing), "-e", "dev", "-k"], capsys)
    assert code == 1
    assert one_error_line(err) == (
        f"Error: {missing} does not exist (give a project folder or a .zip file with -f)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["deploy", "api", "-f", str(empty), "-e", "dev", "-k"], capsys)
    line = one_error_line(err)
    assert line.startswith(f"Error: {empty} is not an API project (the folder has no api.yaml")
    assert "empty.zip" not in line


def test_add_env_over_an_existing_one_asks_for_force(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(home)
    store.save(Config({"dev": ADAPTER}, {"dev": Token("t", "admin", 0)}))
    code, _, err = run(["add", "env", "dev", "--adapter", "https://other:9843"], capsys)
    assert one_error_line(err) == (
        f"Error: environment 'dev' already exists with adapter {ADAPTER} "
        "(to point it at https://other:9843 run again with --force)"
    )
    assert store.load().envs == {"dev": ADAPTER}
    code, out, _ = run(["add", "env", "dev", "--adapter", "https://other:9843", "--force"], capsys)
    assert code == 0
    assert out.strip() == f"Environment 'dev' now uses adapter https://other:9843 (was {ADAPTER})"
    assert store.load().envs == {"dev": "https://other:9843"}
    assert store.load().tokens == {}  # the old adapter's token means nothing to the new one


def test_remove_of_a_missing_env_does_not_suggest_adding_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["add", "env", "prod", "--adapter", ADAPTER], capsys)
    _code, _, err = run(["remove", "env", "dev"], capsys)
    line = one_error_line(err)
    assert line == "Error: environment 'dev' not found (nothing to remove; environments: prod)"
    assert "add" not in line


def test_logout_when_logged_out_says_so(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["add", "env", "dev", "--adapter", ADAPTER], capsys)
    code, out, _ = run(["logout", "dev"], capsys)
    assert code == 0
    assert out.strip() == "Not logged in to 'dev' environment: nothing to log out of"
    assert "Logged out" not in out


def test_tls_failure_names_the_real_certs_folder(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A TLS server whose CA the CLI does not trust: the hint prints the actual folder."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    pki = ensure_pki(tmp_path / "other-pki")
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        run(["add", "env", "dev", "--adapter", url], capsys)
        _code, _, err = run(["login", "dev", "-u", "admin", "-p", "admin"], capsys)
    finally:
        server.shutdown()
    line = one_error_line(err)
    assert "<WSGATE_CLI_HOME>" not in line
    assert line.endswith(f"(pass -k, or copy the gateway's CA certificate into {home}/certs/)")


def test_the_local_ca_is_trusted_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run` writes .wsgate/pki/ca.pem in the checkout; `mg add env` there records it, so
    later commands trust it from another directory."""
    checkout = tmp_path / "checkout"
    pki = ensure_pki(checkout / ".wsgate" / "pki")
    monkeypatch.setenv("WSGATE_CLI_HOME", str(tmp_path / "cli"))
    monkeypatch.delenv("WSGATE_DATA_DIR", raising=False)
    monkeypatch.chdir(checkout)
    assert run(["add", "env", "dev", "--adapter", ADAPTER], capsys)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = Store(tmp_path / "cli")
    assert store.load().cas == {"dev": str(pki.ca_cert.resolve())}
    assert pki.ca_cert.resolve() in trusted_cas(store, Path(".wsgate"), store.load().cas["dev"])
    # An explicit --ca that does not exist is refused.
    _code, _, err = run(["add", "env", "x", "--adapter", ADAPTER, "--ca", "nope.pem"], capsys)
    assert one_error_line(err).startswith("Error: CA certificate nope.pem does not exist")


def test_the_checkouts_local_ca_is_found_without_recording(tmp_path: Path) -> None:
    """The CLI running from the checkout finds <checkout>/.wsgate/pki/ca.pem from anywhere."""
    from wsgate import cliconfig

    pki = ensure_pki(tmp_path / ".wsgate" / "pki")
    saved = cliconfig.INSTALL_ROOT
    cliconfig.INSTALL_ROOT = tmp_path
    try:
        assert cliconfig.local_ca(Path(".wsgate")) == pki.ca_cert.resolve()
        assert cliconfig.local_ca(tmp_path / "absent") is None
    finally:
        cliconfig.INSTALL_ROOT = saved


@pytest.fixture
def adapter_app(home: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The real adapter REST app in-process: `ac.send` goes through Starlette's TestClient."""
    registry = Registry(SnapshotCache())
    state = AdapterState(
        registry, Authenticator({"admin": "admin"}, b"k" * 32), XdsStatus(), "boot", ready=True
    )
    client = TestClient(create_app(state), base_url=ADAPTER)

    def send(request: ac.Request, verify: object, certs_dir: object = None) -> httpx.Response:
        return client.request(
            request.method,
            request.url,
            params=request.params or None,
            headers=request.headers or None,
            json=request.json_body,
            files=request.files,
        )

    monkeypatch.setattr(ac, "send", send)
    return registry


def test_deploy_names_the_api_and_a_second_deploy_reads_as_one_sentence(
    adapter_app: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    project = str(REPO / "examples" / "EchoWebSocket-1.0.0")
    run(["add", "env", "dev", "--adapter", ADAPTER], capsys)
    assert run(["login", "dev", "-u", "admin", "-p", "admin"], capsys)[0] == 0
    code, out, _ = run(["deploy", "api", "-f", project, "-e", "dev"], capsys)
    assert code == 0
    assert out.strip() == (
        f"Successfully deployed API 'EchoWebSocket' version '1.0.0' from {project} "
        "to environment 'dev'"
    )
    code, _, err = run(["deploy", "api", "-f", project, "-e", "dev"], capsys)
    assert code == 1
    assert one_error_line(err) == (
        "Error: API already exists (API EchoWebSocket 1.0.0 is already deployed; "
        "run again with -o to replace it)"
    )
    assert run(["deploy", "api", "-f", project, "-e", "dev", "-o"], capsys)[0] == 0


def test_the_cli_shows_and_keeps_off_control_plane_apis(
    adapter_app: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter_app.deploy(
        definition_pb2.ApiDefinition(
            id="cp-uuid",
            name="EchoWebSocket",
            version="1.0.0",
            context="/echowebsocket",
            production_endpoint=definition_pb2.Endpoint(url="ws://b"),
            revision_id="rev-1",
            source="control-plane",
        )
    )
    run(["add", "env", "dev", "--adapter", ADAPTER], capsys)
    run(["login", "dev", "-u", "admin", "-p", "admin"], capsys)
    code, out, _ = run(["get", "apis", "-e", "dev"], capsys)
    header, row = out.strip().splitlines()
    assert header.split()[-1] == "OWNER"
    assert row.split()[-1] == "control-plane"
    code, _, err = run(
        ["undeploy", "api", "-n", "EchoWebSocket", "-v", "1.0.0", "-e", "dev"], capsys
    )
    line = one_error_line(err)
    assert code == 1
    assert line.startswith("Error: API owned by the control plane (API EchoWebSocket 1.0.0")
    assert "/apis/cp-uuid/undeploy-revision?revisionId=rev-1" in line
    project = str(REPO / "examples" / "EchoWebSocket-1.0.0")
    code, _, err = run(["deploy", "api", "-f", project, "-e", "dev", "-o"], capsys)
    assert code == 1
    assert "cannot replace it" in one_error_line(err)
    assert [e.api.id for e in adapter_app.entries()] == ["cp-uuid"]
