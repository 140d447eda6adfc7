"""The gRPC links between components are mutual TLS by default: only a client holding a
certificate from the stack's own CA gets through; WSGATE_GRPC_TLS=plaintext serves development.

Real processes: the adapter's xDS port and the enforcer's Check port are called with raw grpc
channels in every configuration a stranger could try.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.conftest import Stack, handshake, start_stack
from wsgate_common.pki import ensure_pki
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc

UNKNOWN_API = enforcer_pb2.HandshakeRequest(request_id="mtls", api_id="nope", topic="/x")


def check(channel: grpc.Channel) -> enforcer_pb2.HandshakeResponse:
    stub = enforcer_pb2_grpc.HandshakeServiceStub(channel)
    response: enforcer_pb2.HandshakeResponse = stub.Check(UNKNOWN_API, timeout=5)
    return response


def credentials(pki_dir: Path, client_cert: bool = True) -> grpc.ChannelCredentials:
    ca = (pki_dir / "ca.pem").read_bytes()
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(pki_dir / "server-key.pem").read_bytes(),
        certificate_chain=(pki_dir / "server.pem").read_bytes(),
    )


def refused(make_channel: object) -> bool:
    try:
        with make_channel() as channel:  # type: ignore[operator]
            check(channel)
    except grpc.RpcError as exc:
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
    return False


def test_enforcer_answers_a_client_with_the_stacks_certificate(stack: Stack) -> None:
    target = f"localhost:{stack.ports.enforcer_grpc}"
    with grpc.secure_channel(target, credentials(stack.data_dir / "pki")) as channel:
        response = check(channel)
    assert not response.allowed and response.http_status == 404


def test_strangers_are_refused_by_the_enforcer_and_the_adapter(
    stack: Stack, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other"
    ensure_pki(other_ca)
    own = stack.data_dir / "pki"
    for port in (stack.ports.enforcer_grpc, stack.ports.adapter_xds, stack.ports.adapter_deploy):
        target = f"localhost:{port}"
        assert refused(lambda t=target: grpc.insecure_channel(t)), f"plaintext got in on {port}"
        assert refused(
            lambda t=target: grpc.secure_channel(t, credentials(own, client_cert=False))
        ), f"a client without a certificate got in on {port}"
        assert refused(lambda t=target: grpc.secure_channel(t, credentials(other_ca))), (
            f"a certificate from another CA got in on {port}"
        )


@pytest.fixture(scope="module")
def plaintext_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("plain"), {"WSGATE_GRPC_TLS": "plaintext"}) as s:
        yield s


def test_plaintext_setting_works_end_to_end(plaintext_stack: Stack) -> None:
    stack = plaintext_stack
    with grpc.insecure_channel(f"localhost:{stack.ports.enforcer_grpc}") as channel:
        assert check(channel).http_status == 404
    stack.login()
    stack.mg_ok("deploy", "api", "-f", str(stack.project_copy()), "-e", "dev", "-k")
    token = stack.testkey("read:notifications")
    url = f"{stack.ws}/echowebsocket/1.0.0/notifications"
    deadline = time.monotonic() + 10
    result = handshake(url, token)
    while result.status != 101 and time.monotonic() < deadline:
        time.sleep(0.1)
        result = handshake(url, token)
    assert (result.status, result.echoed) == (101, "hello")
