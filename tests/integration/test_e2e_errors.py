"""What a user sees when something is wrong: every refusal is an HTTP answer before the upgrade
with a JSON body ``{code, message, description}``, and every CLI failure is one line.
"""

from __future__ import annotations

import io
import json
import time
import zipfile

import jwt
import pytest

from tests.integration.conftest import Handshake, Stack, handshake
from tests.procs import free_port

pytestmark = pytest.mark.integration

NOTIFICATIONS = "/echowebsocket/1.0.0/notifications"


@pytest.fixture(scope="module")
def echo_api(stack: Stack) -> Stack:
    stack.login()
    stack.mg_ok("deploy", "api", "-f", str(stack.project_copy()), "-e", "dev", "-k", "-o")
    token = stack.testkey("read:notifications")
    deadline = time.monotonic() + 5
    while handshake(stack.ws + NOTIFICATIONS, token).status != 101:
        assert time.monotonic() < deadline, "EchoWebSocket never became live"
        time.sleep(0.05)
    return stack


def _error_body(result: Handshake) -> dict[str, object]:
    body = json.loads(result.body)
    assert set(body) >= {"code", "message", "description"}, body
    return dict(body)


def test_handshake_without_token_is_401_json_before_upgrade(echo_api: Stack) -> None:
    result = handshake(echo_api.ws + NOTIFICATIONS)
    assert result.status == 401
    body = _error_body(result)
    assert isinstance(body["code"], int)


def test_token_with_a_bad_signature_is_401(echo_api: Stack) -> None:
    token = echo_api.testkey("read:notifications")
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    result = handshake(echo_api.ws + NOTIFICATIONS, f"{head}.{payload}.{flipped}")
    assert result.status == 401
    _error_body(result)
    assert handshake(echo_api.ws + NOTIFICATIONS, "not-a-jwt").status == 401


def test_expired_token_is_401(echo_api: Stack) -> None:
    """Signed with the enforcer's own test-key (from this stack's data dir), but long expired."""
    fresh = echo_api.testkey("read:notifications")
    header = jwt.get_unverified_header(fresh)
    claims = jwt.decode(fresh, options={"verify_signature": False})
    key = (echo_api.data_dir / "enforcer" / "testkey.pem").read_bytes()
    now = int(time.time())
    claims.update(iat=now - 7200, exp=now - 3600)
    expired = jwt.encode(claims, key, algorithm="RS256", headers={"kid": header["kid"]})
    result = handshake(echo_api.ws + NOTIFICATIONS, expired)
    assert result.status == 401
    body = _error_body(result)
    assert "expired" in json.dumps(body).lower()
    claims.update(iat=now, exp=now + 3600)  # the same key and claims, not expired: accepted
    valid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": header["kid"]})
    assert handshake(echo_api.ws + NOTIFICATIONS, valid).status == 101


def test_token_without_the_topic_scope_is_403(echo_api: Stack) -> None:
    token = echo_api.testkey("some:other")
    result = handshake(echo_api.ws + NOTIFICATIONS, token)
    assert result.status == 403
    _error_body(result)


def test_unknown_path_is_404(echo_api: Stack) -> None:
    token = echo_api.testkey("read:notifications")
    for path in ("/nope/1.0.0/x", "/echowebsocket/9.9.9/notifications"):
        result = handshake(echo_api.ws + path, token)
        assert result.status == 404, path
        _error_body(result)


def test_api_whose_backend_is_down_is_502(echo_api: Stack) -> None:
    dead = f"ws://localhost:{free_port()}"
    project = echo_api.project_copy("DeadBackend", "/deadbackend", endpoint=dead)
    echo_api.mg_ok("deploy", "api", "-f", str(project), "-e", "dev", "-k", "-o")
    token = echo_api.testkey("")
    url = echo_api.ws + "/deadbackend/1.0.0/rooms/lobby"
    deadline = time.monotonic() + 5
    result = handshake(url, token)
    while result.status == 404 and time.monotonic() < deadline:
        time.sleep(0.05)
        result = handshake(url, token)
    assert result.status == 502
    _error_body(result)


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_malformed_project_zip_is_400_naming_the_file(echo_api: Stack) -> None:
    bad = _zip(
        {
            "Broken-1.0.0/api.yaml": "type: api\ndata: [unclosed\n",
            "Broken-1.0.0/Definitions/asyncapi.yaml": "asyncapi: 2.0.0\n",
        }
    )
    with echo_api.adapter_client() as adapter:
        answer = adapter.post("/apis", files={"file": ("Broken.zip", bad, "application/zip")})
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert set(body) >= {"code", "message", "description"}
    assert "api.yaml" in body["message"] + body["description"]

    path = echo_api.work / "Broken.zip"
    path.write_bytes(bad)
    result = echo_api.mg("deploy", "api", "-f", str(path), "-e", "dev", "-k")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "api.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    with echo_api.adapter_client() as adapter:
        not_zip = adapter.post("/apis", files={"file": ("x.zip", b"plain text", "application/zip")})
    assert not_zip.status_code == 400, not_zip.text


def test_second_deploy_without_override_is_409(echo_api: Stack) -> None:
    project = echo_api.project_copy("Twice", "/twice")
    echo_api.mg_ok("deploy", "api", "-f", str(project), "-e", "dev", "-k")
    again = echo_api.mg("deploy", "api", "-f", str(project), "-e", "dev", "-k")
    assert again.returncode == 1
    assert again.stderr.startswith("Error: ")
    with echo_api.adapter_client() as adapter:
        payload = _zip(
            {
                "Twice-1.0.0/" + p.relative_to(project).as_posix(): p.read_text()
                for p in project.rglob("*")
                if p.is_file()
            }
        )
        answer = adapter.post("/apis", files={"file": ("Twice.zip", payload, "application/zip")})
        assert answer.status_code == 409, answer.text
        assert set(answer.json()) >= {"code", "message", "description"}
        replaced = adapter.post(
            "/apis", params={"override": "true"}, files={"file": ("Twice.zip", payload)}
        )
        assert replaced.status_code in (200, 201), replaced.text


def test_cli_with_a_wrong_password_is_one_error_line(stack: Stack) -> None:
    stack.mg_ok("add", "env", "wrongpw", "--adapter", stack.adapter_url)
    result = stack.mg("login", "wrongpw", "-u", "admin", "-p", "nope", "-k")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_without_k_trusts_the_local_ca(stack: Stack) -> None:
    """No -k: the CLI verifies the adapter with <WSGATE_DATA_DIR>/pki/ca.pem."""
    stack.mg_ok("add", "env", "verified", "--adapter", stack.adapter_url)
    stack.mg_ok("login", "verified", "-u", "admin", "-p", "admin")
    assert "NAME" in stack.mg_ok("get", "apis", "-e", "verified")
