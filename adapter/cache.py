"""Snapshots of compiled resources per gateway label, and the cache the xDS server streams from.

Modelled on go-control-plane's ``pkg/cache/v3``: a snapshot is an immutable, versioned set of
resources for one node id; ``SnapshotCache.set`` checks it is consistent, stores it and wakes
every stream watching that node. The cache does no compiling and no I/O.

Besides each label's own resources (routes, policies) the cache holds *shared* resources: the
subscription data, the same on every label. ``set_shared`` replaces them and republishes every
node's snapshot with new versions for the shared types that changed; a label that appears later
starts with the current shared set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf import any_pb2

from wsgate_common.resources import (
    API_POLICY_TYPE_URL,
    ROUTE_TYPE_URL,
    SUBSCRIPTION_DATA_TYPE_URLS,
)

TYPE_URLS: tuple[str, ...] = (ROUTE_TYPE_URL, API_POLICY_TYPE_URL)
SHARED_TYPE_URLS: tuple[str, ...] = SUBSCRIPTION_DATA_TYPE_URLS

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
    """Read-only copies; a mapping this module froze already is kept as it is (no copy)."""
    return MappingProxyType(
        {
            type_url: named
            if isinstance(named, MappingProxyType)
            else MappingProxyType(dict(named))
            for type_url, named in resources.items()
        }
    )


def _same(a: Mapping[str, any_pb2.Any], b: Mapping[str, any_pb2.Any]) -> bool:
    if a is b:
        return True
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
        self._shared: Resources = _freeze({t: {} for t in SHARED_TYPE_URLS})

    def _node(self, node_id: str) -> _Node:
        return self._nodes.setdefault(node_id, _Node())

    def nodes(self) -> list[str]:
        return sorted(self._nodes)

    def get(self, node_id: str) -> Snapshot | None:
        node = self._nodes.get(node_id)
        return node.snapshot if node else None

    def set(self, node_id: str, resources: Resources) -> Snapshot:
        """Publish a node's own ``resources`` (with the shared ones added), bumping the version
        only of the types that changed.

        Raises:
            InconsistentSnapshot: the resources fail the consistency check (nothing changes).
            ValueError: ``resources`` holds a shared type (use :meth:`set_shared`).
        """
        shared = sorted(set(resources) & set(SHARED_TYPE_URLS))
        if shared:
            raise ValueError(f"shared types are set with set_shared: {', '.join(shared)}")
        return self._publish(node_id, {**resources, **self._shared}, changed_shared=())

    def set_shared(self, resources: Resources) -> dict[str, str]:
        """Replace the shared resources (missing shared types become empty) on every node.

        Returns:
            Node id -> its version after the change (unchanged nodes too).
        Raises:
            ValueError: ``resources`` holds a type that is not shared.
        """
        other = sorted(set(resources) - set(SHARED_TYPE_URLS))
        if other:
            raise ValueError(f"not shared types: {', '.join(other)}")
        fresh = _freeze({t: resources.get(t, {}) for t in SHARED_TYPE_URLS})
        changed = tuple(t for t in SHARED_TYPE_URLS if not _same(self._shared[t], fresh[t]))
        # Unchanged types keep the very same mapping, so later comparisons are identity checks.
        self._shared = _freeze(
            {t: fresh[t] if t in changed else self._shared[t] for t in SHARED_TYPE_URLS}
        )
        if changed:
            for node_id, node in self._nodes.items():
                if node.snapshot is not None:
                    own = {
                        t: r
                        for t, r in node.snapshot.resources.items()
                        if t not in SHARED_TYPE_URLS
                    }
                    self._publish(node_id, {**own, **self._shared}, changed_shared=changed)
        return {node_id: self.version(node_id) for node_id in self.nodes()}

    def shared(self) -> Resources:
        """The current shared resources (every shared type present, maybe empty)."""
        return self._shared

    def _publish(
        self, node_id: str, resources: Resources, changed_shared: tuple[str, ...]
    ) -> Snapshot:
        node = self._node(node_id)
        previous = node.snapshot
        candidate = Snapshot(_freeze(resources), {})
        candidate.check_consistent()
        next_version = f"{node.counter + 1}.{self.epoch}"
        versions: dict[str, str] = {}
        changed = False
        for type_url in sorted(set(TYPE_URLS) | set(SHARED_TYPE_URLS) | set(resources)):
            new = candidate.resources.get(type_url, {})
            if previous is None or type_url in changed_shared:
                same = False
            elif type_url in SHARED_TYPE_URLS:
                same = True  # shared content changes only through set_shared
            else:
                same = _same(previous.resources.get(type_url, {}), new)
            if same and previous is not None:
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
