"""Prometheus helpers shared by the router and the enforcer (``prometheus_client``).

Each component keeps its metrics in its own :class:`~prometheus_client.CollectorRegistry`
(never the global one), so several instances can live in one test process. Values that
already exist somewhere (a length, a counter kept by another object) are exported with
:class:`Callbacks`, read at scrape time: nothing extra happens on the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Text exposition format 0.0.4: what every scraper understands (our names are all plain ASCII,
# so the text is the same as in the newer formats).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = float | Mapping[tuple[str, ...], float]  # one value, or one per label-value tuple


@dataclass(frozen=True, slots=True)
class Callback:
    name: str
    documentation: str
    kind: str  # "gauge" or "counter"
    read: Callable[[], Sample]
    labels: tuple[str, ...] = ()


class Callbacks(Collector):
    """Metrics whose values are read from callbacks at scrape time.

    A callback that raises is logged and its metric left out of that scrape: a broken
    reading never makes ``/metrics`` fail.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._callbacks: list[Callback] = []
        if registry is not None:
            registry.register(self)

    def gauge(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Sample],
        labels: Iterable[str] = (),
    ) -> None:
        self._callbacks.append(Callback(name, documentation, "gauge", read, tuple(labels)))

    def counter(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Sample],
        labels: Iterable[str] = (),
    ) -> None:
        """``name`` without the ``_total`` suffix (prometheus_client adds it)."""
        self._callbacks.append(Callback(name, documentation, "counter", read, tuple(labels)))

    def describe(self) -> Iterable[Metric]:
        return []  # values are dynamic: registering must not call the callbacks

    def collect(self) -> Iterator[Metric]:
        for cb in self._callbacks:
            try:
                value = cb.read()
            except Exception:
                log.warning("metric %s could not be read", cb.name, exc_info=True)
                continue
            family: GaugeMetricFamily | CounterMetricFamily
            if cb.kind == "counter":
                family = CounterMetricFamily(cb.name, cb.documentation, labels=cb.labels)
            else:
                family = GaugeMetricFamily(cb.name, cb.documentation, labels=cb.labels)
            if isinstance(value, Mapping):
                for label_values, sample in value.items():
                    family.add_metric(list(label_values), float(sample))
            else:
                family.add_metric([], float(value))
            yield family


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the text exposition format, as served on ``/metrics``."""
    return generate_latest(registry)


def parse_samples(text: str) -> dict[str, float]:
    """``{'name{label="v"}': value}`` from an exposition text (for tests and tools)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples
