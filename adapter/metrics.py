"""The adapter's Prometheus metrics (served on the REST port at ``/metrics``).

Snapshot versions, connected clients, ACK/NACK totals and APIs per label mirror state the
adapter keeps anyway and are read at scrape time; only push latency is observed as it happens.
A snapshot version is ``"<counter>.<epoch>"``: the gauge carries the counter.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram

from adapter.cache import SnapshotCache
from adapter.deployments import Registry
from adapter.xds import XdsStatus
from wsgate_common.metrics import Callbacks

PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def version_counter(version: str) -> float:
    """``"12.ab34cd56"`` -> 12.0; anything else -> 0.0."""
    head = version.partition(".")[0]
    return float(head) if head.isdigit() else 0.0


def snapshot_versions(cache: SnapshotCache) -> dict[tuple[str, ...], float]:
    return {
        (label, type_url): version_counter(version)
        for label, by_type in cache.versions().items()
        for type_url, version in by_type.items()
    }


def apis_per_label(registry: Registry) -> dict[tuple[str, ...], float]:
    counts: dict[tuple[str, ...], float] = {(label,): 0.0 for label in registry.cache.nodes()}
    for entry in registry.entries():
        for label in entry.compiled:
            counts[(label,)] = counts.get((label,), 0.0) + 1
    return counts


class AdapterMetrics:
    """One registry per adapter process (several adapters may share a test process)."""

    def __init__(self, registry: Registry, status: XdsStatus) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.push_seconds = Histogram(
            "wsgate_adapter_push_seconds",
            "Time to compile a change and publish the new snapshots, by operation",
            ["op"],
            buckets=PUSH_BUCKETS,
            registry=self.registry,
        )
        cb = Callbacks(self.registry)
        cb.gauge(
            "wsgate_adapter_snapshot_version",
            "Snapshot version counter served, per label (xDS node id) and type URL",
            lambda: snapshot_versions(registry.cache),
            ["label", "type"],
        )
        cb.gauge(
            "wsgate_adapter_apis",
            "APIs deployed per gateway label",
            lambda: apis_per_label(registry),
            ["label"],
        )
        cb.gauge(
            "wsgate_adapter_xds_clients",
            "Connected xDS clients per label",
            status.connected,
            ["label"],
        )
        cb.counter(
            "wsgate_adapter_xds_acks",
            "xDS responses ACKed, per label and type URL",
            lambda: dict(status.acks_by.items()),
            ["label", "type"],
        )
        cb.counter(
            "wsgate_adapter_xds_nacks",
            "xDS responses rejected (NACKed) by a client, per label and type URL",
            lambda: dict(status.nacks_by),
            ["label", "type"],
        )

    @contextlib.contextmanager
    def timed(self, op: str) -> Iterator[None]:
        """Observe the block's duration as one push of kind ``op`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.push_seconds.labels(op).observe(time.perf_counter() - started)
