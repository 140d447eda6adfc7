"""The router's Prometheus metrics, fed by the router itself, never by the analytics queue.

The analytics queue drops its oldest events when full; metrics must not. So:

- handshakes and closes are counted when they happen (:meth:`RouterMetrics.handshake`,
  :meth:`RouterMetrics.connection_closed`), once per connection, not per frame;
- frames, messages, bytes and throttled messages are read at scrape time from the relays' own
  counters (the frame scanners count them anyway): the totals of the connections that ended plus
  the current counters of the live ones, through :class:`Traffic`;
- gauges that mirror existing state (active connections, xDS version, dropped analytics events)
  are read at scrape time too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from router.analytics import Counts
from router.decisions import DecisionCache
from wsgate_common.metrics import Callbacks, render

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RULE_CAUSES = frozenset(("rule", "token expiry"))


class Traffic(Collector):
    """Frames, messages, bytes (by direction) and throttled messages, read once per scrape."""

    def __init__(self, read: Callable[[], Counts]) -> None:
        self.read = read

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic values: registering must not read them

    def collect(self) -> Iterator[Metric]:
        c = self.read()
        per_direction = (
            (
                "wsgate_router_frames",
                "WebSocket frames relayed; direction up = client to backend, down = backend to "
                "client",
                c.frames_up,
                c.frames_down,
            ),
            (
                "wsgate_router_messages",
                "WebSocket data messages relayed, by direction",
                c.messages_up,
                c.messages_down,
            ),
            (
                "wsgate_router_bytes",
                "Bytes relayed after the handshake (frame headers included), by direction",
                c.bytes_up,
                c.bytes_down,
            ),
        )
        for name, documentation, up, down in per_direction:
            family = CounterMetricFamily(name, documentation, labels=["direction"])
            family.add_metric(["up"], up)
            family.add_metric(["down"], down)
            yield family
        throttled = CounterMetricFamily(
            "wsgate_router_messages_throttled",
            "Data messages refused by a quota, both directions",
        )
        throttled.add_metric([], c.throttled)
        yield throttled


class RouterMetrics:
    def __init__(
        self,
        active: Callable[[], float],
        xds_version: Callable[[], str],
        dropped: Callable[[], float],
        traffic: Callable[[], Counts],
        decisions: DecisionCache | None = None,
        relay: Callable[[], dict[tuple[str, ...], float]] | None = None,
        relay_path: str = "python",
        core_handshakes: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.handshakes = Counter(
            "wsgate_router_handshakes",
            "WebSocket upgrade requests by result (allowed = upgraded) and HTTP status",
            ["result", "status"],
            registry=r,
        )
        self.handshake_seconds = Histogram(
            "wsgate_router_handshake_seconds",
            "Time from the upgrade request to the router's answer (101 or error)",
            buckets=HANDSHAKE_BUCKETS,
            registry=r,
        )
        r.register(Traffic(traffic))
        # labels() looks its child up under a lock with checks, per call: keep the children
        # of the few label values seen (status codes, close codes) at hand instead
        self._handshake_children: dict[tuple[bool, int], Counter] = {}
        self._close_children: dict[tuple[int | None, str], Counter] = {}
        self.closes = Counter(
            "wsgate_router_connection_closes",
            "Closed connections by close code and by who closed them",
            ["code", "by"],
            registry=r,
        )
        self.rule_closes = Counter(
            "wsgate_router_rule_closes",
            "Connections closed by an enforcer rule or at token expiry, by reason",
            ["reason"],
            registry=r,
        )
        callbacks = Callbacks(r)
        callbacks.gauge(
            "wsgate_router_connections_active", "WebSocket connections being relayed", active
        )
        callbacks.gauge(
            "wsgate_router_xds_version_info",
            "Version of the route snapshot in use (the value is always 1)",
            lambda: {(xds_version(),): 1.0},
            labels=("version",),
        )
        if relay is not None:
            callbacks.gauge(
                "wsgate_router_relay_info",
                "Relay path of plaintext connections: native (the compiled core) or python "
                "(the value is always 1; wss always uses the python path)",
                lambda: {(relay_path,): 1.0},
                labels=("path",),
            )
            callbacks.gauge(
                "wsgate_router_connections_by_relay",
                "WebSocket connections being relayed, by relay path",
                relay,
                labels=("path",),
            )
        if core_handshakes is not None:
            callbacks.counter(
                "wsgate_router_core_handshakes",
                "Plaintext connections accepted by the relay core, by outcome: accepted (all), "
                "relayed (upgraded with the core's I/O), relayed_alone (of those, started by the "
                "core on a plain backend 101), planned (done by the core alone from a "
                "handshake plan: a repeat of a request Python decided), handed_back (to the "
                "asyncio path)",
                core_handshakes,
                labels=("outcome",),
            )
        callbacks.counter(
            "wsgate_router_analytics_dropped",
            "Analytics events dropped because the queue was full (metrics are not affected)",
            dropped,
        )
        if decisions is not None:
            cache = decisions
            callbacks.counter(
                "wsgate_router_decision_cache_lookups",
                "Handshakes looked up in the decision cache, by result (hit: no enforcer Check)",
                lambda: {("hit",): float(cache.hits), ("miss",): float(cache.misses)},
                labels=("result",),
            )
            callbacks.counter(
                "wsgate_router_decision_cache_evictions",
                "Cached allows forgotten, by cause (rule, expired, capacity, flush)",
                lambda: {(cause,): float(n) for cause, n in cache.evicted.items()},
                labels=("cause",),
            )
            callbacks.gauge(
                "wsgate_router_decision_cache_entries",
                "Allowed decisions held; the cache is bypassed (and empty) while the rules "
                "stream is down",
                lambda: float(len(cache)),
            )
            callbacks.gauge(
                "wsgate_router_decision_cache_usable",
                "1 while the decision cache is used (on, rules stream up, data version known)",
                lambda: float(cache.usable),
            )

    def handshake(self, allowed: bool, status: int, seconds: float) -> None:
        """One upgrade request answered (101 or an error)."""
        child = self._handshake_children.get((allowed, status))
        if child is None:
            child = self.handshakes.labels("allowed" if allowed else "denied", str(status))
            self._handshake_children[(allowed, status)] = child
        child.inc()
        self.handshake_seconds.observe(seconds)

    def connection_closed(self, code: int | None, by: str, cause: str, reason: str) -> None:
        """One relayed connection ended."""
        child = self._close_children.get((code, by))
        if child is None:
            child = self.closes.labels(str(code) if code is not None else "none", by or "unknown")
            self._close_children[(code, by)] = child
        child.inc()
        if cause in RULE_CAUSES:
            self.rule_closes.labels(reason or cause).inc()

    def render(self) -> bytes:
        return render(self.registry)
