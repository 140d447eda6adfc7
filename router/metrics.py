"""The router's Prometheus metrics, fed by analytics batches (a :class:`~router.analytics.Sink`).

Counters move when a batch is shipped (at least every flush interval, and when ``/metrics`` is
scraped, which flushes first), never per frame. Gauges that mirror existing state (active
connections, xDS version, dropped analytics events) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from router.analytics import ConnectionEvent, Event, HandshakeEvent
from wsgate_common.metrics import Callbacks, render

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RULE_CAUSES = frozenset(("rule", "token expiry"))


class RouterMetrics:
    def __init__(
        self,
        active: Callable[[], float],
        xds_version: Callable[[], str],
        dropped: Callable[[], float],
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
        self.frames = Counter(
            "wsgate_router_frames",
            "WebSocket frames relayed; direction up = client to backend, down = backend to client",
            ["direction"],
            registry=r,
        )
        self.messages = Counter(
            "wsgate_router_messages",
            "WebSocket data messages relayed, by direction",
            ["direction"],
            registry=r,
        )
        self.bytes = Counter(
            "wsgate_router_bytes",
            "Bytes relayed after the handshake (frame headers included), by direction",
            ["direction"],
            registry=r,
        )
        self.throttled = Counter(
            "wsgate_router_messages_throttled",
            "Client messages refused by a quota",
            registry=r,
        )
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
        callbacks.counter(
            "wsgate_router_analytics_dropped",
            "Analytics events dropped because the queue was full",
            dropped,
        )

    def write(self, batch: Sequence[Event]) -> None:
        for event in batch:
            if isinstance(event, HandshakeEvent):
                result = "allowed" if event.allowed else "denied"
                self.handshakes.labels(result, str(event.status)).inc()
                self.handshake_seconds.observe(event.latency_ms / 1000.0)
            elif isinstance(event, ConnectionEvent):
                self._connection(event)

    def _connection(self, event: ConnectionEvent) -> None:
        c = event.counts
        if c.frames_up:
            self.frames.labels("up").inc(c.frames_up)
        if c.frames_down:
            self.frames.labels("down").inc(c.frames_down)
        if c.messages_up:
            self.messages.labels("up").inc(c.messages_up)
        if c.messages_down:
            self.messages.labels("down").inc(c.messages_down)
        if c.bytes_up:
            self.bytes.labels("up").inc(c.bytes_up)
        if c.bytes_down:
            self.bytes.labels("down").inc(c.bytes_down)
        if c.throttled:
            self.throttled.inc(c.throttled)
        if event.final:
            code = str(event.close_code) if event.close_code is not None else "none"
            self.closes.labels(code, event.closed_by or "unknown").inc()
            if event.cause in RULE_CAUSES:
                self.rule_closes.labels(event.close_reason or event.cause).inc()

    def close(self) -> None:
        return None

    def render(self) -> bytes:
        return render(self.registry)
