"""Snapshots of compiled resources per gateway label, and the cache the xDS server streams from.

Modelled on go-control-plane's ``pkg/cache/v3``: a snapshot is an immutable, versioned set of
resources for one node id; ``SnapshotCache.set`` checks it is consistent, stores it and wakes
every stream watching that node. The cache does no compiling and no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf import any_pb2

from wsgate_common.resources import API_POLICY_TYPE_URL, ROUTE_TYPE_URL

TYPE_URLS: tuple[str, ...] = (ROUTE_TYPE_URL, API_POLICY_TYPE_URL)

Resources = Mapping[str, Mapping[str, any_pb2.Any]]  # type URL -> resource name -> resource


class InconsistentSnapshot(ValueError):
    """A snapshot references a resource it does not contain (e.g. a Route without ApiPolicy)."""


@dataclass(frozen=True)
class Snapshot:
    """What one node should hold: resources per type URL, each with the version it changed at."""

    resources: Resources
    versions: Mapping[str, str]

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url, "")

    def of_type(self, type_url: str) -> list[any_pb2.Any]:
        """Resources of one type in name order, so equal snapshots serialize equally."""
        named = self.resources.get(type_url, {})
        return [named[name] for name in sorted(named)]

    def check_consistent(self) -> None:
        """Every Route must come with the ApiPolicy of the same name (the enforcer needs it).

        Raises:
            InconsistentSnapshot: naming the routes that lack a policy.
        """
        routes = set(self.resources.get(ROUTE_TYPE_URL, {}))
        policies = set(self.resources.get(API_POLICY_TYPE_URL, {}))
        missing = sorted(routes - policies)
        if missing:
            raise InconsistentSnapshot(f"routes without an ApiPolicy: {', '.join(missing)}")


def _freeze(resources: Resources) -> Resources:
    return MappingProxyType(
        {type_url: MappingProxyType(dict(named)) for type_url, named in resources.items()}
    )


def _same(a: Mapping[str, any_pb2.Any], b: Mapping[str, any_pb2.Any]) -> bool:
    return a.keys() == b.keys() and all(
        a[name].SerializeToString(deterministic=True)
        == b[name].SerializeToString(deterministic=True)
        for name in a
    )


@dataclass
class _Node:
    counter: int = 0
    snapshot: Snapshot | None = None
    watchers: set[asyncio.Event] = field(default_factory=set)


class SnapshotCache:
    """Node id -> current snapshot, with one version counter per node shared by all its types.

    Versions look like ``"<counter>.<epoch>"``: the epoch (the adapter's boot id) keeps a
    restarted adapter from reusing a version a client already holds with other content.
    """

    def __init__(self, epoch: str = "0") -> None:
        self.epoch = epoch
        self._nodes: dict[str, _Node] = {}

    def _node(self, node_id: str) -> _Node:
        return self._nodes.setdefault(node_id, _Node())

    def nodes(self) -> list[str]:
        return sorted(self._nodes)

    def get(self, node_id: str) -> Snapshot | None:
        node = self._nodes.get(node_id)
        return node.snapshot if node else None

    def set(self, node_id: str, resources: Resources) -> Snapshot:
        """Publish ``resources`` for a node, bumping the version only of the types that changed.

        Raises:
            InconsistentSnapshot: the resources fail the consistency check (nothing changes).
        """
        node = self._node(node_id)
        previous = node.snapshot
        candidate = Snapshot(_freeze(resources), {})
        candidate.check_consistent()
        next_version = f"{node.counter + 1}.{self.epoch}"
        versions: dict[str, str] = {}
        changed = False
        for type_url in sorted(set(TYPE_URLS) | set(resources)):
            new = candidate.resources.get(type_url, {})
            if previous is not None and _same(previous.resources.get(type_url, {}), new):
                versions[type_url] = previous.version(type_url)
            else:
                versions[type_url] = next_version
                changed = True
        if not changed and previous is not None:
            return previous
        node.counter += 1
        node.snapshot = Snapshot(candidate.resources, MappingProxyType(versions))
        for event in node.watchers:
            event.set()
        return node.snapshot

    def ensure(self, node_id: str) -> Snapshot:
        """The node's snapshot, creating an empty one so a new label's clients can get ready."""
        snapshot = self.get(node_id)
        return snapshot if snapshot is not None else self.set(node_id, {})

    def watch(self, node_id: str, event: asyncio.Event) -> None:
        """Have ``event`` set whenever the node's snapshot changes."""
        self._node(node_id).watchers.add(event)

    def unwatch(self, node_id: str, event: asyncio.Event) -> None:
        node = self._nodes.get(node_id)
        if node is not None:
            node.watchers.discard(event)

    def versions(self) -> dict[str, dict[str, str]]:
        """Node id -> type URL -> version, for status reports."""
        return {
            node_id: dict(node.snapshot.versions)
            for node_id, node in sorted(self._nodes.items())
            if node.snapshot is not None
        }

    def version(self, node_id: str) -> str:
        """The node's latest version (counter.epoch), or "" before its first snapshot."""
        node = self._nodes.get(node_id)
        return f"{node.counter}.{self.epoch}" if node and node.counter else ""
