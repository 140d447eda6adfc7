"""Global throttling across three REAL router processes sharing one Redis.

One echo backend, adapter and enforcer; an API whose apiThrottlingPolicy names an API-level
ThrottlePolicy (sent through the adapter's PutSubscriptionData), so every testkey connection
counts against one key, ``api:<id>``, in every router. Clients on three routers offer more
than the limit; the messages the backend receives (= the messages the routers admitted) are
counted per sliding window. The backend answers nothing: quotas count both directions, so
echoes would use the same quota and blur what is measured.

- the limit holds within 1% across the routers on a Redis of the test's own (a private
  redis-server, never the machine's shared one), over several windows;
- a Redis of the test's own, killed mid-test: fail-open routers fall back to limit / 3 each,
  the fail-closed router admits nothing, each logs the transition once; restarted, the routers
  use it again without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import functools
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from redis import Redis
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.backends import ThreadedBackend
from tests.procs import Proc, free_port, http_ok, own_redis, running, wait_for
from tests.relay_paths import check_router, relay_env
from wsgate_common.grpc_tls import from_pki_dir
from wsgate_common.metrics import parse_samples
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc
from wsgate_proto import subscription_pb2 as sp

pytestmark = pytest.mark.integration

API_ID = "global-throttle-api"
POLICY = "GlobalWindow"
ADMIN = "Basic " + base64.b64encode(b"admin:admin").decode()

# The "1% over a minute with 3 routers", compressed: 3,000 messages per 10 s window,
# 3 routers offered 150 msgs/s each (450/s for 300/s allowed) for 20 s = 2 windows (the sliding
# windows straddling the boundary are measured too).
LIMIT, WINDOW, SECONDS, RATE = 3000, 10.0, 20.0, 150.0


def redis_up(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@dataclass
class Recorder(ThreadedBackend):
    """The backend, on its own thread: records when each message arrives, per router (the
    client's ``?router=<i>``, which the router passes on), and answers nothing."""

    MAX_SIZE = 2**20  # websockets' default

    times: dict[str, list[float]] = field(default_factory=dict)

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        router = parse_qs(urlsplit(ws.request.path).query).get("router", ["?"])[0]
        times = self.times.setdefault(router, [])
        try:
            async for _ in ws:
                times.append(time.monotonic())
        except ConnectionClosed:
            pass


@dataclass
class Plane:
    """Recording backend, adapter and enforcer, with the throttled API deployed."""

    data_dir: Path
    xds: int
    deploy: int
    enforcer_grpc: int
    enforcer_http: int
    echo: int
    log_dir: Path
    backend: Recorder

    def put_policy(self, limit: int, seconds: int) -> None:
        data = sp.SubscriptionData(
            policies=[
                sp.ThrottlePolicy(
                    name=POLICY,
                    kind="api",
                    message_count=limit,
                    unit_time=seconds,
                    time_unit="sec",
                    stop_on_quota_reach=False,
                )
            ]
        )
        with from_pki_dir(self.data_dir / "pki").channel(f"127.0.0.1:{self.deploy}") as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).PutSubscriptionData(data, timeout=10)

    def token(self) -> str:
        answer = httpx.post(
            f"http://127.0.0.1:{self.enforcer_http}/testkey",
            headers={"Authorization": ADMIN},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.text.strip()

    @contextlib.contextmanager
    def routers(
        self, redis_env: list[dict[str, str]], relay: str
    ) -> Iterator[list[tuple[Proc, int]]]:
        """One router per environment, all ready, on the ``relay`` path; yields (process, port)."""
        with contextlib.ExitStack() as stack:
            started = []
            for i, extra in enumerate(redis_env):
                port = free_port()
                env = {
                    "WSGATE_DATA_DIR": str(self.data_dir),
                    "WSGATE_ROUTER_HOST": "127.0.0.1",
                    "WSGATE_ROUTER_PORT": str(port),
                    "WSGATE_ROUTER_TLS_PORT": "0",
                    "WSGATE_XDS_ADDRESS": f"127.0.0.1:{self.xds}",
                    "WSGATE_ENFORCER_ADDRESS": f"127.0.0.1:{self.enforcer_grpc}",
                    "WSGATE_ENFORCER_HTTP_URL": f"http://127.0.0.1:{self.enforcer_http}",
                    "WSGATE_RATELIMIT_EXPECTED_ROUTERS": "3",
                    "PYTHONUNBUFFERED": "1",
                    **relay_env(relay),
                    **extra,
                }
                name = f"router-{uuid.uuid4().hex[:6]}-{i}"
                proc = stack.enter_context(
                    running(
                        name,
                        ["router"],
                        env,
                        self.log_dir,
                        ready=functools.partial(http_ok, f"http://127.0.0.1:{port}/ready"),
                    )
                )
                check_router(port, relay)
                started.append((proc, port))
            yield started


def api_definition(echo_port: int) -> definition_pb2.ApiDefinition:
    url = f"ws://127.0.0.1:{echo_port}"
    return definition_pb2.ApiDefinition(
        id=API_ID,
        name="GlobalThrottle",
        version="1.0.0",
        context="/global",
        api_type="WS",
        provider="admin",
        lifecycle_status="PUBLISHED",
        production_endpoint=definition_pb2.Endpoint(url=url),
        sandbox_endpoint=definition_pb2.Endpoint(url=url),
        operations=[definition_pb2.Operation(target="/notifications", verb="SUBSCRIBE")],
        api_throttling_policy=POLICY,
        source="control-plane",
    )


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    data_dir = tmp_path_factory.mktemp("global-throttle")
    rest, xds, deploy = free_port(), free_port(), free_port()
    grpc_port, http_port = free_port(), free_port()
    common = {"WSGATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    backend = Recorder()
    backend.start()
    echo = backend.port
    with (
        running(
            "adapter",
            ["adapter"],
            {
                **common,
                "WSGATE_ADAPTER_HOST": "127.0.0.1",
                "WSGATE_ADAPTER_REST_PORT": str(rest),
                "WSGATE_ADAPTER_XDS_PORT": str(xds),
                "WSGATE_ADAPTER_DEPLOY_PORT": str(deploy),
            },
            data_dir,
            ready=lambda: http_ok(f"https://127.0.0.1:{rest}/health"),
        ),
        running(
            "enforcer",
            ["enforcer"],
            {
                **common,
                "WSGATE_ENFORCER_HOST": "127.0.0.1",
                "WSGATE_ENFORCER_GRPC_PORT": str(grpc_port),
                "WSGATE_ENFORCER_HTTP_PORT": str(http_port),
                "WSGATE_XDS_ADDRESS": f"127.0.0.1:{xds}",
                # test keys on an API pushed as the control plane does (off by default)
                "WSGATE_TESTKEY_CONTROL_PLANE_APIS": "true",
            },
            data_dir,
            ready=lambda: http_ok(f"http://127.0.0.1:{http_port}/ready"),
        ),
    ):
        plane = Plane(data_dir, xds, deploy, grpc_port, http_port, echo, data_dir, backend)
        with from_pki_dir(data_dir / "pki").channel(f"127.0.0.1:{deploy}") as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).Deploy(
                deploy_pb2.DeployRequest(api=api_definition(echo)), timeout=10
            )
        yield plane
    backend.close()


async def offer(
    ports: list[int],
    token: str,
    rate: float,
    seconds: float,
    events: list[tuple[float, Callable[[], None]]],
    backend: Recorder,
) -> list[list[float]]:
    """One client per router port sends ``rate`` msgs/s for ``seconds``; returns, per router,
    the monotonic times the backend received its messages (= messages that router admitted).
    ``events`` (offset from the start, action) run in a thread at their time."""
    headers = {"Authorization": f"Bearer {token}"}
    backend.times.clear()
    start = time.monotonic() + 0.5

    async def client(i: int, port: int) -> None:
        url = f"ws://127.0.0.1:{port}/global/1.0.0/notifications?router={i}"
        async with connect(url, additional_headers=headers, open_timeout=10) as ws:
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            sent = 0
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate) + 1
                while sent < due:
                    await ws.send(f"m{sent}")
                    sent += 1
                await asyncio.sleep(1.0 / rate)
            await asyncio.sleep(0.5)  # the last messages reach the backend

    async def timeline() -> None:
        for at, action in events:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            await asyncio.get_running_loop().run_in_executor(None, action)

    await asyncio.gather(*(client(i, p) for i, p in enumerate(ports)), timeline())
    return [list(backend.times.get(str(i), [])) for i in range(len(ports))]


def worst_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - k for k, t in enumerate(times)), default=0)


def relayed_on(ports: list[int], path: str, into: list[float]) -> Callable[[], None]:
    """An event: how many connections each router relays on ``path`` right now."""

    def read() -> None:
        for port in ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            into.append(
                parse_samples(text).get(f'wsgate_router_connections_by_relay{{path="{path}"}}', 0)
            )

    return read


def test_global_limit_holds_within_one_percent_across_three_routers(
    plane: Plane, relay_path: str
) -> None:
    """On the native path the quota'd connections run on the core, which consumes the permits
    each router leases from Redis (router.native.LeasePump)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"  # a redis-server of this test's own, like the others
    prefix = f"wsgate-it:{uuid.uuid4().hex}:"
    plane.put_policy(LIMIT, int(WINDOW))
    env = {"WSGATE_RATELIMIT_REDIS_URL": url, "WSGATE_RATELIMIT_REDIS_PREFIX": prefix}
    token = plane.token()
    with own_redis(port):
        assert redis_up(url)
        with plane.routers([env, env, env], relay_path) as routers:
            ports = [p for _, p in routers]
            on_path: list[float] = []
            check = relayed_on(ports, relay_path, on_path)
            echoes = asyncio.run(offer(ports, token, RATE, SECONDS, [(1.0, check)], plane.backend))
            logs = [proc.log() for proc, _ in routers]
    admitted = sorted(t for per_router in echoes for t in per_router)
    offered = 3 * RATE * SECONDS
    worst = worst_window(admitted, WINDOW)
    overshoot = (worst - LIMIT) / LIMIT
    ideal = LIMIT * SECONDS / WINDOW
    print(
        f"\nglobal throttle: {len(admitted)} of {offered:.0f} offered admitted "
        f"({[len(e) for e in echoes]} per router), ideal {ideal:.0f}; "
        f"worst {WINDOW:.0f}s window {worst} / {LIMIT} = overshoot {overshoot:+.2%}"
    )
    assert on_path == [1.0, 1.0, 1.0], f"not relayed on the {relay_path} path: {on_path}"
    assert worst <= LIMIT * 1.01, f"the global limit was exceeded by {overshoot:.2%}"
    assert len(admitted) >= 0.95 * ideal, "the routers admitted far less than the limit"
    assert all(len(e) > 0.2 * ideal / 3 for e in echoes), "a router was starved"
    for log in logs:
        assert "rate-limit counters in Redis" in log
        assert "unreachable" not in log


def test_traffic_under_the_global_limit_is_never_refused(plane: Plane, relay_path: str) -> None:
    """Three routers offered half the limit between them: every message passes (on the native
    path: permits lent to the core in time, credit while a lease is on its way, and a message
    the core's pool has nothing for held, its side not read, until the pump refills it; on the
    Python path, a message the lease and credit have nothing for held until the counter's
    reply: a stalled event loop delays it, never refuses it)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {"WSGATE_RATELIMIT_REDIS_URL": url, "WSGATE_RATELIMIT_REDIS_PREFIX": "under:"}
    plane.put_policy(LIMIT, int(WINDOW))
    token = plane.token()
    rate, seconds = 50.0, 6.0  # 3 x 50/s for 300/s allowed
    with own_redis(port), plane.routers([env, env, env], relay_path) as routers:
        echoes = asyncio.run(
            offer([p for _, p in routers], token, rate, seconds, [], plane.backend)
        )
    sent = int(seconds * rate)
    print(f"\nunder the limit: admitted per router {[len(e) for e in echoes]} of ~{sent} sent")
    for per_router in echoes:
        assert len(per_router) >= sent - 1, "a message under the limit was refused"


def test_redis_killed_mid_test_follows_each_routers_policy(plane: Plane, relay_path: str) -> None:
    """300 msgs / 3 s. Redis up 0-4 s, killed 4-9 s, back (empty) 9-12 s. Routers 0 and 1
    fail open (local cap 300 / 3 = 100 per window each), router 2 fails closed."""
    limit, window = 300, 3
    plane.put_policy(limit, window)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    open_env = {"WSGATE_RATELIMIT_REDIS_URL": url}
    closed_env = {**open_env, "WSGATE_RATELIMIT_REDIS_FAILURE_MODE": "fail-closed"}
    token = plane.token()
    holder: dict[str, subprocess.Popen[bytes]] = {}
    restarted = contextlib.ExitStack()

    def kill() -> None:
        holder["redis"].kill()
        holder["redis"].wait()

    def restart() -> None:
        holder["redis"] = restarted.enter_context(own_redis(port))

    with own_redis(port) as first, restarted:
        holder["redis"] = first
        with plane.routers([open_env, open_env, closed_env], relay_path) as routers:
            ports = [p for _, p in routers]
            on_path: list[float] = []
            echoes = asyncio.run(
                offer(
                    ports,
                    token,
                    80.0,  # 3 x 80/s offered for 100/s allowed
                    12.0,
                    [(1.0, relayed_on(ports, relay_path, on_path)), (4.0, kill), (9.0, restart)],
                    plane.backend,
                )
            )
            wait_for(lambda: all("reachable again" in p.log() for p, _ in routers), 10, "recovery")
            logs = [proc.log() for proc, _ in routers]
    start = min(t for e in echoes for t in e) if any(echoes) else 0.0

    def between(i: int, a: float, b: float) -> list[float]:
        return [t for t in echoes[i] if a <= t - start < b]

    down = [between(i, 4.5, 9.0) for i in range(3)]  # (0.5 s for the failure to be seen)
    print(
        f"\nRedis killed: admitted per router while down {[len(d) for d in down]}, "
        f"cap {limit // 3} per {window}s window each (fail-open), fail-closed router 0"
    )
    assert on_path == [1.0, 1.0, 1.0], f"not relayed on the {relay_path} path: {on_path}"
    for i in (0, 1):
        assert 0 < worst_window(down[i], window) <= limit // 3 + 1
    assert len(down[2]) <= 5  # fail-closed: at most what its last lease held
    after = [between(i, 10.0, 12.0) for i in range(3)]
    assert all(after), "a router did not come back to the restarted Redis"
    assert worst_window(sorted(t for e in echoes for t in e), window) <= limit * 1.01 + 6
    for log in logs:
        assert log.count("unreachable") == 1, log[-3000:]
        assert log.count("reachable again") == 1
    assert "fail-closed" in logs[2] and "limit/3 per router" in logs[0]
