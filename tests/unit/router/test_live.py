"""Live-connection behaviour of the router, in-process on free ports: per-message throttling,
closes by enforcer rule (WatchConnections) and at token expiry.

The backend is a real `websockets` echo server; the enforcer is a TEST DOUBLE (in-process
grpc.aio HandshakeService): its Check answers the verdict registered for the bearer token, its
WatchConnections streams the rules the test puts in its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest
from redis import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from router.config import RouteStore
from router.enforcer_client import EnforcerClient
from router.native import NativeRelay
from router.redis_store import build_store
from router.registry import Identity
from router.relay import Relay
from router.rules import RuleWatcher
from router.server import Router, RouterConfig
from tests import relay_paths
from tests.procs import PROMPT, import_or_unavailable, unavailable
from tests.relay_paths import check_reported
from tests.unit.router.test_server import active, event_loop_policy, packed
from wsgate_common.metrics import parse_samples
from wsgate_proto import config_pb2, enforcer_pb2, enforcer_pb2_grpc

THROTTLED = "wsgate_router_messages_throttled_total"
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable() -> bool:
    try:
        return bool(Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


BYTES_DOWN = 'wsgate_router_bytes_total{direction="down"}'

__all__ = ["event_loop_policy"]  # the fixture, imported: every test on both loops

pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')


@dataclass
class Backend:
    received: list[str | bytes] = field(default_factory=list)
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    finish_half: asyncio.Event = field(default_factory=asyncio.Event)


class Enforcer(enforcer_pb2_grpc.HandshakeServiceServicer):
    """Check: the verdict registered for the bearer token. WatchConnections: queued rules."""

    def __init__(self) -> None:
        self.verdicts: dict[str, enforcer_pb2.HandshakeResponse] = {}
        self.rules: asyncio.Queue[enforcer_pb2.ConnectionRule] = asyncio.Queue()
        self.watchers = 0
        # Reconcile: subscription id -> the reason the enforcer refuses it now.
        self.refused: dict[str, str] = {}
        self.reconciles: list[enforcer_pb2.ReconcileRequest] = []
        self.unavailable = 0  # answer UNAVAILABLE this many times first

    async def Check(
        self, request: enforcer_pb2.HandshakeRequest, context: grpc.aio.ServicerContext
    ) -> enforcer_pb2.HandshakeResponse:
        token = request.authorization.removeprefix("Bearer ")
        return self.verdicts.get(token) or enforcer_pb2.HandshakeResponse(
            allowed=True, key_type="PRODUCTION", token_id=token
        )

    async def Reconcile(
        self, request: enforcer_pb2.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> enforcer_pb2.ReconcileResponse:
        self.reconciles.append(request)
        if self.unavailable > 0:
            self.unavailable -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no complete state yet")
        return enforcer_pb2.ReconcileResponse(
            closes=[
                enforcer_pb2.ReconcileClose(
                    index=i, close_code=1008, reason=self.refused[c.subscription_id]
                )
                for i, c in enumerate(request.connections)
                if c.subscription_id in self.refused
            ]
        )

    async def WatchConnections(
        self, request: enforcer_pb2.WatchConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[enforcer_pb2.ConnectionRule]:
        self.watchers += 1
        await context.send_initial_metadata(())
        while True:
            yield await self.rules.get()


@dataclass
class Env:
    port: int
    grpc_port: int
    backend: Backend
    enforcer: Enforcer
    router: Router
    relay_path: str = "python"

    @property
    def python(self) -> bool:
        """The Python relay: its objects' internals may be inspected too."""
        return self.relay_path == "python"

    def metric(self, name: str) -> float:
        """One sample of the router's /metrics page: what both relay paths must report."""
        return parse_samples(self.router.metrics_text().decode()).get(name, 0.0)

    def url(self, path: str = "/echo/1.0.0") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def allow(self, token: str, *quotas: enforcer_pb2.Quota, **fields: object) -> None:
        verdict = enforcer_pb2.HandshakeResponse(
            allowed=True, key_type="PRODUCTION", token_id="jti-" + token, quotas=list(quotas)
        )
        for name, value in fields.items():
            setattr(verdict, name, value)
        self.enforcer.verdicts[token] = verdict

    def client(self, token: str, path: str = "/echo/1.0.0") -> connect:
        return connect(self.url(path), additional_headers={"Authorization": f"Bearer {token}"})

    def relay_of(self, token: str) -> Relay | NativeRelay:
        for live in self.router.live.registry.match(token_id="jti-" + token):
            if live.relay is not None:
                return live.relay
        raise AssertionError(f"no live relay for {token}")


async def backend_handler(ws: ServerConnection, log: Backend) -> None:
    assert ws.request is not None
    try:
        if ws.request.path == "/push":
            # One message from the client says how many the backend pushes unprompted.
            count = int(await ws.recv())
            for i in range(count):
                await ws.send(f"push {i}")
            await ws.wait_closed()
            return
        if ws.request.path == "/half":
            # A 1000-byte binary frame sent in two halves, the second once the test says so.
            await ws.recv()
            assert ws.transport is not None
            ws.transport.write(b"\x82\x7e\x03\xe8" + b"h" * 500)
            await log.finish_half.wait()
            ws.transport.write(b"h" * 500)
            await asyncio.sleep(10)
            return
        async for message in ws:
            log.received.append(message)
            await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        log.closes.append((ws.close_code, ws.close_reason or ""))


@pytest.fixture
async def env(relay_path: str) -> AsyncIterator[Env]:
    """A router on each relay path: quotas and live closes must act the same on both."""
    log = Backend()

    async def slow_handshake(ws: ServerConnection, request: object) -> None:
        if ws.request is not None and ws.request.path == "/slow":
            await asyncio.sleep(0.5)

    backend = await serve(
        lambda ws: backend_handler(ws, log), "127.0.0.1", 0, process_request=slow_handshake
    )
    backend_port = next(iter(backend.sockets)).getsockname()[1]
    enforcer = Enforcer()
    grpc_server = grpc.aio.server()
    enforcer_pb2_grpc.add_HandshakeServiceServicer_to_server(enforcer, grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    url = f"ws://127.0.0.1:{backend_port}"
    route = config_pb2.Route(
        api_id="echo-id",
        api_name="Echo",
        api_version="1.0.0",
        vhost="localhost",
        base_path="/echo/1.0.0",
        topics=[
            config_pb2.RouteTopic(path="/", production_url=url + "/echo"),
            config_pb2.RouteTopic(path="/half", production_url=url + "/half"),
            config_pb2.RouteTopic(path="/slow", production_url=url + "/slow"),
        ],
    )
    push = config_pb2.Route(
        api_id="push-id",
        api_name="Push",
        api_version="1.0.0",
        vhost="localhost",
        base_path="/push/1.0.0",
        topics=[config_pb2.RouteTopic(path="/", production_url=url + "/push")],
    )
    store = RouteStore()
    store.apply("v1", packed([route, push]))
    router = Router(RouterConfig(relay=relay_path), store, EnforcerClient(f"127.0.0.1:{grpc_port}"))
    check_reported(router.metrics_text().decode(), relay_path)
    port = await router.listen("127.0.0.1", 0)
    try:
        yield Env(port, grpc_port, log, enforcer, router, relay_path)
    finally:
        await router.shutdown(drain=0.5)
        backend.close()
        await grpc_server.stop(0)


def quota(key: str, n: int, window: float = 10.0, stop: bool = True) -> enforcer_pb2.Quota:
    return enforcer_pb2.Quota(
        key=key, policy=f"{n}PerWindow", message_count=n, window_seconds=window,
        stop_on_quota_reach=stop,
    )  # fmt: skip


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 3)
    assert info.value.rcvd is not None, "no close frame from the router"
    return info.value.rcvd.code, info.value.rcvd.reason


async def echo(ws: ClientConnection, message: str) -> None:
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 3) == message


async def wait_until(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- throttling ----------------------------------------------------------------------------
# Both directions count against a connection's quotas, one counter per quota key: an echo
# (the message up, the same message down) uses two.


async def test_quota_reached_closes_with_1008_throttled_out(env: Env) -> None:
    env.allow("t", quota("sub:app:echo-id", 10))
    async with env.client("t") as ws:
        for i in range(5):
            await echo(ws, f"m{i}")
        await ws.send("m5")
        assert await closed_with(ws) == (1008, "message throttled out")
    await wait_until(lambda: len(env.backend.closes) == 1)
    assert env.backend.received == [f"m{i}" for i in range(5)]  # the 6th never reached it
    assert env.backend.closes[0][0] == 1001  # the backend is told the client went away
    await wait_until(lambda: active(env.router) == 0 and not len(env.router.live))


async def test_drop_mode_drops_silently_and_keeps_the_connection(env: Env) -> None:
    env.allow("t", quota("sub:app:echo-id", 10, stop=False))
    async with env.client("t") as ws:
        for i in range(5):
            await echo(ws, f"m{i}")
        await ws.send("dropped-1")
        await ws.send("dropped-2")
        pong = await ws.ping()  # control frames never count and still pass
        await asyncio.wait_for(pong, 3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        assert env.metric(THROTTLED) == 2
    assert env.backend.received == [f"m{i}" for i in range(5)]


async def test_the_answer_can_be_the_message_over_the_quota(env: Env) -> None:
    """An odd quota: the 3rd message up passes, its echo (the 4th message) is cut."""
    env.allow("t", quota("sub:app:echo-id", 3, stop=False))
    async with env.client("t") as ws:
        await echo(ws, "one")
        await ws.send("two")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        assert env.metric(THROTTLED) == 1
        relay = env.relay_of("t")
        assert relay.throttled == 1
        assert relay.scan_state()[:2] == (0, 1)
    assert env.backend.received == ["one", "two"]


async def test_fragments_count_as_one_message(env: Env) -> None:
    env.allow("t", quota("sub:app:echo-id", 4))
    async with env.client("t") as ws:
        await ws.send(["frag", "mented", "!"])  # one message in three frames
        assert await ws.recv() == "fragmented!"
        await echo(ws, "second")
        await ws.send("third")
        assert await closed_with(ws) == (1008, "message throttled out")


async def test_different_keys_do_not_affect_each_other(env: Env) -> None:
    env.allow("a", quota("sub:appA:echo-id", 4), application_id="appA")
    env.allow("b", quota("sub:appB:echo-id", 4), application_id="appB")
    async with env.client("a") as a, env.client("b") as b:
        await echo(a, "a1")
        await echo(a, "a2")
        await a.send("a3")
        assert await closed_with(a) == (1008, "message throttled out")
        await echo(b, "b1")
        await echo(b, "b2")


async def test_a_subscription_key_is_shared_across_connections(env: Env) -> None:
    env.allow("one", quota("sub:app:echo-id", 10))
    env.allow("two", quota("sub:app:echo-id", 10))
    async with env.client("one") as one, env.client("two") as two:
        for i in range(3):
            await echo(one, f"one{i}")
        await echo(two, "two0")
        await echo(two, "two1")
        await two.send("two2")
        assert await closed_with(two) == (1008, "message throttled out")
        await one.send("one3")  # the shared quota is used up for this one too
        assert await closed_with(one) == (1008, "message throttled out")


async def test_reconnecting_does_not_reset_the_quota(env: Env) -> None:
    env.allow("t", quota("app:app:user", 4))
    async with env.client("t") as ws:
        await echo(ws, "1")
        await echo(ws, "2")
    async with env.client("t") as ws:
        await ws.send("3")
        assert await closed_with(ws) == (1008, "message throttled out")


async def test_quotas_are_checked_in_order_api_first(env: Env) -> None:
    env.allow("t", quota("api:echo-id", 2, stop=False), quota("sub:app:echo-id", 2, stop=True))
    async with env.client("t") as ws:
        await echo(ws, "1")
        await ws.send("2")  # the API-level quota (drop) is reached first: no close
        pong = await ws.ping()
        await asyncio.wait_for(pong, 3)
    assert env.backend.received == ["1"]


# -- throttling backend -> client (a backend that pushes without being asked) ----------------


async def test_pushed_messages_reaching_the_quota_close_with_1008(env: Env) -> None:
    env.allow("t", quota("sub:app:push-id", 5))
    async with env.client("t", "/push/1.0.0") as ws:
        await ws.send("20")  # one message up: the backend then pushes 20
        got = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                got.append(await asyncio.wait_for(ws.recv(), 3))
        assert info.value.rcvd is not None, "no close frame from the router"
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "message throttled out")
    assert got == [f"push {i}" for i in range(4)]  # 1 up + 4 down = the quota of 5
    await wait_until(lambda: len(env.backend.closes) == 1)
    assert env.backend.closes[0][0] == 1001


async def test_drop_mode_keeps_compression_off_the_connection(env: Env) -> None:
    """A dropped message would break a permessage-deflate stream: drop mode strips the offer;
    stop mode (the connection ends at the first refusal) keeps it."""
    env.allow("drop", quota("sub:app:echo-id", 5, stop=False))
    env.allow("stop", quota("sub:app:echo-id2", 5, stop=True))
    async with env.client("drop") as dropping, env.client("stop") as stopping:
        assert dropping.response is not None and stopping.response is not None
        assert "Sec-WebSocket-Extensions" not in dropping.response.headers
        assert "permessage-deflate" in stopping.response.headers["Sec-WebSocket-Extensions"]
        await echo(dropping, "still works")


async def test_pushed_messages_over_the_quota_are_dropped_in_drop_mode(env: Env) -> None:
    env.allow("t", quota("sub:app:push-id", 5, stop=False))
    async with env.client("t", "/push/1.0.0") as ws:
        await ws.send("20")
        got = [await asyncio.wait_for(ws.recv(), 3) for _ in range(4)]
        relay = env.relay_of("t")
        await wait_until(lambda: env.metric(THROTTLED) == 16)  # 20 pushed, 4 passed
        await wait_until(lambda: relay.counts().messages_down == 20)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        assert got == [f"push {i}" for i in range(4)]
        assert relay.throttled == 16 and relay.scan_state().dropped_down == 16
        pong = await ws.ping()  # still open; control frames pass
        await asyncio.wait_for(pong, 3)


async def test_no_quota_means_the_plain_relay(env: Env) -> None:
    env.allow("t", quota("api:echo-id", 0))  # unlimited
    async with env.client("t") as ws:
        for i in range(20):
            await echo(ws, str(i))
        assert env.metric(THROTTLED) == 0
        relay = env.relay_of("t")
        assert relay.throttle is None and not relay.scan_state().gated


# -- rules (WatchConnections) ----------------------------------------------------------------


async def test_rule_closes_only_matching_connections(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.live")
    env.allow("a1", application_id="app1")
    env.allow("a2", application_id="app1", key_type="SANDBOX")
    env.allow("b", application_id="app2")
    async with env.client("a1") as a1, env.client("b") as b:
        await echo(a1, "x")
        await echo(b, "x")
        reason = "subscription blocked " + "é" * 80  # > 123 bytes: cut, UTF-8 safe
        closed = env.router.apply_rule(
            enforcer_pb2.ConnectionRule(
                application_id="app1", key_type="PRODUCTION", close_code=1008, reason=reason
            )
        )
        assert closed == 1
        code, got = await closed_with(a1)
        assert code == 1008 and reason.startswith(got) and len(got.encode()) in (122, 123)
        await echo(b, "still here")
    assert env.router.live.stats["closed_by_rule"] == 1
    assert any("closing" in r.message and "app=app1" in r.message for r in caplog.records)


async def test_rules_stream_from_the_enforcer_closes_within_a_second(env: Env) -> None:
    watcher = RuleWatcher(f"127.0.0.1:{env.grpc_port}", env.router.apply_rule, "test")
    task = asyncio.get_running_loop().create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.connected.wait(), 5)
        env.allow("t", application_id="app1")
        async with env.client("t") as ws:
            await echo(ws, "x")
            started = time.monotonic()
            await env.enforcer.rules.put(
                enforcer_pb2.ConnectionRule(token_id="jti-t", close_code=1008, reason="revoked")
            )
            assert await closed_with(ws) == (1008, "revoked")
            took = time.monotonic() - started
            print(f"\nrule -> close seen: {took * 1000:.0f} ms")
            assert took < PROMPT
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reconcile_on_stream_open_closes_what_the_enforcer_refuses_now(env: Env) -> None:
    """Live connections are sent as distinct identities; those refused close with 1008 and the
    enforcer's reason, the others (and one of the same application without a subscription, e.g.
    a test key) keep relaying. UNAVAILABLE (no complete state yet) is asked again."""
    env.allow("v1", application_id="app1", subscription_id="sub1")
    env.allow("b", application_id="app2", subscription_id="sub2")
    env.allow("k", application_id="app1")  # no subscription behind it
    env.enforcer.refused["sub1"] = "subscription removed"
    env.enforcer.unavailable = 2
    async with (
        env.client("v1") as v1a,
        env.client("v1") as v1b,
        env.client("b") as b,
        env.client("k") as k,
    ):
        for ws in (v1a, v1b, b, k):
            await echo(ws, "x")
        watcher = RuleWatcher(
            f"127.0.0.1:{env.grpc_port}",
            env.router.apply_rule,
            "test",
            backoff_initial=0.01,
            live=env.router.live,
        )
        task = asyncio.get_running_loop().create_task(watcher.run())
        try:
            await asyncio.wait_for(watcher.reconciled.wait(), 5)
            assert await closed_with(v1a) == (1008, "subscription removed")
            assert await closed_with(v1b) == (1008, "subscription removed")
            await echo(b, "still here")
            await echo(k, "still here")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert (watcher.reconciles, watcher.reconcile_closed) == (1, 2)
    assert len(env.enforcer.reconciles) == 3  # two UNAVAILABLE, then answered
    sent = env.enforcer.reconciles[-1]
    assert sent.router_id == "test"
    assert sorted((c.token_id, c.application_id, c.subscription_id) for c in sent.connections) == [
        ("jti-b", "app2", "sub2"),
        ("jti-k", "app1", ""),
        ("jti-v1", "app1", "sub1"),  # two connections, one identity
    ]
    assert {(c.api_id, c.key_type) for c in sent.connections} == {("echo-id", "PRODUCTION")}


async def test_rule_racing_the_check_is_replayed_at_registration(env: Env) -> None:
    checked_at = time.monotonic()  # the Check was sent before the rule arrived
    env.router.apply_rule(enforcer_pb2.ConnectionRule(token_id="jti-t", reason="revoked"))
    live = env.router.live.begin(Identity.of("jti-t", "", "echo-id", "PRODUCTION"), checked_at)
    assert live.doom is not None and live.doom[:2] == (1008, "revoked")
    env.router.live.end(live)
    assert not len(env.router.live)
    env.allow("t")  # a handshake checked after the rule is not touched by it
    async with env.client("t") as ws:
        await echo(ws, "x")


async def test_rule_during_the_backend_handshake_closes_right_after_it(env: Env) -> None:
    env.allow("t")
    pending = asyncio.get_running_loop().create_task(
        env.client("t", "/echo/1.0.0/slow").__aenter__()
    )
    await wait_until(lambda: len(env.router.live) == 1)  # allowed, backend still connecting
    assert active(env.router) == 0
    assert env.router.apply_rule(enforcer_pb2.ConnectionRule(token_id="jti-t", reason="gone")) == 0
    ws = await asyncio.wait_for(pending, 3)
    try:
        assert await closed_with(ws) == (1008, "gone")
    finally:
        await ws.close()
    assert env.router.live.stats["closed_by_rule"] == 1


async def test_close_waits_for_the_frame_in_flight(env: Env) -> None:
    env.allow("t")
    async with env.client("t", "/echo/1.0.0/half") as ws:
        await ws.send("go")
        relay = env.relay_of("t")
        await wait_until(lambda: env.metric(BYTES_DOWN) >= 504 and relay.counts().bytes_down >= 504)
        assert not relay.scan_state().at_boundary_down
        env.router.apply_rule(enforcer_pb2.ConnectionRule(token_id="jti-t", reason="blocked"))
        await asyncio.sleep(0.1)
        env.backend.finish_half.set()
        assert await asyncio.wait_for(ws.recv(), 3) == b"h" * 1000  # the frame is whole
        assert await closed_with(ws) == (1008, "blocked")


async def test_a_frame_that_never_ends_drops_the_connection_after_a_second(env: Env) -> None:
    env.allow("t")
    async with env.client("t", "/echo/1.0.0/half") as ws:
        await ws.send("go")
        relay = env.relay_of("t")
        await wait_until(lambda: relay.counts().bytes_down >= 504)
        started = time.monotonic()
        env.router.apply_rule(enforcer_pb2.ConnectionRule(token_id="jti-t", reason="blocked"))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
        assert info.value.rcvd is None  # no close frame could be injected mid-frame
        assert 0.9 < time.monotonic() - started < 2.0
    await wait_until(lambda: active(env.router) == 0)


# -- token expiry ----------------------------------------------------------------------------


async def test_token_expiry_closes_with_1008(env: Env) -> None:
    # expiry is in whole seconds: at least 1 s ahead (int(time.time()) + 1 could be 10 ms
    # away, gone before a loaded box finished the handshake and the first echo)
    env.allow("soon", token_expires_at=int(time.time()) + 2, application_id="app1")
    env.allow("later", token_expires_at=int(time.time()) + 3600)
    async with env.client("soon") as soon, env.client("later") as later:
        await echo(soon, "x")
        assert await closed_with(soon) == (1008, "token expired")
        await echo(later, "still here")
        assert env.router.live.stats["token_expired"] == 1
        expiry = env.router.live.registry.match(token_id="jti-later")[0].expiry
        assert expiry is not None
    await wait_until(lambda: not len(env.router.live))
    assert expiry.cancelled()  # the timer went with the connection


@relay_paths.native_relay_only
async def test_quotas_leased_from_redis_run_on_the_core(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """With the Redis-leased store (the real Redis at 127.0.0.1:6379), connections with quotas
    run on the core, which consumes the permits the store leases: traffic under the limit all
    passes, what is beyond it is dropped, and Redis counts exactly what was used."""
    import_or_unavailable("router._core")
    if not redis_reachable():
        unavailable(f"no Redis answers at {REDIS_URL}")
    prefix = f"wsgate-test:{uuid.uuid4().hex}:"
    store = build_store(REDIS_URL, prefix=prefix)
    hub = env.router.native
    assert hub is not None
    env.router.counters = store
    hub.use_leases(store)  # what Router() does when given a RedisCounterStore
    env.allow("q", quota("sub:app:echo-id", 1000, window=30.0, stop=False))
    env.allow("free")
    try:
        with caplog.at_level(logging.INFO, logger="router.server"):
            async with env.client("q") as limited, env.client("free") as free:
                for i in range(20):  # 40 messages, well under the limit: all pass
                    await echo(limited, f"m{i}")
                    await asyncio.sleep(0.02)
                await echo(free, "b")
                relay = env.relay_of("q")
                assert type(relay) is NativeRelay
                assert type(env.relay_of("free")) is NativeRelay
                for i in range(600):  # then 1200 more offered (up + echo) for 960 left,
                    await limited.send(f"over{i}")  # paced (a burst in one read is cut to
                    await asyncio.sleep(0.001)  # the lease in hand, on either path)
                echoed = 0
                with contextlib.suppress(TimeoutError):
                    while True:
                        await asyncio.wait_for(limited.recv(), 0.5)
                        echoed += 1
                assert relay.throttled > 0
        up = [m for m in env.backend.received if str(m).startswith("over")]
        admitted = 40 + len(up) + echoed
        print(f"\nleased on the core: {admitted} admitted for a limit of 1000")
        assert admitted <= 1000 + 4  # the limit, plus the credit bound of router/lease.py
        assert admitted >= 900  # the permits left were used, not stranded in the pool
        await wait_until(lambda: not hub.pumps)  # the last connection gave its permits back
        await asyncio.sleep(0.2)
        counted = Redis.from_url(REDIS_URL)
        keys = list(counted.scan_iter(match=prefix + "*"))
        assert len(keys) == 1
        used = sum(int(v) for v in counted.hgetall(keys[0]).values())
        # every message that passed is counted in Redis (permits not used may still be
        # reserved: they go back with the next request or expire with the window)
        assert admitted <= used <= 1004, (admitted, used)
        assert store.stats.degraded_admits == 0
        assert not [r for r in caplog.records if "Python relay" in r.getMessage()]
    finally:
        await store.close()
        client = Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
