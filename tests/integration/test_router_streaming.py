"""User stories about what the router counts and limits on a stream, with a real adapter,
enforcer and router processes (two routers: one stripping compression) and a backend of the
test's own that echoes or pushes messages unprompted.

- A subscriber on a tiny subscription tier (5 messages a minute) gets at most 5 messages in
  total, both directions counted: pushed messages beyond it are dropped, or the connection is
  closed with 1008 when the tier says "stop on quota reach".
- /metrics counts exactly what was relayed even though the analytics queue holds one event.
- With permessage-deflate negotiated the size limit sees compressed bytes: a router set to
  ``strip`` keeps compression off the backend link so a 2 MiB message is refused with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from enforcer.testkey import public_jwk
from tests.backends import ThreadedBackend
from tests.integration.adapter_enforcer import AdapterEnforcer, adapter_and_enforcer
from tests.procs import free_port, http_ok, running, wait_for
from tests.relay_paths import check_router, relay_env
from wsgate_common.metrics import parse_samples
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc
from wsgate_proto import subscription_pb2 as sp

pytestmark = pytest.mark.integration

ISSUER = "https://idp.example.test/oauth2/token"
KID = "streaming-key"
TINY = 5  # messages per minute on the tiny tiers
MIB = 1024 * 1024


@dataclass
class Backend(ThreadedBackend):
    """``/echo`` echoes; ``/push`` pushes as many messages as the first one it gets says."""

    pushed: int = 0
    pushes_done: threading.Event = field(default_factory=threading.Event)
    extensions: list[str] = field(default_factory=list)  # what each connection negotiated

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.extensions.append(
            ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else ""
        )
        try:
            if ws.request.path == "/push":
                count = int(await ws.recv())
                for i in range(count):
                    await ws.send(f"push {i}")
                    self.pushed += 1
                self.pushes_done.set()
                await ws.wait_closed()
                return
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass


@dataclass
class Plane:
    pair: AdapterEnforcer
    backend: Backend
    key: rsa.RSAPrivateKey
    routers: dict[str, int] = field(default_factory=dict)  # name -> ws port
    data_dir: Path = field(default_factory=Path)  # the adapter's and enforcer's (and CA)

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "bob",
            "azp": "ck-stream",
            "keytype": "PRODUCTION",
            "jti": f"j-{time.monotonic_ns()}",
            "iat": now,
            "exp": now + 600,
        }
        return jwt.encode(claims, self.key, "RS256", headers={"kid": KID})

    def url(self, router: str, api: str) -> str:
        return f"ws://127.0.0.1:{self.routers[router]}/{api}/1.0.0/notifications"

    def connect(self, router: str, api: str, **options: object) -> connect:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return connect(
            self.url(router, api), additional_headers=headers, open_timeout=20, **options
        )  # type: ignore[arg-type]

    def metrics(self, router: str) -> dict[str, float]:
        page = httpx.get(f"http://127.0.0.1:{self.routers[router]}/metrics", timeout=10)
        assert page.status_code == 200
        return parse_samples(page.text)


def api(api_id: str, context: str, endpoint: str, tier: str) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        name=api_id,
        version="1.0.0",
        context=context,
        api_type="WS",
        provider="admin",
        lifecycle_status="PUBLISHED",
        production_endpoint=definition_pb2.Endpoint(url=endpoint),
        sandbox_endpoint=definition_pb2.Endpoint(url=endpoint),
        operations=[definition_pb2.Operation(target="/notifications", verb="SUBSCRIBE")],
        policies=[tier],
        api_throttling_policy="Unlimited",
        source="control-plane",
    )


def subscription_data(key: rsa.RSAPrivateKey) -> sp.SubscriptionData:
    jwks = {"keys": [{**public_jwk(key.public_key()), "kid": KID, "alg": "RS256", "use": "sig"}]}
    subs = {"tinystop": "TinyStop", "tinydrop": "TinyDrop", "free": "Unlimited"}
    return sp.SubscriptionData(
        applications=[sp.Application(id="app-s", name="S", owner="bob", tier="Unlimited")],
        subscriptions=[
            sp.Subscription(
                id=f"sub-{name}", api_id=name, application_id="app-s", tier=tier, state="UNBLOCKED"
            )
            for name, tier in subs.items()
        ],
        key_mappings=[
            sp.KeyMapping(consumer_key="ck-stream", application_id="app-s", key_type="PRODUCTION")
        ],
        policies=[
            sp.ThrottlePolicy(
                name="TinyStop",
                kind="subscription",
                message_count=TINY,
                unit_time=1,
                time_unit="min",
                stop_on_quota_reach=True,
            ),
            sp.ThrottlePolicy(
                name="TinyDrop",
                kind="subscription",
                message_count=TINY,
                unit_time=1,
                time_unit="min",
                stop_on_quota_reach=False,
            ),
            sp.ThrottlePolicy(name="Unlimited", kind="subscription"),
            sp.ThrottlePolicy(name="Unlimited", kind="application"),
            sp.ThrottlePolicy(name="Unlimited", kind="api"),
        ],
        key_managers=[
            sp.KeyManager(
                name="Streaming IdP",
                issuer=ISSUER,
                algorithms=["RS256"],
                jwks_json=json.dumps(jwks),
                consumer_key_claim="azp",
            )
        ],
    )


ROUTERS = {
    # the analytics queue holds one event and is flushed once a minute: it drops nearly all
    "default": {"WSGATE_ROUTER_ANALYTICS_QUEUE": "1", "WSGATE_ROUTER_ANALYTICS_INTERVAL": "60"},
    "strip": {"WSGATE_ROUTER_COMPRESSION": "strip"},
}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """Adapter, enforcer, backend and the three APIs, shared by both relay paths' routers."""
    data_dir: Path = tmp_path_factory.mktemp("streaming")
    backend = Backend()
    backend.start()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        with adapter_and_enforcer(data_dir) as pair:
            base = f"ws://127.0.0.1:{backend.port}"
            with pair.tls.channel(pair.deploy_address) as channel:
                stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
                for definition in (
                    api("tinystop", "/tinystop", f"{base}/push", "TinyStop"),
                    api("tinydrop", "/tinydrop", f"{base}/push", "TinyDrop"),
                    api("free", "/free", f"{base}/echo", "Unlimited"),
                ):
                    stub.Deploy(deploy_pb2.DeployRequest(api=definition), timeout=10)
                stub.PutSubscriptionData(subscription_data(key), timeout=10)
            yield Plane(pair, backend, key, data_dir=data_dir)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def plane(deployed: Plane, relay_path: str) -> Iterator[Plane]:
    """The ROUTERS, each on ``relay_path``, in front of the deployed APIs."""
    pair = deployed.pair
    data_dir = deployed.data_dir
    plane = Plane(pair, deployed.backend, deployed.key, data_dir=data_dir)
    with contextlib.ExitStack() as procs:
        for name, extra in ROUTERS.items():
            port = free_port()
            env = {
                "WSGATE_DATA_DIR": str(data_dir),
                "WSGATE_LABEL": "Default",
                "WSGATE_ROUTER_HOST": "127.0.0.1",
                "WSGATE_ROUTER_PORT": str(port),
                "WSGATE_ROUTER_TLS_PORT": str(free_port()),
                "WSGATE_XDS_ADDRESS": pair.xds_address,
                "WSGATE_ENFORCER_ADDRESS": pair.enforcer_address,
                "WSGATE_ENFORCER_HTTP_URL": pair.enforcer_http,
                "PYTHONUNBUFFERED": "1",
                **relay_env(relay_path),
                **extra,
            }
            ready = f"http://127.0.0.1:{port}/ready"
            procs.enter_context(
                running(
                    f"router-{name}-{relay_path}",
                    ["router"],
                    env,
                    data_dir,
                    lambda ready=ready: http_ok(ready),  # type: ignore[misc]
                    timeout=60,
                )
            )
            check_router(port, relay_path)
            plane.routers[name] = port
        for name in ROUTERS:
            wait_for(lambda name=name: _echoes(plane, name), 30, f"router {name} to relay")
        yield plane


def _echoes(plane: Plane, router: str) -> bool:
    async def once() -> bool:
        async with plane.connect(router, "free") as ws:
            await ws.send("ping")
            return await asyncio.wait_for(ws.recv(), 5) == "ping"

    try:
        return asyncio.run(once())
    except Exception:
        return False


# -- 1. streaming limits count both directions -------------------------------------------------


def test_pushed_messages_over_a_stop_tier_close_the_connection_with_1008(plane: Plane) -> None:
    async def scenario() -> tuple[list[str | bytes], int, str]:
        got: list[str | bytes] = []
        async with plane.connect("default", "tinystop") as ws:
            await ws.send("50")  # one message up; the backend then pushes 50
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    got.append(await asyncio.wait_for(ws.recv(), 10))
        assert info.value.rcvd is not None, "no close frame from the router"
        return got, info.value.rcvd.code, info.value.rcvd.reason

    got, code, reason = asyncio.run(scenario())
    assert (code, reason) == (1008, "message throttled out")
    assert got == [f"push {i}" for i in range(TINY - 1)]  # 1 up + 4 down = the tier's 5


def test_pushed_messages_over_a_drop_tier_are_dropped(plane: Plane) -> None:
    async def scenario() -> list[str | bytes]:
        async with plane.connect("default", "tinydrop") as ws:
            before = plane.backend.pushed
            plane.backend.pushes_done.clear()
            await ws.send("30")
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(TINY - 1)]
            assert await asyncio.to_thread(plane.backend.pushes_done.wait, 20)
            assert plane.backend.pushed == before + 30, "the backend did not push them all"
            with pytest.raises(TimeoutError):  # the other 26 never reach the client
                got.append(await asyncio.wait_for(ws.recv(), 1.0))
            pong = await ws.ping()  # still open, control frames pass
            await asyncio.wait_for(pong, 10)
            return got

    assert asyncio.run(scenario()) == [f"push {i}" for i in range(TINY - 1)]
    throttled = plane.metrics("default")["wsgate_router_messages_throttled_total"]
    assert throttled >= 30 - (TINY - 1), throttled


# -- 5. metrics are exact --------------------------------------------------------------------


def test_metrics_count_every_message_although_analytics_drops(plane: Plane) -> None:
    wait_for(
        lambda: plane.metrics("default")["wsgate_router_connections_active"] == 0,
        20,
        "earlier connections to end",
    )
    before = plane.metrics("default")

    async def traffic() -> tuple[int, int]:
        sent = received = 0
        for i in range(8):
            async with plane.connect("default", "free") as ws:
                for j in range(i + 3):
                    await ws.send(f"m{i}-{j}")
                    sent += 1
                    assert await asyncio.wait_for(ws.recv(), 10) == f"m{i}-{j}"
                    received += 1
        return sent, received

    sent, received = asyncio.run(traffic())
    wait_for(
        lambda: plane.metrics("default")["wsgate_router_connections_active"] == 0, 20, "closes"
    )
    after = plane.metrics("default")

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    print(f"sent {sent}, received {received}, analytics dropped", moved(DROPPED))
    assert moved(DROPPED) > 0, "the tiny analytics queue was expected to drop events"
    assert moved('wsgate_router_messages_total{direction="up"}') == sent
    assert moved('wsgate_router_messages_total{direction="down"}') == received
    # every message and one close frame each way per connection
    assert moved('wsgate_router_frames_total{direction="up"}') == sent + 8
    assert moved('wsgate_router_handshakes_total{result="allowed",status="101"}') == 8
    assert moved('wsgate_router_connection_closes_total{by="client",code="1000"}') == 8


DROPPED = "wsgate_router_analytics_dropped_total"


# -- 11. compressed messages and the size limit ------------------------------------------------


async def _send_big(plane: Plane, router: str) -> tuple[str, object]:
    """A 2 MiB message that deflates to a few KiB, from the python websockets client with its
    default compression; returns the extensions the client got and the echo or close code."""
    message = b"a" * (2 * MIB)
    async with plane.connect(router, "free", max_size=None) as ws:
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else ""
        try:
            # The router may close with 1009 while the client is still writing the message.
            await ws.send(message)
            echoed = await asyncio.wait_for(ws.recv(), 20)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "no close frame from the router"
            return negotiated, (exc.rcvd.code, exc.rcvd.reason)
        return negotiated, len(echoed)


def _backend_extensions(plane: Plane, seen: int) -> str:
    """What the backend negotiated on the connection after the first ``seen``: its handler
    runs on the backend's own thread and may record it after the client is done."""
    wait_for(lambda: len(plane.backend.extensions) > seen, 10, "the backend's connection")
    assert len(plane.backend.extensions) == seen + 1, plane.backend.extensions[seen:]
    return plane.backend.extensions[seen]


def test_strip_refuses_a_compressible_2_mib_message_with_1009(plane: Plane) -> None:
    seen = len(plane.backend.extensions)
    negotiated, outcome = asyncio.run(_send_big(plane, "strip"))
    assert "permessage-deflate" not in negotiated
    assert isinstance(outcome, tuple) and outcome[0] == 1009, outcome
    assert _backend_extensions(plane, seen) == ""  # the backend was never offered compression


def test_passthrough_lets_the_compressed_message_through(plane: Plane) -> None:
    """Today's (and the default) behaviour: the limit applies to the compressed size."""
    seen = len(plane.backend.extensions)
    negotiated, outcome = asyncio.run(_send_big(plane, "default"))
    assert "permessage-deflate" in negotiated
    assert outcome == 2 * MIB
    assert "permessage-deflate" in _backend_extensions(plane, seen)
