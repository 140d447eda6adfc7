"""WatchConnections over a real grpc.aio server and client, in process; and the xDS feeds that
drive it (ApiPolicy and subscription updates, a new adapter boot)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from enforcer.feeds import Feeds
from enforcer.issuers import IssuerRegistry
from enforcer.keymanagers import IssuerBook
from enforcer.policies import PolicyStore
from enforcer.service import HandshakeService
from enforcer.subscriptions import SubscriptionStore
from enforcer.testkey import TestKeySigner
from enforcer.watch import ConnectionWatch
from wsgate_common.resources import (
    API_POLICY_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
    SUBSCRIPTION_TYPE_URL,
)
from wsgate_proto import config_pb2, enforcer_pb2, enforcer_pb2_grpc
from wsgate_proto import subscription_pb2 as sp


def packed(*items: Message) -> list[any_pb2.Any]:
    out = []
    for item in items:
        resource = any_pb2.Any()
        resource.Pack(item)
        out.append(resource)
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def feeds(signer: TestKeySigner) -> Feeds:
    return Feeds(
        PolicyStore(),
        SubscriptionStore(),
        IssuerBook([signer.as_issuer()]),
        ConnectionWatch(clock=Clock()),
    )


@pytest.fixture
async def stub(
    feeds: Feeds, signer: TestKeySigner
) -> AsyncIterator[enforcer_pb2_grpc.HandshakeServiceStub]:
    server = grpc.aio.server()
    service = HandshakeService(
        feeds.policies, IssuerRegistry([signer.as_issuer()]), feeds.subscriptions, watch=feeds.watch
    )
    enforcer_pb2_grpc.add_HandshakeServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield enforcer_pb2_grpc.HandshakeServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


def api(api_id: str, lifecycle: str = "PUBLISHED") -> config_pb2.ApiPolicy:
    return config_pb2.ApiPolicy(api_id=api_id, lifecycle_status=lifecycle)


def subscription(app: str, api_id: str, state: str = "UNBLOCKED") -> sp.Subscription:
    return sp.Subscription(id=f"{app}-{api_id}", application_id=app, api_id=api_id, state=state)


async def next_message(call: object) -> enforcer_pb2.ConnectionRule:
    rule = await asyncio.wait_for(call.read(), 2)  # type: ignore[attr-defined]
    assert isinstance(rule, enforcer_pb2.ConnectionRule)
    return rule


async def next_rule(call: object) -> enforcer_pb2.ConnectionRule:
    """The next rule, past any data version notice."""
    while True:
        rule = await next_message(call)
        if not rule.data_version:
            return rule
        assert not (rule.token_id or rule.application_id or rule.api_id or rule.key_type)


async def test_stream_announces_the_data_version_after_the_rules_and_on_each_change(
    feeds: Feeds, stub: enforcer_pb2_grpc.HandshakeServiceStub
) -> None:
    handlers = feeds.handlers()
    handlers[API_POLICY_TYPE_URL]("1.e", packed(api("y", "BLOCKED")))
    call = stub.WatchConnections(enforcer_pb2.WatchConnectionsRequest(router_id="r1"))
    assert (await next_message(call)).reason == "API blocked"
    first = await next_message(call)
    assert first.data_version == feeds.watch.data_version and not first.reason
    # a subscription tier change makes no rule, but decisions may differ: a new version
    handlers[SUBSCRIPTION_TYPE_URL]("2.e", packed(subscription("a", "y")))
    second = await next_message(call)
    assert second.data_version and second.data_version != first.data_version
    # keys fetched for an issuer: a new version too
    feeds.watch.keys_changed()
    third = await next_message(call)
    assert third.data_version not in ("", first.data_version, second.data_version)
    # the same data seen by another enforcer gives the same version
    other = ConnectionWatch(clock=Clock())
    other.update(feeds.policies.current, feeds.subscriptions.current)
    other.keys_changed()
    assert other.data_version == third.data_version
    call.cancel()


async def test_check_answers_carry_the_data_version(
    feeds: Feeds, stub: enforcer_pb2_grpc.HandshakeServiceStub
) -> None:
    feeds.handlers()[API_POLICY_TYPE_URL]("1.e", packed(api("x")))
    answer = await stub.Check(enforcer_pb2.HandshakeRequest(api_id="x", topic="/t"))
    assert answer.data_version == feeds.watch.data_version != ""


async def test_stream_sends_rules_in_force_then_new_ones(
    feeds: Feeds, stub: enforcer_pb2_grpc.HandshakeServiceStub
) -> None:
    handlers = feeds.handlers()
    handlers[API_POLICY_TYPE_URL]("1.e", packed(api("x"), api("y", "BLOCKED")))
    handlers[REVOKED_TOKEN_TYPE_URL]("1.e", packed(sp.RevokedToken(jti="j1", expires_at=5_000)))
    call = stub.WatchConnections(enforcer_pb2.WatchConnectionsRequest(router_id="r1"))
    first = {
        (r.token_id, r.api_id, r.reason) for r in [await next_rule(call), await next_rule(call)]
    }
    assert first == {("j1", "", "token revoked"), ("", "y", "API blocked")}

    handlers[SUBSCRIPTION_TYPE_URL]("2.e", packed(subscription("a", "x", "BLOCKED")))
    rule = await next_rule(call)
    assert (rule.application_id, rule.api_id, rule.key_type) == ("a", "x", "")
    assert (rule.close_code, rule.reason) == (1008, "subscription blocked")

    # Unblocked then removed: removal is a rule of its own.
    handlers[SUBSCRIPTION_TYPE_URL]("3.e", packed(subscription("a", "x")))
    handlers[SUBSCRIPTION_TYPE_URL]("4.e", [])
    rule = await next_rule(call)
    assert (rule.application_id, rule.api_id, rule.reason) == ("a", "x", "subscription removed")

    handlers[API_POLICY_TYPE_URL]("5.e", packed(api("y", "BLOCKED")))
    rule = await next_rule(call)
    assert (rule.api_id, rule.reason) == ("x", "API undeployed")

    # A second router connecting now gets every rule in force.
    other = stub.WatchConnections(enforcer_pb2.WatchConnectionsRequest(router_id="r2"))
    reasons = sorted([(await next_rule(other)).reason for _ in range(4)])
    assert reasons == ["API blocked", "API undeployed", "subscription removed", "token revoked"]
    call.cancel()
    other.cancel()


async def test_a_new_adapter_boot_does_not_close_everything(feeds: Feeds) -> None:
    handlers = feeds.handlers()
    handlers[API_POLICY_TYPE_URL]("3.old", packed(api("x")))
    handlers[SUBSCRIPTION_TYPE_URL]("3.old", packed(subscription("a", "x")))
    # The restarted adapter first serves empty sets (the control plane has not re-sent yet).
    handlers[API_POLICY_TYPE_URL]("1.new", [])
    handlers[SUBSCRIPTION_TYPE_URL]("1.new", [])
    assert feeds.watch.in_force() == []
    # A real removal within the same boot still counts.
    handlers[API_POLICY_TYPE_URL]("2.new", packed(api("z")))
    handlers[API_POLICY_TYPE_URL]("3.new", [])
    assert [r.reason for r in feeds.watch.in_force()] == ["API undeployed"]


async def test_bad_update_changes_no_rule(feeds: Feeds) -> None:
    handlers = feeds.handlers()
    handlers[SUBSCRIPTION_TYPE_URL]("1.e", packed(subscription("a", "x", "BLOCKED")))
    with pytest.raises(ValueError):
        handlers[SUBSCRIPTION_TYPE_URL]("2.e", packed(sp.Subscription(id="broken")))
    assert [r.reason for r in feeds.watch.in_force()] == ["subscription blocked"]
    assert feeds.subscriptions.current.versions[SUBSCRIPTION_TYPE_URL] == "1.e"


async def test_stream_ends_cleanly_when_the_client_goes(
    feeds: Feeds, stub: enforcer_pb2_grpc.HandshakeServiceStub
) -> None:
    call = stub.WatchConnections(enforcer_pb2.WatchConnectionsRequest(router_id="r"))
    await call.wait_for_connection()
    for _ in range(50):
        if feeds.watch.listeners:
            break
        await asyncio.sleep(0.01)
    assert feeds.watch.listeners == 1
    call.cancel()
    for _ in range(100):
        if not feeds.watch.listeners:
            break
        await asyncio.sleep(0.01)
    assert feeds.watch.listeners == 0
