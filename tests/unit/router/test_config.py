"""The xDS Route handler: atomic swap, NACK keeps the last good table, readiness."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from router.config import RouteStore
from wsgate_proto import config_pb2


def packed(route: config_pb2.Route) -> any_pb2.Any:
    resource = any_pb2.Any()
    resource.Pack(route)
    return resource


GOOD = config_pb2.Route(
    api_id="a1",
    api_name="Echo",
    api_version="1.0.0",
    vhost="localhost",
    base_path="/echo/1.0.0",
    topics=[config_pb2.RouteTopic(path="/", production_url="ws://localhost:1")],
)


def test_apply_sets_ready_and_table() -> None:
    store = RouteStore()
    assert not store.ready
    assert store.table.match("localhost", "/echo/1.0.0") is None
    store.apply("v1", [packed(GOOD)])
    assert store.ready and store.version == "v1"
    match = store.table.match("localhost", "/echo/1.0.0")
    assert match is not None and match.route.api_id == "a1"


def test_empty_snapshot_is_ready_with_no_routes() -> None:
    store = RouteStore()
    store.apply("v0", [])
    assert store.ready and store.table.size == 0


@pytest.mark.parametrize(
    "bad",
    [
        any_pb2.Any(type_url="type.googleapis.com/wsgate.config.v1.ApiPolicy", value=b""),
        any_pb2.Any(type_url="type.googleapis.com/wsgate.config.v1.Route", value=b"\xff\xff"),
        packed(config_pb2.Route(base_path="/x")),  # no api_id
        packed(config_pb2.Route(api_id="b", topics=[config_pb2.RouteTopic(path="/*/x")])),
    ],
)
def test_bad_snapshot_raises_and_keeps_old_table(bad: any_pb2.Any) -> None:
    store = RouteStore()
    store.apply("v1", [packed(GOOD)])
    old = store.table
    with pytest.raises(ValueError):
        store.apply("v2", [packed(GOOD), bad])
    assert store.table is old and store.version == "v1"


def test_duplicate_api_is_rejected() -> None:
    store = RouteStore()
    with pytest.raises(ValueError, match="duplicate"):
        store.apply("v1", [packed(GOOD), packed(GOOD)])
    assert not store.ready
