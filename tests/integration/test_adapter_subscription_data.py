"""A real `wsgate adapter` process: PutSubscriptionData over gRPC reaches an xDS client on every
label as six resource types; a later set replaces it; garbage is refused. Also measures how long
10,000 subscriptions + 1,000 applications take from the Put until an xDS client has them."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2

from tests.procs import free_port, http_ok, running
from wsgate_common.grpc_tls import GrpcTls, from_pki_dir
from wsgate_common.resources import (
    APPLICATION_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
    SUBSCRIPTION_DATA_TYPE_URLS,
    SUBSCRIPTION_TYPE_URL,
    THROTTLE_POLICY_TYPE_URL,
)
from wsgate_common.xds_client import XdsClient
from wsgate_proto import deploy_pb2_grpc
from wsgate_proto import subscription_pb2 as sp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, GrpcTls]]:
    """(deploy address, xDS address, mTLS with its pki) of one adapter process."""
    data_dir: Path = tmp_path_factory.mktemp("adapter-subs")
    rest, xds, deploy = free_port(), free_port(), free_port()
    args = ["adapter", "--host", "127.0.0.1", "--rest-port", str(rest)]
    args += ["--xds-port", str(xds), "--deploy-port", str(deploy)]
    with running(
        "adapter",
        args,
        {"WSGATE_DATA_DIR": str(data_dir)},
        data_dir,
        lambda: http_ok(f"https://127.0.0.1:{rest}/ready"),
    ):
        yield f"127.0.0.1:{deploy}", f"127.0.0.1:{xds}", from_pki_dir(data_dir / "pki")


class Held:
    """What one xDS client holds: resource names per type, and when each type last changed."""

    def __init__(self) -> None:
        self.items: dict[str, list[any_pb2.Any]] = {}
        self.changed_at: dict[str, float] = {}

    def handler(self, type_url: str) -> Callable[[str, list[any_pb2.Any]], None]:
        def apply(version: str, resources: list[any_pb2.Any]) -> None:
            for resource in resources:
                if resource.type_url != type_url:
                    raise ValueError(f"got {resource.type_url}")
            self.items[type_url] = resources
            self.changed_at[type_url] = time.perf_counter()

        return apply

    def client(self, xds: str, label: str, tls: GrpcTls) -> XdsClient:
        handlers = {t: self.handler(t) for t in SUBSCRIPTION_DATA_TYPE_URLS}
        return XdsClient(xds, label, handlers, tls=tls)

    def count(self, type_url: str) -> int:
        return len(self.items.get(type_url, []))


async def until(check: Callable[[], bool], what: str, limit: float = 10) -> None:
    try:
        async with asyncio.timeout(limit):
            while not check():  # noqa: ASYNC110 (polls state owned by the xDS client task)
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def small_set(with_subscription: bool = True) -> sp.SubscriptionData:
    jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": "sXch", "e": "AQAB"}]})
    return sp.SubscriptionData(
        applications=[sp.Application(id="app-1", name="App", owner="bob", tier="Unlimited")],
        subscriptions=(
            [sp.Subscription(id="sub-1", api_id="api-1", application_id="app-1", tier="Gold")]
            if with_subscription
            else []
        ),
        key_mappings=[
            sp.KeyMapping(consumer_key="ck-1", application_id="app-1", key_type="PRODUCTION")
        ],
        policies=[sp.ThrottlePolicy(name="Gold", kind="subscription", message_count=5000)],
        key_managers=[
            sp.KeyManager(name="cp", issuer="https://cp", algorithms=["RS256"], jwks_json=jwks)
        ],
        revoked_tokens=[sp.RevokedToken(jti="j-1", expires_at=2_000_000_000)],
    )


def has_one_of_each(held: Held) -> bool:
    return all(held.count(t) == 1 for t in SUBSCRIPTION_DATA_TYPE_URLS)


async def put(address: str, data: sp.SubscriptionData, tls: GrpcTls) -> dict[str, str]:
    async with tls.aio_channel(address) as channel:
        stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
        response = await stub.PutSubscriptionData(data, timeout=30)
    return dict(response.versions)


async def test_put_reaches_every_label_and_is_replaced(adapter: tuple[str, str, GrpcTls]) -> None:
    deploy, xds, tls = adapter
    default, edge = Held(), Held()
    clients = [default.client(xds, "Default", tls), edge.client(xds, "Edge", tls)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 10)
        versions = await put(deploy, small_set(), tls)
        assert {"Default", "Edge"} <= set(versions)
        for held in (default, edge):
            await until(functools.partial(has_one_of_each, held), "all six types")
        sub = sp.Subscription.FromString(default.items[SUBSCRIPTION_TYPE_URL][0].value)
        assert (sub.id, sub.application_id, sub.api_id) == ("sub-1", "app-1", "api-1")
        assert sp.Application.FromString(edge.items[APPLICATION_TYPE_URL][0].value).owner == "bob"
        assert sp.KeyMapping.FromString(edge.items[KEY_MAPPING_TYPE_URL][0].value).key_type == (
            "PRODUCTION"
        )
        assert (
            sp.ThrottlePolicy.FromString(
                edge.items[THROTTLE_POLICY_TYPE_URL][0].value
            ).message_count
            == 5000
        )
        assert sp.KeyManager.FromString(edge.items[KEY_MANAGER_TYPE_URL][0].value).name == "cp"
        assert sp.RevokedToken.FromString(edge.items[REVOKED_TOKEN_TYPE_URL][0].value).jti == "j-1"

        # The second set drops the subscription: only that type changes.
        before = dict(clients[0].versions)
        await put(deploy, small_set(with_subscription=False), tls)
        await until(lambda: default.count(SUBSCRIPTION_TYPE_URL) == 0, "the removal")
        await until(lambda: edge.count(SUBSCRIPTION_TYPE_URL) == 0, "the removal on Edge")
        after = clients[0].versions
        moved = {t for t in SUBSCRIPTION_DATA_TYPE_URLS if after[t] != before[t]}
        assert moved == {SUBSCRIPTION_TYPE_URL}

        # A label whose first client comes later gets the current set too.
        late = Held()
        late_client = late.client(xds, "Late", tls)
        tasks.append(asyncio.create_task(late_client.run()))
        await asyncio.wait_for(late_client.ready.wait(), 10)
        assert late.count(APPLICATION_TYPE_URL) == 1
        assert late.count(SUBSCRIPTION_TYPE_URL) == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_garbage_is_refused_and_changes_nothing(adapter: tuple[str, str, GrpcTls]) -> None:
    deploy, _, tls = adapter
    await put(deploy, small_set(), tls)
    bad = small_set()
    bad.subscriptions.add(id="sub-1", api_id="api-2", application_id="ghost")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await put(deploy, bad, tls)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "'sub-1' appears twice" in details and "unknown application 'ghost'" in details


def big_set(applications: int = 1_000, subscriptions: int = 10_000) -> sp.SubscriptionData:
    data = sp.SubscriptionData()
    for a in range(applications):
        data.applications.add(
            id=f"app-{a:05d}", name=f"Application {a}", owner=f"user{a}", tier="10PerMin"
        )
        data.key_mappings.add(
            consumer_key=f"ck-{a:05d}", application_id=f"app-{a:05d}", key_type="PRODUCTION"
        )
    per_app = subscriptions // applications
    for s in range(subscriptions):
        data.subscriptions.add(
            id=f"sub-{s:06d}",
            api_id=f"api-{s // applications:04d}",
            application_id=f"app-{s % applications:05d}",
            tier="AsyncGold",
            state="UNBLOCKED",
        )
    assert per_app * applications == subscriptions
    data.policies.add(
        name="AsyncGold", kind="subscription", message_count=200, unit_time=1, time_unit="min"
    )
    return data


def has_big_set(held: Held, since: float) -> bool:
    return (
        held.count(SUBSCRIPTION_TYPE_URL) == 10_000
        and held.count(APPLICATION_TYPE_URL) == 1_000
        and held.changed_at.get(SUBSCRIPTION_TYPE_URL, 0) > since
    )


async def test_ten_thousand_subscriptions_time_to_client(adapter: tuple[str, str, GrpcTls]) -> None:
    deploy, xds, tls = adapter
    held = Held()
    client = held.client(xds, "Big", tls)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.ready.wait(), 10)
        data = big_set()
        timings = []
        for round_ in range(2):
            if round_:  # change one subscription's state so the set differs
                data.subscriptions[0].state = "BLOCKED"
            started = time.perf_counter()
            await put(deploy, data, tls)
            acked = time.perf_counter()
            await until(
                functools.partial(has_big_set, held, started),
                "10,000 subscriptions on the client",
                limit=30,
            )
            done = held.changed_at[SUBSCRIPTION_TYPE_URL]
            timings.append((acked - started, done - started))
        print(
            "\nPutSubscriptionData 10,000 subscriptions + 1,000 applications: "
            + "; ".join(
                f"round {i + 1}: Put answered {a * 1000:.0f} ms, "
                f"applied by client {d * 1000:.0f} ms"
                for i, (a, d) in enumerate(timings)
            )
        )
        assert all(d < 10 for _, d in timings)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
