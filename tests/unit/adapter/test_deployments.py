"""The registry: ownership, clash rules, persistence of CLI deployments, snapshot rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.cache import SnapshotCache
from adapter.compile import CompileError
from adapter.deployments import Conflict, NotFound, Owned, Registry
from wsgate_common.resources import API_POLICY_TYPE_URL, ROUTE_TYPE_URL
from wsgate_proto import config_pb2, definition_pb2


def _api(
    api_id: str = "A:1",
    context: str = "/a",
    source: str = "adapter",
    labels: tuple[tuple[str, str], ...] = (),
    name: str = "A",
    version: str = "1",
) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        name=name,
        version=version,
        context=context,
        production_endpoint=definition_pb2.Endpoint(url="ws://b:1"),
        deployments=[definition_pb2.Deployment(name=n, vhost=v) for n, v in labels],
        source=source,
    )


def _base_paths(cache: SnapshotCache, label: str) -> list[str]:
    snapshot = cache.get(label)
    assert snapshot is not None
    routes = [config_pb2.Route.FromString(r.value) for r in snapshot.of_type(ROUTE_TYPE_URL)]
    assert len(snapshot.of_type(API_POLICY_TYPE_URL)) == len(routes)
    return [r.base_path for r in routes]


def test_deploy_publishes_and_undeploy_removes() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    versions = registry.deploy(_api())
    assert versions == {"Default": cache.version("Default")}
    assert _base_paths(cache, "Default") == ["/a/1"]
    registry.undeploy("A:1")
    assert _base_paths(cache, "Default") == []
    with pytest.raises(NotFound):
        registry.undeploy("A:1")


def test_same_id_needs_override() -> None:
    registry = Registry(SnapshotCache())
    registry.deploy(_api(), override=False)
    with pytest.raises(Conflict, match="already deployed"):
        registry.deploy(_api(context="/other"), override=False)
    registry.deploy(_api(context="/other"), override=True)
    entry = registry.get("A:1")
    assert entry is not None and entry.compiled["Default"].route.base_path == "/other/1"


def test_context_clash_per_label_and_vhost() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    registry.deploy(_api())
    with pytest.raises(Conflict, match="/a/1"):
        registry.deploy(_api("cp-uuid", source="control-plane", name="B"))
    assert _base_paths(cache, "Default") == ["/a/1"]  # the refused change left no trace
    assert registry.get("cp-uuid") is None
    # Same base path on another vhost or another label is fine.
    registry.deploy(_api("B:1", name="B", labels=(("Default", "other.example"),)))
    registry.deploy(_api("C:1", name="C", labels=(("Edge", "localhost"),)))
    assert sorted(_base_paths(cache, "Default")) == ["/a/1", "/a/1"]
    assert _base_paths(cache, "Edge") == ["/a/1"]


def test_compile_error_propagates_and_changes_nothing() -> None:
    registry = Registry(SnapshotCache())
    with pytest.raises(CompileError):
        registry.deploy(_api(context=""))
    assert registry.entries() == []


def test_undeploy_from_some_labels() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    registry.deploy(_api(labels=(("Default", ""), ("Edge", ""))))
    with pytest.raises(NotFound):
        registry.undeploy("A:1", ["Nowhere"])
    registry.undeploy("A:1", ["Edge"])
    assert _base_paths(cache, "Edge") == []
    assert _base_paths(cache, "Default") == ["/a/1"]
    registry.undeploy("A:1", ["Default"])
    assert registry.get("A:1") is None


def test_sync_replaces_control_plane_apis_only() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    registry.deploy(_api())  # CLI-owned
    registry.deploy(_api("cp1", context="/one", source="control-plane"))
    registry.deploy(_api("cp2", context="/two", source="control-plane", labels=(("Edge", ""),)))
    versions, errors = registry.sync(
        [
            _api("cp3", context="/three", source=""),
            _api("cp4", context="/a", source=""),  # clashes with the CLI API
            _api("cp5", context="", source=""),  # does not compile
        ]
    )
    assert len(errors) == 2
    assert any(e.startswith("cp4:") for e in errors)
    assert any(e.startswith("cp5:") for e in errors)
    assert sorted(_base_paths(cache, "Default")) == ["/a/1", "/three/1"]
    assert _base_paths(cache, "Edge") == []
    assert set(versions) == {"Default", "Edge"}
    entry = registry.get("cp3")
    assert entry is not None and entry.source == "control-plane"


def test_cli_deployments_survive_restart(tmp_path: Path) -> None:
    store = tmp_path / "apis"
    registry = Registry(SnapshotCache(), store)
    registry.deploy(_api())
    registry.deploy(_api("B:1", name="B", context="/b"))
    registry.deploy(_api("cp", context="/cp", source="control-plane"))
    registry.undeploy("B:1")
    assert len(list(store.glob("*.pb"))) == 1

    (store / "garbage.pb").write_bytes(b"\xff\xff not a proto")
    cache = SnapshotCache(epoch="2")
    restarted = Registry(cache, store)
    assert restarted.load() == 1
    assert [e.api.id for e in restarted.entries()] == ["A:1"]
    assert _base_paths(cache, "Default") == ["/a/1"]


def test_control_plane_takeover_drops_the_saved_file(tmp_path: Path) -> None:
    registry = Registry(SnapshotCache(), tmp_path)
    registry.deploy(_api())
    registry.deploy(_api(source="control-plane"))
    assert list(tmp_path.glob("*.pb")) == []


def test_find_by_name_version_vhost() -> None:
    registry = Registry(SnapshotCache())
    registry.deploy(_api(labels=(("Default", "x.example"),)))
    assert [e.api.id for e in registry.find("A", "1")] == ["A:1"]
    assert registry.find("A", "1", "x.example")
    assert registry.find("A", "1", "localhost") == []
    assert registry.find("A", "2") == []


def test_sync_refuses_clashes_within_the_batch_and_lets_a_repeated_id_move() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    _, errors = registry.sync(
        [
            _api("s1", context="/same", source=""),
            _api("s2", context="/same", source=""),  # same place as s1: refused
            _api("s3", context="/old", source=""),
            _api("s3", context="/new", source=""),  # the same id again: it moves, /old is free
            _api("s4", context="/old", source=""),
        ]
    )
    assert len(errors) == 1 and errors[0].startswith("s2:") and "both serve /same/1" in errors[0]
    assert sorted(_base_paths(cache, "Default")) == ["/new/1", "/old/1", "/same/1"]


def _revision(
    revision: str, labels: tuple[str, ...], endpoint: str = "ws://b:1"
) -> definition_pb2.ApiDefinition:
    api = _api("cp-1", "/cp", source="control-plane", labels=tuple((n, "") for n in labels))
    api.revision_id = revision
    api.production_endpoint.url = endpoint
    return api


def _endpoints(cache: SnapshotCache, label: str) -> list[str]:
    snapshot = cache.get(label)
    assert snapshot is not None
    routes = [config_pb2.Route.FromString(r.value) for r in snapshot.of_type(ROUTE_TYPE_URL)]
    return [t.production_url for r in routes for t in r.topics]


def test_put_runs_one_revision_per_label() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    registry.put("cp-1", [_revision("r1", ("Default", "edge"), "ws://one:1")])
    changed = registry.put(
        "cp-1",
        [_revision("r2", ("Default",), "ws://two:2"), _revision("r1", ("edge",), "ws://one:1")],
    )
    assert set(changed) == {"Default", "edge"}
    assert set(_endpoints(cache, "Default")) == {"ws://two:2"}
    assert set(_endpoints(cache, "edge")) == {"ws://one:1"}
    registry.undeploy("cp-1", ["Default"])
    assert _base_paths(cache, "Default") == []
    assert set(_endpoints(cache, "edge")) == {"ws://one:1"}
    registry.put("cp-1", [])
    assert registry.get("cp-1") is None
    assert _base_paths(cache, "edge") == []


def test_put_validate_only_checks_everything_and_changes_nothing() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    registry.deploy(_api("other", "/cp", source="control-plane", name="Other"))
    before = cache.version("Default")
    with pytest.raises(Conflict):
        registry.put("cp-1", [_revision("r1", ("Default",))], validate_only=True)
    with pytest.raises(ValueError, match="two revisions"):
        registry.put("cp-1", [_revision("r1", ("edge",)), _revision("r2", ("edge",))])
    bad = _revision("r1", ("edge",))
    bad.context = "/a/../b"
    with pytest.raises(CompileError):
        registry.put("cp-1", [bad], validate_only=True)
    assert registry.put("cp-1", [_revision("r1", ("edge",))], validate_only=True) == {}
    assert registry.get("cp-1") is None
    assert cache.version("Default") == before
    assert cache.get("edge") is None


def test_put_refuses_a_cli_owned_id() -> None:
    registry = Registry(SnapshotCache())
    registry.deploy(_api("cp-1", "/cli"))
    with pytest.raises(Owned):
        registry.put("cp-1", [_revision("r1", ("Default",))])


def test_sync_merges_one_api_running_two_revisions() -> None:
    cache = SnapshotCache()
    registry = Registry(cache)
    _, errors = registry.sync(
        [_revision("r2", ("Default",), "ws://two:2"), _revision("r1", ("edge",), "ws://one:1")]
    )
    assert errors == []
    assert set(_endpoints(cache, "Default")) == {"ws://two:2"}
    assert set(_endpoints(cache, "edge")) == {"ws://one:1"}
    entry = registry.get("cp-1")
    assert entry is not None and [d.revision_id for d in entry.definitions] == ["r2", "r1"]
