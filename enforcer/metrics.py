"""The enforcer's Prometheus metrics (``GET /metrics`` on its HTTP port).

Decisions are counted where they are logged (one Check = one increment and one histogram
observation); everything else mirrors state that already exists and is read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from enforcer.policies import PolicyStore
from enforcer.subscriptions import SubscriptionState
from enforcer.watch import ConnectionWatch
from wsgate_common.metrics import Callbacks, render

DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)


def subscription_sizes(state: SubscriptionState) -> dict[tuple[str, ...], float]:
    """How many items of each kind of subscription data the enforcer holds."""
    return {
        ("applications",): len(state.applications),
        ("subscriptions",): len(state.subscriptions),
        ("key_mappings",): len(state.key_mappings),
        ("throttle_policies",): len(state.policies),
        ("key_managers",): len(state.key_managers),
        ("revoked_tokens",): len(state.revoked),
    }


class EnforcerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.decisions = Counter(
            "wsgate_enforcer_decisions",
            "Handshake decisions by result (allowed/denied) and code (HTTP status, 200 if allowed)",
            ["result", "code"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "wsgate_enforcer_decision_seconds",
            "Time to decide one handshake (JWKS refresh included when one was needed)",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.callbacks = Callbacks(self.registry)

    def decided(self, allowed: bool, http_status: int, seconds: float) -> None:
        code = "200" if allowed else str(http_status or 403)
        self.decisions.labels("allowed" if allowed else "denied", code).inc()
        self.decision_seconds.observe(seconds)

    def watch_state(
        self,
        *,
        nacks: Callable[[], float],
        subscriptions: Callable[[], SubscriptionState],
        policies: PolicyStore,
        watch: ConnectionWatch,
    ) -> None:
        """Export the process's state objects (called once at start)."""
        cb = self.callbacks
        cb.counter("wsgate_enforcer_xds_nacks", "xDS updates rejected (NACKed)", nacks)
        cb.gauge(
            "wsgate_enforcer_subscription_data_items",
            "Subscription data held, by kind",
            lambda: subscription_sizes(subscriptions()),
            labels=("kind",),
        )
        cb.gauge(
            "wsgate_enforcer_api_policies",
            "API policies held",
            lambda: len(policies.current.apis),
        )
        cb.gauge(
            "wsgate_enforcer_watch_streams",
            "Routers connected to WatchConnections",
            lambda: watch.listeners,
        )
        cb.gauge(
            "wsgate_enforcer_connection_rules",
            "Connection rules in force",
            lambda: len(watch.in_force()),
        )

    def render(self) -> bytes:
        return render(self.registry)
