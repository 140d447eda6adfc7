"""XdsClient against the adapter's real ADS server in-process (grpc.aio on a free port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc.aio
import pytest
from google.protobuf import any_pb2

from adapter.cache import Snapshot, SnapshotCache
from adapter.xds import AdsServicer, XdsStatus, start_xds_server
from wsgate_common.resources import API_POLICY_TYPE_URL, ROUTE_TYPE_URL
from wsgate_common.xds_client import XdsClient
from wsgate_proto import config_pb2


def _route(api_id: str, base_path: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(config_pb2.Route(api_id=api_id, base_path=base_path))
    return packed


def _policy(api_id: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(config_pb2.ApiPolicy(api_id=api_id))
    return packed


def _resources(*ids: str) -> dict[str, dict[str, any_pb2.Any]]:
    return {
        ROUTE_TYPE_URL: {i: _route(i, f"/{i}") for i in ids},
        API_POLICY_TYPE_URL: {i: _policy(i) for i in ids},
    }


class Recorder:
    """A handler that keeps the applied state, and refuses base paths starting with /bad."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.calls: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, version: str, resources: list[any_pb2.Any]) -> None:
        self.calls.append(version)
        new: dict[str, str] = {}
        for packed in resources:
            route = config_pb2.Route()
            if not packed.Unpack(route):
                raise ValueError("not a Route")
            if route.base_path.startswith("/bad"):
                raise ValueError(f"bad base path {route.base_path}")
            new[route.api_id] = route.base_path
        self.state = new
        self.changed.set()


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110 (polls state owned by other tasks)
            await asyncio.sleep(0.01)


Server = tuple[SnapshotCache, XdsStatus, int, grpc.aio.Server]


def _snap(cache: SnapshotCache) -> Snapshot:
    snapshot = cache.get("Default")
    assert snapshot is not None
    return snapshot


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    cache = SnapshotCache(epoch="t")
    status = XdsStatus()
    srv, port = await start_xds_server(AdsServicer(cache, status), "127.0.0.1", 0)
    yield cache, status, port, srv
    await srv.stop(None)


async def _run(client: XdsClient) -> asyncio.Task[None]:
    return asyncio.create_task(client.run())


async def test_receives_snapshot_acks_and_gets_ready(server: Server) -> None:
    cache, status, port, _ = server
    cache.set("Default", _resources("a"))
    routes = Recorder()
    policies: list[int] = []
    client = XdsClient(
        f"127.0.0.1:{port}",
        "Default",
        {ROUTE_TYPE_URL: routes, API_POLICY_TYPE_URL: lambda v, r: policies.append(len(r))},
    )
    task = await _run(client)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        assert routes.state == {"a": "/a"}
        assert policies == [1]
        assert client.connected
        version = _snap(cache).version(ROUTE_TYPE_URL)
        assert client.versions == {ROUTE_TYPE_URL: version, API_POLICY_TYPE_URL: version}
        await _until(lambda: status.acks >= 2)
        [client_status] = status.clients.values()
        assert client_status.node_id == "Default"
        assert client_status.types[ROUTE_TYPE_URL].acked_version == version

        cache.set("Default", _resources("a", "b"))
        await _until(lambda: routes.state == {"a": "/a", "b": "/b"})
    finally:
        task.cancel()


async def test_empty_label_still_gets_ready(server: Server) -> None:
    _, _, port, _ = server
    client = XdsClient(f"127.0.0.1:{port}", "Nobody", {ROUTE_TYPE_URL: Recorder()})
    task = await _run(client)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        assert client.versions[ROUTE_TYPE_URL] != ""
    finally:
        task.cancel()


async def test_nack_keeps_last_good_state_and_server_records_it(server: Server) -> None:
    cache, status, port, _ = server
    cache.set("Default", _resources("a"))
    routes = Recorder()
    client = XdsClient(f"127.0.0.1:{port}", "Default", {ROUTE_TYPE_URL: routes})
    task = await _run(client)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        good = client.versions[ROUTE_TYPE_URL]
        bad = _resources("a")
        bad[ROUTE_TYPE_URL]["x"] = _route("x", "/bad")
        bad[API_POLICY_TYPE_URL]["x"] = _policy("x")
        cache.set("Default", bad)
        await _until(lambda: status.nacks == 1)
        assert client.nacks == 1
        assert routes.state == {"a": "/a"}
        assert client.versions[ROUTE_TYPE_URL] == good
        nack = status.last_nack["Default"][ROUTE_TYPE_URL]
        assert "bad base path /bad" in nack.message
        assert nack.version == _snap(cache).version(ROUTE_TYPE_URL)
        [client_status] = status.clients.values()
        assert client_status.types[ROUTE_TYPE_URL].acked_version == good
        # The NACKed version is not resent in a loop; the next good snapshot is applied.
        await asyncio.sleep(0.2)
        assert status.nacks == 1
        cache.set("Default", _resources("c"))
        await _until(lambda: routes.state == {"c": "/c"})
    finally:
        task.cancel()


async def test_reconnects_and_skips_unchanged_snapshot(server: Server) -> None:
    cache, _, port, srv = server
    cache.set("Default", _resources("a"))
    routes = Recorder()
    client = XdsClient(
        f"127.0.0.1:{port}", "Default", {ROUTE_TYPE_URL: routes}, backoff_initial=0.05
    )
    task = await _run(client)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        assert len(routes.calls) == 1
        await srv.stop(None)
        await _until(lambda: not client.connected)
        # A new server process on the same port, same cache: the client reconnects and, holding
        # the current version already, is not sent it again.
        srv2, _ = await start_xds_server(AdsServicer(cache), "127.0.0.1", port)
        try:
            await _until(lambda: client.connected)
            await asyncio.sleep(0.2)
            assert len(routes.calls) == 1
            cache.set("Default", _resources("b"))
            await _until(lambda: routes.state == {"b": "/b"})
        finally:
            await srv2.stop(None)
    finally:
        task.cancel()


async def test_restarted_adapter_with_new_epoch_resends(server: Server) -> None:
    cache, _, port, srv = server
    cache.set("Default", _resources("a"))
    routes = Recorder()
    client = XdsClient(
        f"127.0.0.1:{port}", "Default", {ROUTE_TYPE_URL: routes}, backoff_initial=0.05
    )
    task = await _run(client)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        await srv.stop(None)
        fresh = SnapshotCache(epoch="u")  # counter restarts at 1, but the epoch differs
        fresh.set("Default", _resources("z"))
        srv2, _ = await start_xds_server(AdsServicer(fresh), "127.0.0.1", port)
        try:
            await _until(lambda: routes.state == {"z": "/z"})
        finally:
            await srv2.stop(None)
    finally:
        task.cancel()


async def test_unreachable_server_does_not_crash_and_is_not_ready() -> None:
    from tests.procs import free_port

    client = XdsClient(
        f"127.0.0.1:{free_port()}", "Default", {ROUTE_TYPE_URL: Recorder()}, backoff_max=0.2
    )
    task = asyncio.create_task(client.run())
    await asyncio.sleep(0.5)
    assert not task.done()
    assert not client.ready.is_set()
    assert not client.connected
    task.cancel()


def test_needs_handlers() -> None:
    with pytest.raises(ValueError):
        XdsClient("127.0.0.1:1", "Default", {})
