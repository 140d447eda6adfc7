"""The router's live connections: closing them by enforcer rule or at token expiry.

A connection is registered as soon as the enforcer allowed its handshake (before the backend
is connected), under the identity the verdict gave it. A rule that arrives while the backend
handshake is still running marks the connection doomed: it is closed right after its relay
starts. Rules received while the enforcer was still deciding (after the Check was sent) are
replayed against the connection at registration, so a revocation racing a handshake is not
missed. Token expiry is one ``loop.call_at`` timer per connection, cancelled when it ends.

A rule closes only connections the enforcer allowed *before* the change that made the rule.
The rules stream and the Check answers travel separately, so the router's clock cannot tell:
a "subscription blocked" rule may reach the router after the subscription was unblocked again
and a new handshake allowed. The enforcer's data version orders them: each Check answer carries
the version it was decided at, and the stream announces each version right after the rules of
the change that led to it. So a rule received after the connection's version was announced
is newer than its decision and closes it; a rule received while that version is still to come
was already taken into account by the decision and does not. Should the version not be
announced within :data:`PENDING_GRACE` (another enforcer, with another version, answered the
Check), the rules held back meanwhile are applied after all: never a missed close.

:meth:`LiveConnections.snapshot` and :meth:`LiveConnections.close_identity` serve Reconcile: the
distinct identities of the live connections go to the enforcer, which answers the ones its current
state refuses; each such identity's connections are closed like by a rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque

from router.native import NativeRelay, NativeThrottle
from router.registry import ConnectionRegistry, Identity, selects
from router.relay import Relay
from router.rules import close_code_of, describe, reason_of
from router.throttle import ConnectionThrottle
from wsgate_proto import enforcer_pb2

log = logging.getLogger(__name__)

TOKEN_EXPIRED = "token expired"
RULE_MEMORY = 10.0  # seconds a received rule is kept for handshakes that were in flight
PENDING_GRACE = 1.0  # seconds a decision's data version may take to be announced on the stream
VERSIONS_KEPT = 256  # announced data versions remembered (with when, in stream order)

Close = tuple[int, str, str]  # code, reason, cause


class Live:
    """One connection from its allowed handshake until it ends."""

    __slots__ = (
        "checked_at",
        "doom",
        "expiry",
        "held",
        "identity",
        "relay",
        "subscription_id",
        "throttle",
        "version",
    )

    def __init__(
        self, identity: Identity, checked_at: float, subscription_id: str = "", version: str = ""
    ) -> None:
        self.identity = identity
        self.subscription_id = subscription_id  # set when allowed under a subscription
        self.checked_at = checked_at  # monotonic time the Check was sent
        self.version = version  # the enforcer data version it was allowed at ("" unknown)
        self.relay: Relay | NativeRelay | None = None
        self.doom: Close | None = None  # close once started
        # While its version is not announced yet: the closes of the rules received meanwhile
        # (older than its decision unless the version never comes), and since when it waits.
        self.held: tuple[float, list[Close]] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.throttle: ConnectionThrottle | NativeThrottle | None = None


class LiveConnections:
    """Registry + rules + expiry timers; ``stats`` counts connections closed by each cause."""

    def __init__(self, grace: float = PENDING_GRACE) -> None:
        self.registry: ConnectionRegistry[Live] = ConnectionRegistry()
        self.stats: Counter[str] = Counter()
        self.grace = grace
        self._seq = 0  # stream items (rules and version notices) received, in order
        self._recent: deque[tuple[float, int, enforcer_pb2.ConnectionRule]] = deque()
        self._announced: OrderedDict[str, int] = OrderedDict()  # version -> its first notice
        self._waiting: dict[str, set[Live]] = {}  # version not announced yet -> its connections
        self._settling: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.registry)

    def begin(
        self,
        identity: Identity,
        checked_at: float,
        subscription_id: str = "",
        version: str = "",
        now: float | None = None,
    ) -> Live:
        """Register an allowed handshake (decided at data ``version``); apply the rules that
        arrived since its Check was sent and are newer than its decision."""
        now = time.monotonic() if now is None else now
        live = Live(identity, checked_at, subscription_id, version)
        self.registry.add(live, identity)
        announced = self._announced.get(version) if version else None
        if version and announced is None:
            live.held = (now, [])
            self._waiting.setdefault(version, set()).add(live)
        for received, seq, rule in self._recent:
            if received < checked_at or not selects(
                identity, rule.token_id, rule.application_id, rule.api_id, rule.key_type
            ):
                continue  # known before the Check was sent, or not about this connection
            close = (close_code_of(rule), reason_of(rule), "rule " + describe(rule))
            if announced is not None:
                if seq > announced:  # after its version: a change the decision did not see
                    live.doom = close
            elif live.held is not None:
                live.held[1].append(close)
            else:
                live.doom = close  # no version to order by: the Check's time decides
        if live.held is not None and live.held[1]:
            self._schedule_settle(now)
        return live

    def announce(self, version: str, now: float | None = None) -> None:
        """The rules stream announced the enforcer's data ``version``: every rule before it
        on the stream was known to decisions taken at it."""
        self._seq += 1
        if version not in self._announced:
            self._announced[version] = self._seq
            while len(self._announced) > VERSIONS_KEPT:
                self._announced.popitem(last=False)
        for live in self._waiting.pop(version, ()):
            live.held = None  # the rules held back for it were older than its decision
        self.settle(time.monotonic() if now is None else now)

    def settle(self, now: float) -> int:
        """Apply the held-back rules of connections whose version was not announced within
        the grace (another enforcer's version, or a very late stream); returns how many
        connections they closed."""
        self._settling = None
        closed = 0
        for version, lives in list(self._waiting.items()):
            for live in list(lives):
                assert live.held is not None
                since, closes = live.held
                if since + self.grace > now:
                    continue
                live.held = None
                lives.discard(live)
                for close in closes:
                    closed += self._close(live, *close)
            if not lives:
                del self._waiting[version]
        if any(live.held and live.held[1] for lives in self._waiting.values() for live in lives):
            self._schedule_settle(now)
        return closed

    def _schedule_settle(self, now: float) -> None:
        """A timer for :meth:`settle` once the oldest wait with held rules is over (not
        without a running loop: callers then call :meth:`settle` themselves)."""
        if self._settling is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        due = min(
            live.held[0] + self.grace
            for lives in self._waiting.values()
            for live in lives
            if live.held is not None and live.held[1]
        )
        self._settling = loop.call_later(
            max(0.0, due - now) + 0.001, lambda: self.settle(time.monotonic())
        )

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
        if live.held is not None:
            live.held = None
            waiting = self._waiting.get(live.version)
            if waiting is not None:
                waiting.discard(live)
                if not waiting:
                    del self._waiting[live.version]
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        if live.throttle is not None:
            live.throttle.release(time.monotonic())
            live.throttle = None

    def apply_rule(self, rule: enforcer_pb2.ConnectionRule, now: float | None = None) -> int:
        """Close every live connection the rule selects and that was allowed before it (a
        connection whose version is still to come is held until it is); returns how many
        were closed."""
        now = time.monotonic() if now is None else now
        self._seq += 1
        recent = self._recent
        recent.append((now, self._seq, rule))
        while recent and recent[0][0] < now - RULE_MEMORY:
            recent.popleft()
        matches = self.registry.match(
            rule.token_id, rule.application_id, rule.api_id, rule.key_type
        )
        if not matches:
            return 0
        close = (close_code_of(rule), reason_of(rule), "rule " + describe(rule))
        closed = 0
        held = False
        for live in matches:
            if live.held is not None:
                live.held[1].append(close)
                held = True
            else:
                closed += self._close(live, *close)
        if held:
            self._schedule_settle(now)
        return closed

    def snapshot(self) -> list[tuple[Identity, str]]:
        """The distinct (identity, subscription id) of the live connections, in a stable order."""
        distinct = {(live.identity, live.subscription_id) for live, _ in self.registry.items()}
        return sorted(distinct, key=lambda pair: (pair[0].values(), pair[1]))

    def close_identity(
        self,
        identity: Identity,
        subscription_id: str,
        code: int,
        reason: str,
        cause: str,
        checked_before: float | None = None,
    ) -> int:
        """Close every live connection allowed as exactly this identity; returns how many.

        ``checked_before``: only connections whose Check was sent by then (Reconcile's
        snapshot time). One checked later was decided on a state at least as new as the
        enforcer's refusal, e.g. after an unblock, and must stay open; a change after that
        reaches it as a rule."""
        matches = (
            self.registry.match(*identity.values())
            if any(identity.values())
            else [live for live, _ in self.registry.items()]
        )
        return sum(
            self._close(live, code, reason, cause)
            for live in matches
            if live.identity == identity
            and live.subscription_id == subscription_id
            and (checked_before is None or live.checked_at <= checked_before)
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
