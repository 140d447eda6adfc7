from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from enforcer.issuers import IssuerRegistry
from enforcer.policies import PolicyStore
from enforcer.service import HandshakeService
from enforcer.subscriptions import SubscriptionStore
from enforcer.testkey import TestKeySigner
from enforcer.tokens import Claims
from wsgate_common.resources import (
    APPLICATION_TYPE_URL,
    SUBSCRIPTION_DATA_TYPE_URLS,
    SUBSCRIPTION_TYPE_URL,
)
from wsgate_proto import config_pb2, enforcer_pb2, enforcer_pb2_grpc
from wsgate_proto import subscription_pb2 as sp

from .conftest import NOW


def store_resources() -> list[any_pb2.Any]:
    policy = config_pb2.ApiPolicy(
        api_id="api",
        has_production_endpoint=True,
        topics=[config_pb2.TopicPolicy(path="/t", secured=True, scopes=["read"])],
    )
    resource = any_pb2.Any()
    resource.Pack(policy)
    return [resource]


def store() -> PolicyStore:
    policies = PolicyStore()
    policies.apply("1", store_resources())
    return policies


def ask(service: HandshakeService, token: str) -> enforcer_pb2.HandshakeResponse:
    return service.check(
        enforcer_pb2.HandshakeRequest(
            request_id="r-1", api_id="api", topic="/t", authorization=f"Bearer {token}"
        )
    )


def test_check_validates_real_tokens(
    signer: TestKeySigner, caplog: pytest.LogCaptureFixture
) -> None:
    service = HandshakeService(store(), IssuerRegistry([signer.as_issuer()]), clock=lambda: NOW)
    caplog.set_level(logging.INFO, "enforcer.decisions")
    assert ask(service, signer.issue("admin", ["read"], NOW)).allowed
    denied = ask(service, signer.issue("admin", ["write"], NOW))
    assert (denied.http_status, denied.error_code) == (403, 900910)
    expired = ask(service, signer.issue("admin", ["read"], NOW - 7200))
    assert (expired.http_status, expired.description) == (401, "Access token expired")
    lines = [r.getMessage() for r in caplog.records if r.name == "enforcer.decisions"]
    assert len(lines) == 3
    assert "request r-1 api api topic /t: allowed PRODUCTION" in lines[0]
    assert "denied 403 900910 (scope mismatch)" in lines[1]


def test_a_bug_becomes_a_500_denial(signer: TestKeySigner) -> None:
    class Broken(HandshakeService):
        def authenticate(self, token: str) -> Claims:
            raise RuntimeError("boom")

    service = Broken(store(), IssuerRegistry([signer.as_issuer()]), clock=lambda: NOW)
    response = ask(service, "x.y.z")
    assert not response.allowed
    assert (response.http_status, response.error_code) == (500, 900900)


def packed(type_url: str, *items: Message) -> list[any_pb2.Any]:
    resources = []
    for item in items:
        resource = any_pb2.Any()
        resource.Pack(item)
        resources.append(resource)
    assert all(r.type_url == type_url for r in resources)
    return resources


async def test_reconcile_waits_for_a_complete_state_then_judges_by_it() -> None:
    """A restarted enforcer answers Reconcile only once it holds every API and every kind of
    subscription data; before that (within the wait) the router is told UNAVAILABLE."""
    subscriptions = SubscriptionStore()
    service = HandshakeService(PolicyStore(), IssuerRegistry([]), subscriptions)
    service.ready_wait = 0.2
    server = grpc.aio.server()
    enforcer_pb2_grpc.add_HandshakeServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    request = enforcer_pb2.ReconcileRequest(
        router_id="r",
        connections=[
            enforcer_pb2.LiveConnection(api_id="api", application_id="a1", subscription_id="s1"),
            enforcer_pb2.LiveConnection(api_id="api", application_id="a2", subscription_id="s2"),
            enforcer_pb2.LiveConnection(api_id="old", token_id="t"),
        ],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = enforcer_pb2_grpc.HandshakeServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Reconcile(request, timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

            service.ready_wait = 5.0
            answer = asyncio.ensure_future(stub.Reconcile(request, timeout=10))
            service.policies.apply("1", store_resources())
            await asyncio.sleep(0.1)
            assert not answer.done()  # APIs alone are not the whole state
            apps = [sp.Application(id="a1"), sp.Application(id="a2")]
            subs = [sp.Subscription(id="s1", application_id="a1", api_id="api")]
            for type_url in SUBSCRIPTION_DATA_TYPE_URLS:
                items: list[Message] = []
                if type_url == APPLICATION_TYPE_URL:
                    items = list(apps)
                elif type_url == SUBSCRIPTION_TYPE_URL:
                    items = list(subs)
                subscriptions.apply(type_url, "1", packed(type_url, *items))
            response = await answer
    finally:
        await server.stop(0)
    assert [(c.index, c.close_code, c.reason) for c in response.closes] == [
        (1, 1008, "subscription removed"),
        (2, 1008, "API undeployed"),
    ]
