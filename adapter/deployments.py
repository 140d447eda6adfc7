"""Every API the adapter serves, who owns it, and the snapshots rebuilt from them on change.

Two owners share one registry: the control plane (source "control-plane", replaced wholesale by
Sync, never persisted because it re-syncs) and the CLI (source "adapter", persisted under
``<data_dir>/adapter/apis`` so an adapter restart keeps them). A change is checked completely
(compiles, no context clash) before anything is stored, so a refused change leaves no trace.

The subscription data set (applications, subscriptions, keys, tiers, key managers, revoked
tokens) is held beside the APIs: the control plane replaces it whole, it is served on every
label, and it is not persisted (the control plane re-sends it to a restarted adapter).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from adapter.cache import SnapshotCache
from adapter.compile import LabelResources, compile_api
from adapter.subscription_data import to_resources
from wsgate_common.resources import API_POLICY_TYPE_URL, ROUTE_TYPE_URL
from wsgate_proto import definition_pb2, subscription_pb2

log = logging.getLogger(__name__)

SOURCE_CONTROL_PLANE = "control-plane"
SOURCE_ADAPTER = "adapter"


class Conflict(Exception):
    """The change collides with what is deployed (HTTP 409, gRPC ALREADY_EXISTS)."""


class NotFound(Exception):
    """No such API is deployed (HTTP 404, gRPC NOT_FOUND)."""


class Owned(Exception):
    """The API id belongs to another owner (gRPC FAILED_PRECONDITION)."""


class OwnedByControlPlane(Conflict):
    """A CLI change would touch an API the control plane deployed (HTTP 409): only the
    publisher may take it off, or the next sync would bring it back behind the CLI's back."""

    def __init__(self, owned: definition_pb2.ApiDefinition, action: str) -> None:
        super().__init__(
            f"API {owned.name} {owned.version} ({owned.id}) on {owned.context or '/'} is deployed "
            f"by the control plane, so the CLI cannot {action} it"
        )
        self.owned = owned
        self.hint = (
            "take its revision off in the publisher: POST /api/am/publisher/v4/apis/"
            f"{owned.id}/undeploy-revision?revisionId={owned.revision_id or 'REVISION'}"
        )


def control_plane_owner(entries: Iterable[Entry], entry: Entry) -> Entry | None:
    """The control-plane API that a CLI ``entry`` would replace or shadow: the same id, the
    same name and version, or the same (label, vhost, base path)."""
    places = set(served_keys(entry))
    for other in entries:
        if other.source != SOURCE_CONTROL_PLANE:
            continue
        same_api = (other.api.name, other.api.version) == (entry.api.name, entry.api.version)
        if other.api.id == entry.api.id or same_api or places & set(served_keys(other)):
            return other
    return None


@dataclass(frozen=True)
class Entry:
    """One API id with what each label serves of it.

    ``api`` is its first definition (id, name, version, context and source are the same in
    every revision); ``revisions`` lists every definition when the API runs different revisions
    on different labels (empty means just ``api``).
    """

    api: definition_pb2.ApiDefinition
    compiled: dict[str, LabelResources]  # label -> resources
    revisions: tuple[definition_pb2.ApiDefinition, ...] = ()

    @property
    def source(self) -> str:
        return self.api.source

    @property
    def definitions(self) -> tuple[definition_pb2.ApiDefinition, ...]:
        return self.revisions or (self.api,)


def deployments_of(api: definition_pb2.ApiDefinition) -> list[definition_pb2.Deployment]:
    """The labels an API runs on: its deployments, or the "Default" label when none."""
    return list(api.deployments) or [definition_pb2.Deployment(name="Default")]


def build_entry(definitions: Sequence[definition_pb2.ApiDefinition]) -> Entry:
    """Compile one API's definitions (one per revision) into a single entry.

    Raises:
        CompileError: a definition cannot be served.
        ValueError: no definition, ids differ, or two definitions claim the same label.
    """
    if not definitions:
        raise ValueError("an API needs at least one definition")
    compiled: dict[str, LabelResources] = {}
    revision_on: dict[str, str] = {}
    for api in definitions:
        if api.id != definitions[0].id:
            raise ValueError(f"definitions of two APIs ({definitions[0].id}, {api.id}) in one")
        for label, resources in compile_api(api).items():
            if label in compiled:
                raise ValueError(
                    f"API {api.id}: label {label} is given two revisions "
                    f"({revision_on[label] or '?'} and {api.revision_id or '?'})"
                )
            compiled[label] = resources
            revision_on[label] = api.revision_id
    revisions = tuple(definitions) if len(definitions) > 1 else ()
    return Entry(definitions[0], compiled, revisions)


def merge_by_id(
    apis: Iterable[definition_pb2.ApiDefinition],
) -> dict[str, list[definition_pb2.ApiDefinition]]:
    """Group definitions by API id, in order; a label named again moves to the later one."""
    grouped: dict[str, list[definition_pb2.ApiDefinition]] = {}
    for api in apis:
        group = grouped.setdefault(api.id, [])
        taken = {d.name for d in deployments_of(api)}
        kept = []
        for earlier in group:
            left = [d for d in deployments_of(earlier) if d.name not in taken]
            if len(left) == len(deployments_of(earlier)):
                kept.append(earlier)
            elif left:
                trimmed = definition_pb2.ApiDefinition()
                trimmed.CopyFrom(earlier)
                del trimmed.deployments[:]
                trimmed.deployments.extend(left)
                kept.append(trimmed)
        group[:] = [*kept, api]
    return grouped


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def find_clashes(entries: Iterable[Entry]) -> list[str]:
    """Pairs of APIs serving the same (label, vhost, base path): each clash described once."""
    seen: dict[tuple[str, str, str], str] = {}
    clashes = []
    for entry in entries:
        for label, res in entry.compiled.items():
            key = (label, res.route.vhost, res.route.base_path)
            other = seen.setdefault(key, entry.api.id)
            if other != entry.api.id:
                clashes.append(
                    f"{entry.api.name} {entry.api.version} ({entry.api.id}) and {other} both "
                    f"serve {res.route.base_path} on host {key[1]} of label {label}"
                )
    return clashes


def served_keys(entry: Entry) -> list[tuple[str, str, str]]:
    """The (label, vhost, base path) places an API serves."""
    return [(label, r.route.vhost, r.route.base_path) for label, r in entry.compiled.items()]


def clashes_with(served: dict[tuple[str, str, str], str], entry: Entry) -> list[str]:
    """Clashes of ``entry`` with the APIs in ``served`` ((label, vhost, path) -> API id),
    worded as :func:`find_clashes` words them."""
    clashes = []
    for key in served_keys(entry):
        other = served.get(key)
        if other is not None and other != entry.api.id:
            label, vhost, path = key
            clashes.append(
                f"{entry.api.name} {entry.api.version} ({entry.api.id}) and {other} both "
                f"serve {path} on host {vhost} of label {label}"
            )
    return clashes


class Registry:
    """Deployed APIs by id; every change republishes the snapshots of the labels it touches."""

    def __init__(self, cache: SnapshotCache, store_dir: Path | None = None) -> None:
        self.cache = cache
        self.store_dir = store_dir
        self._entries: dict[str, Entry] = {}

    # ---- reading -------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: (e.api.name, e.api.version, e.api.id))

    def get(self, api_id: str) -> Entry | None:
        return self._entries.get(api_id)

    def labels(self) -> set[str]:
        return {label for e in self._entries.values() for label in e.compiled} | set(
            self.cache.nodes()
        )

    def versions(self) -> dict[str, str]:
        """Label -> its latest snapshot version."""
        return {node: self.cache.version(node) for node in self.cache.nodes()}

    # ---- changing ------------------------------------------------------------------------

    def deploy(self, api: definition_pb2.ApiDefinition, *, override: bool = True) -> dict[str, str]:
        """Add or replace one API; returns the new version of every label it changed.

        Raises:
            CompileError: the definition cannot be served.
            Conflict: the same id is deployed and ``override`` is False, or a context clashes.
        """
        entry = build_entry([api])
        if api.source == SOURCE_ADAPTER:
            owner = control_plane_owner(self._entries.values(), entry)
            if owner is not None:
                raise OwnedByControlPlane(owner.api, "replace" if override else "deploy over")
        held = self._entries.get(api.id)
        if held is not None and not override:
            raise Conflict(
                f"API {api.name} {api.version} is already deployed; use override to replace it"
            )
        others = [e for e in self._entries.values() if e.api.id != api.id]
        clashes = find_clashes([*others, entry])
        if clashes:
            raise Conflict("; ".join(clashes))
        self._entries[api.id] = entry
        self._persist(entry)
        touched = set(entry.compiled) | (set(held.compiled) if held else set())
        return self._rebuild(touched)

    def put(
        self,
        api_id: str,
        apis: Sequence[definition_pb2.ApiDefinition],
        *,
        validate_only: bool = False,
    ) -> dict[str, str]:
        """Make ``apis`` (one definition per revision, disjoint labels) all that the control
        plane's API ``api_id`` serves; none removes it. Returns the new version of every label
        it changed (nothing with ``validate_only``, which only checks).

        Raises:
            CompileError / ValueError: a definition cannot be served, or labels overlap.
            Conflict: a context clashes with another API.
            Owned: the id belongs to a CLI deployment.
        """
        held = self._entries.get(api_id)
        if held is not None and held.source != SOURCE_CONTROL_PLANE:
            raise Owned(f"API {api_id} was deployed with the CLI; the control plane cannot own it")
        entry: Entry | None = None
        if apis:
            for api in apis:
                if api.id != api_id:
                    raise ValueError(f"definition of API {api.id} sent as API {api_id}")
                api.source = SOURCE_CONTROL_PLANE
            entry = build_entry(apis)
            others = [e for e in self._entries.values() if e.api.id != api_id]
            clashes = find_clashes([*others, entry])
            if clashes:
                raise Conflict("; ".join(clashes))
        if validate_only:
            return {}
        if entry is None:
            self._entries.pop(api_id, None)
        else:
            self._entries[api_id] = entry
        touched = (set(entry.compiled) if entry else set()) | (
            set(held.compiled) if held else set()
        )
        return self._rebuild(touched)

    def undeploy(self, api_id: str, labels: Iterable[str] = ()) -> dict[str, str]:
        """Remove an API from ``labels`` (all labels when empty).

        Raises:
            NotFound: the API is not deployed (on any of those labels).
        """
        held = self._entries.get(api_id)
        wanted = set(labels)
        if held is None or (wanted and not wanted & set(held.compiled)):
            where = f" on {', '.join(sorted(wanted))}" if wanted else ""
            raise NotFound(f"API {api_id} is not deployed{where}")
        kept = []
        for definition in held.definitions:
            remaining = [d for d in deployments_of(definition) if wanted and d.name not in wanted]
            if remaining:
                api = definition_pb2.ApiDefinition()
                api.CopyFrom(definition)
                del api.deployments[:]
                api.deployments.extend(remaining)
                kept.append(api)
        if not kept:
            del self._entries[api_id]
            self._unpersist(held.api)
        else:
            entry = build_entry(kept)
            self._entries[api_id] = entry
            self._persist(entry)
        return self._rebuild(set(held.compiled))

    def find(self, name: str, version: str, vhost: str = "") -> list[Entry]:
        """Deployed APIs with this name and version (and a label on ``vhost`` if given)."""
        return [
            e
            for e in self.entries()
            if e.api.name == name
            and e.api.version == version
            and (not vhost or any(r.route.vhost == vhost for r in e.compiled.values()))
        ]

    def labels_on_vhost(self, entry: Entry, vhost: str) -> list[str]:
        return sorted(label for label, r in entry.compiled.items() if r.route.vhost == vhost)

    def sync(
        self, apis: Iterable[definition_pb2.ApiDefinition]
    ) -> tuple[dict[str, str], list[str]]:
        """Replace every control-plane-owned API with ``apis``; the bad ones are reported, skipped.

        Returns:
            The new version of every label that changed, and one error line per refused API.
        """
        errors: list[str] = []
        kept = {i: e for i, e in self._entries.items() if e.source != SOURCE_CONTROL_PLANE}
        fresh: dict[str, Entry] = {}
        # (label, vhost, base path) -> API id, kept up to date as APIs are accepted: one lookup
        # per API instead of comparing every pair (10,000 APIs took 100 s that way).
        served = {key: i for i, e in kept.items() for key in served_keys(e)}
        for api_id, group in merge_by_id(apis).items():
            for api in group:
                if not api.source:
                    api.source = SOURCE_CONTROL_PLANE
            try:
                entry = build_entry(group)
            except ValueError as exc:
                errors.append(f"{api_id}: {exc}")
                continue
            if api_id in kept:
                errors.append(f"{api_id}: id is owned by the CLI")
                continue
            clashes = clashes_with(served, entry)
            if clashes:
                errors.append(f"{api_id}: {'; '.join(clashes)}")
                continue
            fresh[api_id] = entry
            served.update(dict.fromkeys(served_keys(entry), api_id))
        touched = {
            label
            for e in self._entries.values()
            if e.source == SOURCE_CONTROL_PLANE
            for label in e.compiled
        } | {label for e in fresh.values() for label in e.compiled}
        self._entries = {**kept, **fresh}
        return self._rebuild(touched), errors

    def put_subscription_data(self, data: subscription_pb2.SubscriptionData) -> dict[str, str]:
        """Replace the subscription data served on every label; returns every label's version.

        Raises:
            InvalidSubscriptionData: the set is refused as a whole (nothing changes).
        """
        return self.cache.set_shared(to_resources(data))

    def subscription_counts(self) -> dict[str, int]:
        """Type URL -> number of items in the current subscription data set."""
        return {type_url: len(named) for type_url, named in self.cache.shared().items()}

    def _rebuild(self, labels: Iterable[str]) -> dict[str, str]:
        versions: dict[str, str] = {}
        for label in sorted(labels):
            routes: dict[str, any_pb2.Any] = {}
            policies: dict[str, any_pb2.Any] = {}
            for entry in self._entries.values():
                res = entry.compiled.get(label)
                if res is not None:
                    routes[entry.api.id] = _pack(res.route)
                    policies[entry.api.id] = _pack(res.policy)
            self.cache.set(label, {ROUTE_TYPE_URL: routes, API_POLICY_TYPE_URL: policies})
            versions[label] = self.cache.version(label)
        return versions

    # ---- persistence of CLI deployments ---------------------------------------------------

    def _path(self, api_id: str) -> Path | None:
        if self.store_dir is None:
            return None
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", api_id)[:80]
        digest = hashlib.sha256(api_id.encode()).hexdigest()[:12]
        return self.store_dir / f"{readable}-{digest}.pb"

    def _persist(self, entry: Entry) -> None:
        path = self._path(entry.api.id)
        if path is None:
            return
        if entry.source != SOURCE_ADAPTER:  # the control plane took it over: it re-syncs it
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(entry.api.SerializeToString(deterministic=True))
        tmp.replace(path)

    def _unpersist(self, api: definition_pb2.ApiDefinition) -> None:
        path = self._path(api.id)
        if path is not None:
            path.unlink(missing_ok=True)

    def load(self) -> int:
        """Redeploy the CLI deployments saved by a previous run; bad files are logged, skipped."""
        if self.store_dir is None or not self.store_dir.is_dir():
            return 0
        loaded = 0
        for path in sorted(self.store_dir.glob("*.pb")):
            api = definition_pb2.ApiDefinition()
            try:
                api.ParseFromString(path.read_bytes())
                api.source = SOURCE_ADAPTER
                self.deploy(api, override=True)
                loaded += 1
            except (DecodeError, ValueError, Conflict, OSError) as exc:
                log.warning("skipping saved API %s: %s", path.name, exc)
        return loaded
