"""wsgate_common.grpc_tls: option lists, credentials from the pki, and in-process handshakes."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest

from wsgate_common import grpc_tls
from wsgate_common.grpc_tls import PLAINTEXT, GrpcTls, check_pair, from_pki_dir, resolve
from wsgate_common.settings import CommonSettings
from wsgate_proto import deploy_pb2, deploy_pb2_grpc


class Adapter(deploy_pb2_grpc.DeploymentServiceServicer):
    async def Status(
        self, request: deploy_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.StatusResponse:
        return deploy_pb2.StatusResponse(boot_id="b1")


def test_client_keepalive_is_allowed_by_the_server() -> None:
    client = dict(grpc_tls.CHANNEL_OPTIONS)
    server = dict(grpc_tls.SERVER_OPTIONS)
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.keepalive_permit_without_calls"] == 1
    # No GOAWAY "too_many_pings": the server accepts pings more often than clients send them.
    assert server["grpc.http2.min_recv_ping_interval_without_data_ms"] < int(
        client["grpc.keepalive_time_ms"]
    )
    for options in (client, server):
        assert options["grpc.max_receive_message_length"] == 64 * 1024 * 1024
        assert options["grpc.max_send_message_length"] == 64 * 1024 * 1024


def test_merge_options_replaces_keys_once() -> None:
    merged = grpc_tls.merge_options([("a", 1), ("b", 2)], [("b", 3), ("c", 4)])
    assert merged == [("a", 1), ("b", 3), ("c", 4)]


def test_server_name_override_only_with_mtls(tmp_path: Path) -> None:
    tls = from_pki_dir(tmp_path, server_name="wsgate.internal")
    assert ("grpc.ssl_target_name_override", "wsgate.internal") in tls.channel_options()
    assert all(k != "grpc.ssl_target_name_override" for k, _ in PLAINTEXT.channel_options())


def test_settings_default_to_mtls_with_the_pki(tmp_path: Path) -> None:
    tls = grpc_tls.for_settings(CommonSettings(data_dir=tmp_path))
    assert tls.secure
    assert tls.ca_pem == (tmp_path / "pki" / "ca.pem").read_bytes()
    plain = grpc_tls.for_settings(CommonSettings(data_dir=tmp_path, grpc_tls="plaintext"))
    assert plain is PLAINTEXT


def test_settings_read_the_shared_env_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_GRPC_TLS", "plaintext")
    assert CommonSettings(data_dir=tmp_path).grpc_tls == "plaintext"
    monkeypatch.setenv("WSGATE_GRPC_TLS", "tls-ish")
    with pytest.raises(ValueError):
        CommonSettings(data_dir=tmp_path)


def test_mismatched_files_are_refused_at_start(tmp_path: Path) -> None:
    one, two = from_pki_dir(tmp_path / "one"), from_pki_dir(tmp_path / "two")
    with pytest.raises(ValueError, match="does not belong"):
        check_pair(one.ca_pem, one.cert_pem, two.key_pem)
    with pytest.raises(ValueError, match="not issued by the CA"):
        check_pair(one.ca_pem, two.cert_pem, two.key_pem)
    with pytest.raises(ValueError, match="unreadable"):
        check_pair(b"junk", one.cert_pem, one.key_pem)
    pki = tmp_path / "one"
    with pytest.raises(ValueError):
        resolve(
            "mtls", pki, pki / "ca.pem", tmp_path / "two" / "server.pem", pki / "server-key.pem"
        )


def test_mismatch_hint_names_the_setting() -> None:
    assert "WSGATE_GRPC_TLS=plaintext" in grpc_tls.mismatch_hint("Socket closed", "plaintext")
    assert "WSGATE_GRPC_TLS=mtls" in grpc_tls.mismatch_hint("Ssl handshake failed", "mtls")
    assert grpc_tls.mismatch_hint("Deadline Exceeded", "mtls") == ""


async def _status(server_tls: GrpcTls, client_tls: GrpcTls) -> str:
    """Start a DeploymentService with ``server_tls``; the client's boot id or error code."""
    server = grpc.aio.server(options=server_tls.server_options())
    deploy_pb2_grpc.add_DeploymentServiceServicer_to_server(Adapter(), server)
    port = server_tls.add_port(server, "127.0.0.1:0")
    await server.start()
    try:
        async with client_tls.aio_channel(f"localhost:{port}") as channel:
            stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
            try:
                reply = await stub.Status(deploy_pb2.StatusRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return reply.boot_id
    finally:
        await server.stop(None)


async def test_mtls_and_plaintext_handshakes(tmp_path: Path) -> None:
    ours = from_pki_dir(tmp_path / "ours")
    other_ca = from_pki_dir(tmp_path / "other")
    no_client_cert = GrpcTls("mtls", ca_pem=ours.ca_pem)
    assert await _status(ours, ours) == "b1"  # "localhost" verifies against the SANs
    assert await _status(PLAINTEXT, PLAINTEXT) == "b1"
    assert await _status(ours, PLAINTEXT) == "UNAVAILABLE"
    assert await _status(PLAINTEXT, ours) == "UNAVAILABLE"
    assert await _status(ours, other_ca) == "UNAVAILABLE"  # neither side trusts the other
    assert await _status(ours, no_client_cert) == "UNAVAILABLE"  # the server demands a cert
    # The server's certificate does not name this host: only the override makes it pass.
    wrong = GrpcTls("mtls", ours.ca_pem, ours.cert_pem, ours.key_pem, server_name="nobody")
    assert await _status(ours, wrong) == "UNAVAILABLE"
