"""The router's live connections: closing them by enforcer rule or at token expiry.

A connection is registered as soon as the enforcer allowed its handshake (before the backend
is connected), under the identity the verdict gave it. A rule that arrives while the backend
handshake is still running marks the connection doomed: it is closed right after its relay
starts. Rules received while the enforcer was still deciding (after the Check was sent) are
replayed against the connection at registration, so a revocation racing a handshake is not
missed. Token expiry is one ``loop.call_at`` timer per connection, cancelled when it ends.

:meth:`LiveConnections.snapshot` and :meth:`LiveConnections.close_identity` serve Reconcile: the
distinct identities of the live connections go to the enforcer, which answers the ones its current
state refuses; each such identity's connections are closed like by a rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque

from router.native import NativeRelay, NativeThrottle
from router.registry import ConnectionRegistry, Identity, selects
from router.relay import Relay
from router.rules import close_code_of, describe, reason_of
from router.throttle import ConnectionThrottle
from wsgate_proto import enforcer_pb2

log = logging.getLogger(__name__)

TOKEN_EXPIRED = "token expired"
RULE_MEMORY = 10.0  # seconds a received rule is kept for handshakes that were in flight


class Live:
    """One connection from its allowed handshake until it ends."""

    __slots__ = ("checked_at", "doom", "expiry", "identity", "relay", "subscription_id", "throttle")

    def __init__(self, identity: Identity, checked_at: float, subscription_id: str = "") -> None:
        self.identity = identity
        self.subscription_id = subscription_id  # set when allowed under a subscription
        self.checked_at = checked_at  # monotonic time the Check was sent
        self.relay: Relay | NativeRelay | None = None
        self.doom: tuple[int, str, str] | None = None  # code, reason, cause: close once started
        self.expiry: asyncio.TimerHandle | None = None
        self.throttle: ConnectionThrottle | NativeThrottle | None = None


class LiveConnections:
    """Registry + rules + expiry timers; ``stats`` counts connections closed by each cause."""

    def __init__(self) -> None:
        self.registry: ConnectionRegistry[Live] = ConnectionRegistry()
        self.stats: Counter[str] = Counter()
        self._recent: deque[tuple[float, enforcer_pb2.ConnectionRule]] = deque()

    def __len__(self) -> int:
        return len(self.registry)

    def begin(self, identity: Identity, checked_at: float, subscription_id: str = "") -> Live:
        """Register an allowed handshake; apply rules that arrived since its Check was sent."""
        live = Live(identity, checked_at, subscription_id)
        self.registry.add(live, identity)
        for received, rule in self._recent:
            if received >= checked_at and selects(
                identity, rule.token_id, rule.application_id, rule.api_id, rule.key_type
            ):
                live.doom = (close_code_of(rule), reason_of(rule), "rule " + describe(rule))
        return live

    def attach(self, live: Live, relay: Relay | NativeRelay, token_expires_at: int) -> None:
        """The relay started: close it now if doomed, else arm its expiry timer."""
        live.relay = relay
        if live not in self.registry:  # it already ended while starting
            return
        if live.doom is not None:
            self._close(live, *live.doom)
            return
        if token_expires_at > 0:
            loop = asyncio.get_running_loop()
            delay = max(0.0, token_expires_at - time.time())
            live.expiry = loop.call_at(loop.time() + delay, self._expire, live)

    def end(self, live: Live) -> None:
        """The connection is gone (or its handshake failed): forget it, release its quotas."""
        self.registry.remove(live)
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        if live.throttle is not None:
            live.throttle.release(time.monotonic())
            live.throttle = None

    def apply_rule(self, rule: enforcer_pb2.ConnectionRule) -> int:
        """Close every live connection the rule selects; returns how many were closed."""
        now = time.monotonic()
        recent = self._recent
        recent.append((now, rule))
        while recent and recent[0][0] < now - RULE_MEMORY:
            recent.popleft()
        matches = self.registry.match(
            rule.token_id, rule.application_id, rule.api_id, rule.key_type
        )
        if not matches:
            return 0
        code, reason, cause = close_code_of(rule), reason_of(rule), "rule " + describe(rule)
        return sum(self._close(live, code, reason, cause) for live in matches)

    def snapshot(self) -> list[tuple[Identity, str]]:
        """The distinct (identity, subscription id) of the live connections, in a stable order."""
        distinct = {(live.identity, live.subscription_id) for live, _ in self.registry.items()}
        return sorted(distinct, key=lambda pair: (pair[0].values(), pair[1]))

    def close_identity(
        self, identity: Identity, subscription_id: str, code: int, reason: str, cause: str
    ) -> int:
        """Close every live connection allowed as exactly this identity; returns how many."""
        matches = (
            self.registry.match(*identity.values())
            if any(identity.values())
            else [live for live, _ in self.registry.items()]
        )
        return sum(
            self._close(live, code, reason, cause)
            for live in matches
            if live.identity == identity and live.subscription_id == subscription_id
        )

    def _expire(self, live: Live) -> None:
        live.expiry = None
        self._close(live, 1008, TOKEN_EXPIRED, "token expiry")

    def _close(self, live: Live, code: int, reason: str, cause: str) -> bool:
        relay = live.relay
        if relay is None:
            live.doom = (code, reason, cause)
            return False
        kind = "token expiry" if cause == "token expiry" else "rule"
        if not relay.terminate(code, reason, cause=kind):
            return False
        self.stats["token_expired" if cause == "token expiry" else "closed_by_rule"] += 1
        ident = live.identity
        log.info(
            "closing %s api=%s app=%s key_type=%s: %s (%d), by %s",
            relay.info.request_id,
            relay.info.api,
            ident.application_id or "-",
            ident.key_type or "-",
            reason,
            code,
            cause,
            extra={"request_id": relay.info.request_id, "close_code": code, "reason": reason},
        )
        return True
