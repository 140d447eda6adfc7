"""User story: an API deployed to the real adapter reaches the real enforcer over xDS, and the
enforcer then allows or denies handshakes by the topic's scopes; redeploys and undeploys follow."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.adapter_enforcer import adapter_and_enforcer
from tests.procs import wait_for
from wsgate_common.grpc_tls import GrpcTls
from wsgate_proto import (
    definition_pb2,
    deploy_pb2,
    deploy_pb2_grpc,
    enforcer_pb2,
    enforcer_pb2_grpc,
)

pytestmark = pytest.mark.integration

API_ID = "chat:1.0.0"


@dataclass
class Stack:
    deploy_address: str
    enforcer_grpc: str
    enforcer_http: str
    tls: GrpcTls  # mTLS with the stack's pki, as the components talk

    def deploy(self, api: definition_pb2.ApiDefinition) -> None:
        with self.tls.channel(self.deploy_address) as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).Deploy(
                deploy_pb2.DeployRequest(api=api), timeout=10
            )

    def undeploy(self, api_id: str) -> None:
        with self.tls.channel(self.deploy_address) as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).Undeploy(
                deploy_pb2.UndeployRequest(api_id=api_id), timeout=10
            )

    def testkey(self, scope: str) -> str:
        response = httpx.post(
            f"{self.enforcer_http}/testkey", data={"scope": scope}, auth=("admin", "admin")
        )
        response.raise_for_status()
        return response.text

    def check(self, topic: str, token: str = "") -> enforcer_pb2.HandshakeResponse:
        with self.tls.channel(self.enforcer_grpc) as channel:
            return enforcer_pb2_grpc.HandshakeServiceStub(channel).Check(
                enforcer_pb2.HandshakeRequest(
                    request_id="it",
                    api_id=API_ID,
                    topic=topic,
                    authorization=f"Bearer {token}" if token else "",
                ),
                timeout=5,
            )


def chat_api(lifecycle: str = "PUBLISHED") -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=API_ID,
        name="Chat",
        version="1.0.0",
        context="/chat",
        api_type="WS",
        provider="admin",
        lifecycle_status=lifecycle,
        production_endpoint=definition_pb2.Endpoint(url="ws://127.0.0.1:9"),
        operations=[
            definition_pb2.Operation(
                target="/rooms/{room}", verb="SUBSCRIBE", scopes=["chat:read"]
            ),
            definition_pb2.Operation(target="/public", verb="SUBSCRIBE", auth_type="None"),
        ],
        scopes=[definition_pb2.Scope(name="chat:read")],
        source="control-plane",
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("stack")
    # The API is pushed as the control plane does, and checked with test keys: the operator
    # switch that admits test keys on control-plane APIs (off by default) is on here.
    with adapter_and_enforcer(data_dir, {"WSGATE_TESTKEY_CONTROL_PLANE_APIS": "true"}) as pair:
        yield Stack(pair.deploy_address, pair.enforcer_address, pair.enforcer_http, pair.tls)


def test_scopes_decide_after_deploy(stack: Stack) -> None:
    stack.deploy(chat_api())
    reader = stack.testkey("chat:read")
    wait_for(lambda: stack.check("/rooms/{room}", reader).allowed, 10, "the API in the enforcer")

    allowed = stack.check("/rooms/{room}", reader)
    assert allowed.key_type == "PRODUCTION"
    assert list(allowed.scopes) == ["chat:read"]
    assert allowed.subscriber == "admin"

    denied = stack.check("/rooms/{room}", stack.testkey("other"))
    assert (denied.allowed, denied.http_status, denied.error_code) == (False, 403, 900910)

    missing = stack.check("/rooms/{room}")
    assert (missing.http_status, missing.error_code) == (401, 900902)

    assert stack.check("/public").allowed  # unsecured topic: no token needed


def test_redeploy_blocked_then_undeploy(stack: Stack) -> None:
    reader = stack.testkey("chat:read")
    stack.deploy(chat_api())
    stack.deploy(chat_api(lifecycle="BLOCKED"))
    wait_for(lambda: stack.check("/rooms/{room}", reader).http_status == 503, 10, "the API blocked")
    stack.undeploy(API_ID)
    wait_for(lambda: stack.check("/rooms/{room}", reader).http_status == 404, 10, "undeploy")
