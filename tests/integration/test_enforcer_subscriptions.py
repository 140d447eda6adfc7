"""A real enforcer fed by a real adapter: subscription data pushed with PutSubscriptionData decides
handshakes of key-manager tokens (subscribed, blocked, revoked, wrong key type) and turns into
connection rules on WatchConnections within a second (propagation time measured)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from enforcer.testkey import public_jwk
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
from wsgate_proto import subscription_pb2 as sp

pytestmark = pytest.mark.integration

API_ID = "0b8e9c2e-chat"
CP_ISS = "https://localhost:9443/oauth2/token"
KID = "cp-key-1"


@dataclass
class Stack:
    deploy_address: str
    enforcer_grpc: str
    key: rsa.RSAPrivateKey
    tls: GrpcTls  # mTLS with the stack's pki, as the components talk

    def put(self, data: sp.SubscriptionData) -> None:
        with self.tls.channel(self.deploy_address) as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).PutSubscriptionData(data, timeout=10)

    def token(
        self, consumer_key: str = "ck-prod", key_type: str = "PRODUCTION", jti: str = "j1"
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": CP_ISS,
            "sub": "bob",
            "aud": "ck-prod",
            "azp": consumer_key,
            "scope": "chat:read",
            "keytype": key_type,
            "jti": jti,
            "iat": now,
            "exp": now + 600,
            "application": {"id": "app-1", "name": "App", "tier": "10PerMin", "owner": "bob"},
        }
        return jwt.encode(claims, self.key, "RS256", headers={"kid": KID})

    def check(self, token: str) -> enforcer_pb2.HandshakeResponse:
        with self.tls.channel(self.enforcer_grpc) as channel:
            return enforcer_pb2_grpc.HandshakeServiceStub(channel).Check(
                enforcer_pb2.HandshakeRequest(
                    request_id="it",
                    api_id=API_ID,
                    topic="/rooms/{room}",
                    authorization=f"Bearer {token}",
                ),
                timeout=5,
            )


def chat_api() -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=API_ID,
        name="Chat",
        version="1.0.0",
        context="/chat",
        api_type="WS",
        provider="admin",
        lifecycle_status="PUBLISHED",
        production_endpoint=definition_pb2.Endpoint(url="ws://127.0.0.1:9"),
        sandbox_endpoint=definition_pb2.Endpoint(url="ws://127.0.0.1:9"),
        operations=[
            definition_pb2.Operation(target="/rooms/{room}", verb="SUBSCRIBE", scopes=["chat:read"])
        ],
        scopes=[definition_pb2.Scope(name="chat:read")],
        policies=["AsyncGold"],
        api_throttling_policy="Unlimited",
        source="control-plane",
    )


def subscription_data(
    key: rsa.RSAPrivateKey,
    state: str = "UNBLOCKED",
    revoked: tuple[str, ...] = (),
    extra_apps: int = 0,
    blocked_app: int | None = None,
) -> sp.SubscriptionData:
    jwks = {"keys": [{**public_jwk(key.public_key()), "kid": KID, "alg": "RS256", "use": "sig"}]}
    data = sp.SubscriptionData(
        applications=[sp.Application(id="app-1", name="App", owner="bob", tier="10PerMin")],
        subscriptions=[
            sp.Subscription(
                id="sub-1", api_id=API_ID, application_id="app-1", tier="AsyncGold", state=state
            )
        ],
        key_mappings=[
            sp.KeyMapping(consumer_key="ck-prod", application_id="app-1", key_type="PRODUCTION"),
            sp.KeyMapping(consumer_key="ck-sand", application_id="app-1", key_type="SANDBOX"),
        ],
        policies=[
            sp.ThrottlePolicy(
                name="AsyncGold",
                kind="subscription",
                message_count=200,
                unit_time=1,
                time_unit="min",
                stop_on_quota_reach=True,
            ),
            sp.ThrottlePolicy(
                name="10PerMin", kind="application", message_count=10, unit_time=1, time_unit="min"
            ),
            sp.ThrottlePolicy(name="Unlimited", kind="api"),
        ],
        key_managers=[
            sp.KeyManager(
                name="Resident Key Manager",
                issuer=CP_ISS,
                algorithms=["RS256"],
                jwks_json=json.dumps(jwks),
                consumer_key_claim="azp",
            )
        ],
        revoked_tokens=[sp.RevokedToken(jti=j, expires_at=int(time.time()) + 600) for j in revoked],
    )
    for i in range(extra_apps):
        data.applications.add(id=f"app-x{i}", name=f"X{i}", owner="carol", tier="Unlimited")
        data.subscriptions.add(
            id=f"sub-x{i}",
            api_id=API_ID,
            application_id=f"app-x{i}",
            tier="AsyncGold",
            state="BLOCKED" if i == blocked_app else "UNBLOCKED",
        )
    return data


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("enforcer-subs")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with adapter_and_enforcer(data_dir) as pair:
        stack = Stack(pair.deploy_address, pair.enforcer_address, key, pair.tls)
        with stack.tls.channel(stack.deploy_address) as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).Deploy(
                deploy_pb2.DeployRequest(api=chat_api()), timeout=10
            )
        yield stack


def test_handshakes_follow_the_subscription_data(stack: Stack) -> None:
    stack.put(subscription_data(stack.key))
    wait_for(lambda: stack.check(stack.token()).allowed, 10, "the subscription in the enforcer")
    allowed = stack.check(stack.token())
    assert (allowed.application_id, allowed.application_name) == ("app-1", "App")
    assert (allowed.subscription_id, allowed.subscription_tier) == ("sub-1", "AsyncGold")
    assert allowed.subscriber == "bob"
    assert [(q.key, q.message_count, q.window_seconds) for q in allowed.quotas] == [
        (f"sub:app-1:{API_ID}", 200, 60.0),
        ("app:app-1:bob", 10, 60.0),
    ]

    wrong = stack.check(stack.token(consumer_key="ck-sand", key_type="PRODUCTION"))
    assert (wrong.http_status, wrong.error_code, wrong.description) == (
        401,
        900901,
        "wrong key type",
    )
    unknown = stack.check(stack.token(consumer_key="ck-nobody"))
    assert (unknown.http_status, unknown.error_code) == (403, 900908)
    assert stack.check(stack.token(consumer_key="ck-sand", key_type="SANDBOX")).allowed

    stack.put(subscription_data(stack.key, state="PROD_ONLY_BLOCKED"))
    wait_for(lambda: stack.check(stack.token()).error_code == 900907, 5, "prod-only block")
    assert stack.check(stack.token(consumer_key="ck-sand", key_type="SANDBOX")).allowed

    stack.put(subscription_data(stack.key, revoked=("j1",)))
    wait_for(lambda: stack.check(stack.token()).description == "Access token revoked", 5, "revoke")
    assert stack.check(stack.token(jti="j2")).allowed

    data = subscription_data(stack.key)
    del data.subscriptions[:]
    stack.put(data)
    wait_for(lambda: stack.check(stack.token()).error_code == 900908, 5, "unsubscribed")
    assert "Subscription validation failed" in stack.check(stack.token()).description


async def test_blocking_reaches_watchers_within_a_second(stack: Stack) -> None:
    """Put a set with one more BLOCKED subscription, 20 times: time until the rule arrives."""
    stack.put(subscription_data(stack.key, extra_apps=20))
    # Applied: app-1 is subscribed again (the previous test left it without a subscription).
    wait_for(lambda: stack.check(stack.token()).allowed, 10, "the unblocked set in the enforcer")
    received: dict[str, float] = {}
    changed = asyncio.Event()

    async with stack.tls.aio_channel(stack.enforcer_grpc) as channel:
        stub = enforcer_pb2_grpc.HandshakeServiceStub(channel)
        call = stub.WatchConnections(enforcer_pb2.WatchConnectionsRequest(router_id="it"))

        async def read() -> None:
            async for rule in call:
                if rule.reason == "subscription blocked":
                    received.setdefault(rule.application_id, time.perf_counter())
                    changed.set()

        async def arrival(app_id: str) -> float:
            while app_id not in received:
                changed.clear()
                await changed.wait()
            return received[app_id]

        reader = asyncio.create_task(read())
        try:
            await asyncio.wait_for(call.wait_for_connection(), 10)
            latencies = []
            async with stack.tls.aio_channel(stack.deploy_address) as deploy:
                put = deploy_pb2_grpc.DeploymentServiceStub(deploy).PutSubscriptionData
                for i in range(20):
                    started = time.perf_counter()
                    await put(
                        subscription_data(stack.key, extra_apps=20, blocked_app=i), timeout=10
                    )
                    # Generous: the bound below is what is asserted, this only stops a hang.
                    arrived = await asyncio.wait_for(arrival(f"app-x{i}"), 10)
                    latencies.append(arrived - started)
            latencies_ms = sorted(latency * 1000 for latency in latencies)
            median = statistics.median(latencies_ms)
            print(
                f"\nPutSubscriptionData -> WatchConnections rule ({len(latencies_ms)} tries): "
                f"p50 {median:.1f} ms, max {latencies_ms[-1]:.1f} ms"
            )
            # Typically tens of ms; the margins survive a loaded machine (the figures above).
            assert median < 1000
            assert latencies_ms[-1] < 3000
        finally:
            call.cancel()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
