"""User story: a developer gets a test key from a running enforcer and the router's handshake
check answers over real gRPC, even before (or without) an adapter pushing any API."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.procs import Proc, free_port, http_ok, running
from wsgate_common.grpc_tls import from_pki_dir
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc

pytestmark = pytest.mark.integration
ADMIN = ("admin", "admin")


class Enforcer:
    def __init__(self, proc: Proc, grpc_port: int, http_port: int, data_dir: Path) -> None:
        self.proc = proc
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.data_dir = data_dir

    def testkey(self, scope: str = "", auth: tuple[str, str] = ADMIN) -> httpx.Response:
        return httpx.post(f"{self.http}/testkey", data={"scope": scope}, auth=auth, timeout=5)

    def check(self, request: enforcer_pb2.HandshakeRequest) -> enforcer_pb2.HandshakeResponse:
        with from_pki_dir(self.data_dir / "pki").channel(self.grpc_address) as channel:
            stub = enforcer_pb2_grpc.HandshakeServiceStub(channel)
            return stub.Check(request, timeout=5)


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enforcer]:
    data_dir = tmp_path_factory.mktemp("enforcer-data")
    grpc_port, http_port, xds_port = free_port(), free_port(), free_port()
    env = {
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_ENFORCER_USERS": "admin:admin,dev:s3cret",
        "WSGATE_XDS_ADDRESS": f"127.0.0.1:{xds_port}",  # nobody listens there
    }
    args = ["enforcer", "--host", "127.0.0.1", "--grpc-port", str(grpc_port)]
    args += ["--http-port", str(http_port)]
    with running(
        "enforcer",
        args,
        env,
        data_dir,
        ready=lambda: http_ok(f"http://127.0.0.1:{http_port}/health"),
    ) as proc:
        yield Enforcer(proc, grpc_port, http_port, data_dir)
        assert proc.alive(), proc.log()


def test_not_ready_without_policies(enforcer: Enforcer) -> None:
    assert httpx.get(f"{enforcer.http}/ready").status_code == 503


def test_testkey_over_http(enforcer: Enforcer) -> None:
    response = enforcer.testkey("read chat:write", auth=("dev", "s3cret"))
    assert response.status_code == 200, response.text
    payload = jwt.decode(response.text, options={"verify_signature": False})
    assert payload["sub"] == "dev"
    assert payload["scope"] == "read chat:write"
    assert payload["iss"] == "https://localhost:9095/testkey"
    jwks = httpx.get(f"{enforcer.http}/jwks").json()
    assert jwt.get_unverified_header(response.text)["kid"] == jwks["keys"][0]["kid"]
    key_file = enforcer.data_dir / "enforcer" / "testkey.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_testkey_refuses_wrong_credentials(enforcer: Enforcer) -> None:
    response = enforcer.testkey("read", auth=("admin", "wrong"))
    assert response.status_code == 401
    assert response.json()["code"] == 900901
    assert "Basic" in response.headers["www-authenticate"]


def test_check_unknown_api_is_404(enforcer: Enforcer) -> None:
    token = enforcer.testkey("read").text
    response = enforcer.check(
        enforcer_pb2.HandshakeRequest(
            request_id="it-1", api_id="nope:1.0.0", topic="/x", authorization=f"Bearer {token}"
        )
    )
    assert not response.allowed
    assert response.http_status == 404
    assert "request it-1 api nope:1.0.0 topic /x: denied 404" in enforcer.proc.log()


def test_check_survives_garbage(enforcer: Enforcer) -> None:
    response = enforcer.check(
        enforcer_pb2.HandshakeRequest(
            api_id="\x00" * 3, topic="", authorization="Bearer \x01.\x02.\x03"
        )
    )
    assert not response.allowed
    assert enforcer.proc.alive()
    assert "request - api" in enforcer.proc.log()


def test_sigterm_exits_zero(tmp_path: Path) -> None:
    http_port = free_port()
    args = ["enforcer", "--host", "127.0.0.1", "--grpc-port", str(free_port())]
    args += ["--http-port", str(http_port), "--xds-address", f"127.0.0.1:{free_port()}"]
    with running(
        "enforcer-stop",
        args,
        {"WSGATE_DATA_DIR": str(tmp_path)},
        tmp_path,
        ready=lambda: http_ok(f"http://127.0.0.1:{http_port}/health"),
    ) as proc:
        pass
    assert proc.popen.returncode == 0, proc.log()


def test_busy_port_fails_cleanly(tmp_path: Path, enforcer: Enforcer) -> None:
    busy = enforcer.http.rsplit(":", 1)[1]
    proc = Proc(
        "enforcer-busy",
        ["enforcer", "--host", "127.0.0.1", "--grpc-port", str(free_port()), "--http-port", busy],
        {"WSGATE_DATA_DIR": str(tmp_path)},
        tmp_path,
    )
    try:
        assert proc.popen.wait(20) == 1
    finally:
        proc.stop()
    assert "cannot start" in proc.log()
    assert "Traceback" not in proc.log()
