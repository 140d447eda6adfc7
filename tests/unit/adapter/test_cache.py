"""Snapshots and the snapshot cache: versions, consistency, watches."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import any_pb2

from adapter.cache import InconsistentSnapshot, SnapshotCache
from wsgate_common.resources import (
    API_POLICY_TYPE_URL,
    APPLICATION_TYPE_URL,
    ROUTE_TYPE_URL,
    SUBSCRIPTION_DATA_TYPE_URLS,
    SUBSCRIPTION_TYPE_URL,
)
from wsgate_proto import config_pb2, subscription_pb2


def _any(message: config_pb2.Route | config_pb2.ApiPolicy) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _res(routes: dict[str, str], policies: dict[str, str]) -> dict[str, dict[str, any_pb2.Any]]:
    return {
        ROUTE_TYPE_URL: {
            k: _any(config_pb2.Route(api_id=k, base_path=v)) for k, v in routes.items()
        },
        API_POLICY_TYPE_URL: {
            k: _any(config_pb2.ApiPolicy(api_id=k, base_path=v)) for k, v in policies.items()
        },
    }


def test_versions_count_per_node_and_only_changed_types_move() -> None:
    cache = SnapshotCache(epoch="e")
    first = cache.set("Default", _res({"a": "/a"}, {"a": "/a"}))
    assert first.version(ROUTE_TYPE_URL) == first.version(API_POLICY_TYPE_URL) == "1.e"
    # Only the policy changes: the route keeps its version, the policy takes the next one.
    second = cache.set("Default", _res({"a": "/a"}, {"a": "/a2"}))
    assert second.version(ROUTE_TYPE_URL) == "1.e"
    assert second.version(API_POLICY_TYPE_URL) == "2.e"
    assert cache.version("Default") == "2.e"
    # Nothing changes: same snapshot, no new version.
    assert cache.set("Default", _res({"a": "/a"}, {"a": "/a2"})) is second
    assert cache.version("Default") == "2.e"
    # Another node has its own counter.
    assert cache.set("Edge", _res({}, {})).version(ROUTE_TYPE_URL) == "1.e"
    versions = cache.versions()["Default"]
    assert (versions[ROUTE_TYPE_URL], versions[API_POLICY_TYPE_URL]) == ("1.e", "2.e")
    # Every label also carries the shared subscription types, from its first snapshot on.
    assert {versions[t] for t in SUBSCRIPTION_DATA_TYPE_URLS} == {"1.e"}


def test_inconsistent_snapshot_is_refused_and_keeps_the_old_one() -> None:
    cache = SnapshotCache()
    good = cache.set("Default", _res({"a": "/a"}, {"a": "/a"}))
    with pytest.raises(InconsistentSnapshot, match="b"):
        cache.set("Default", _res({"a": "/a", "b": "/b"}, {"a": "/a"}))
    assert cache.get("Default") is good


def test_snapshot_is_immutable_and_ordered() -> None:
    cache = SnapshotCache()
    source = _res({"b": "/b", "a": "/a"}, {"a": "/a", "b": "/b"})
    snapshot = cache.set("Default", source)
    source[ROUTE_TYPE_URL].clear()
    assert len(snapshot.of_type(ROUTE_TYPE_URL)) == 2
    with pytest.raises(TypeError):
        snapshot.resources[ROUTE_TYPE_URL]["c"] = any_pb2.Any()  # type: ignore[index]
    names = [config_pb2.Route.FromString(r.value).api_id for r in snapshot.of_type(ROUTE_TYPE_URL)]
    assert names == ["a", "b"]


def test_ensure_creates_empty_snapshot_once() -> None:
    cache = SnapshotCache()
    empty = cache.ensure("New")
    assert empty.of_type(ROUTE_TYPE_URL) == []
    assert empty.version(ROUTE_TYPE_URL) != ""
    assert cache.ensure("New") is empty


async def test_watchers_are_woken_on_change_only() -> None:
    cache = SnapshotCache()
    event = asyncio.Event()
    cache.watch("Default", event)
    cache.set("Default", _res({"a": "/a"}, {"a": "/a"}))
    assert event.is_set()
    event.clear()
    cache.set("Default", _res({"a": "/a"}, {"a": "/a"}))
    assert not event.is_set()
    cache.set("Other", _res({}, {}))
    assert not event.is_set()
    cache.unwatch("Default", event)
    cache.set("Default", _res({}, {}))
    assert not event.is_set()


def _apps(*ids: str) -> dict[str, dict[str, any_pb2.Any]]:
    named = {}
    for i in ids:
        packed = any_pb2.Any()
        packed.Pack(subscription_pb2.Application(id=i, name=i.upper()))
        named[i] = packed
    return {APPLICATION_TYPE_URL: named}


def test_shared_resources_reach_every_label_and_only_changed_types_move() -> None:
    cache = SnapshotCache(epoch="e")
    cache.set("Default", _res({"a": "/a"}, {"a": "/a"}))
    cache.set("Edge", _res({}, {}))
    events = {label: asyncio.Event() for label in ("Default", "Edge")}
    for label, event in events.items():
        cache.watch(label, event)
    versions = cache.set_shared(_apps("app-1"))
    assert versions == {"Default": "2.e", "Edge": "2.e"}
    assert all(event.is_set() for event in events.values())
    for label in ("Default", "Edge"):
        snapshot = cache.get(label)
        assert snapshot is not None
        assert len(snapshot.of_type(APPLICATION_TYPE_URL)) == 1
        assert snapshot.version(APPLICATION_TYPE_URL) == "2.e"
        assert snapshot.version(SUBSCRIPTION_TYPE_URL) == "1.e"  # unchanged type keeps its version
    default = cache.get("Default")
    assert default is not None and default.version(ROUTE_TYPE_URL) == "1.e"
    # The same set again changes nothing.
    for event in events.values():
        event.clear()
    assert cache.set_shared(_apps("app-1")) == {"Default": "2.e", "Edge": "2.e"}
    assert not any(event.is_set() for event in events.values())
    # A label's own change keeps the shared resources and their versions.
    after = cache.set("Default", _res({"a": "/a", "b": "/b"}, {"a": "/a", "b": "/b"}))
    assert after.version(APPLICATION_TYPE_URL) == "2.e"
    assert len(after.of_type(APPLICATION_TYPE_URL)) == 1
    # A label that appears later starts with the current set.
    late = cache.ensure("Late")
    assert [
        subscription_pb2.Application.FromString(r.value).id
        for r in late.of_type(APPLICATION_TYPE_URL)
    ] == ["app-1"]
    # Removing the item is a change.
    assert cache.set_shared({})["Edge"] == "3.e"
    edge = cache.get("Edge")
    assert edge is not None and edge.of_type(APPLICATION_TYPE_URL) == []


def test_shared_and_label_types_stay_apart() -> None:
    cache = SnapshotCache()
    with pytest.raises(ValueError, match="set_shared"):
        cache.set("Default", _apps("x"))
    with pytest.raises(ValueError, match="not shared"):
        cache.set_shared(_res({}, {}))
