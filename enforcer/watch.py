"""WatchConnections: the connection rules in force, streamed to every router that listens.

:class:`ConnectionWatch` keeps the current :class:`~enforcer.rules.RuleState`; after each applied
xDS update :meth:`ConnectionWatch.update` derives the next one and hands the rules that are new
to every listener. A new listener first gets every rule in force. Listeners are asyncio queues,
so everything runs on the enforcer's one loop without locks.

The watch also carries the *data version* (:attr:`ConnectionWatch.data_version`): a digest of
the xDS versions of everything a handshake decision reads, plus a counter of issuer key changes.
Every change is announced to listeners as a version notice after the rules it brought, and a new
listener gets the current version after the rules in force; routers flush their cached
decisions on it (router/decisions.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from enforcer.policies import PolicySet
from enforcer.rules import EMPTY_RULES, LINGER, Rule, RuleState, next_rules
from enforcer.subscriptions import SubscriptionState

log = logging.getLogger(__name__)

MAX_BACKLOG = 100_000  # a listener this far behind is dropped (it reconnects and resyncs)

Notice = Rule | str  # a rule, or a data version notice


class ListenerTooSlow(Exception):
    """A listener's backlog overflowed; its stream ends so it reconnects and starts over."""


class ConnectionWatch:
    def __init__(self, clock: Callable[[], float] = time.time, linger: float = LINGER) -> None:
        self.clock = clock
        self.linger = linger
        self.state: RuleState = EMPTY_RULES
        self._listeners: set[asyncio.Queue[Notice | None]] = set()
        self._sources = ""  # the xDS versions the last update saw
        self._keys = 0  # issuer key changes (a JWKS fetched, key managers replaced)
        self.data_version = data_version(self._sources, self._keys)

    def keys_changed(self) -> None:
        """The token issuers or their keys changed: a new data version (decisions may differ)."""
        self._keys += 1
        self._announce()

    def _announce(self) -> None:
        version = data_version(self._sources, self._keys)
        if version == self.data_version:
            return
        self.data_version = version
        for queue in list(self._listeners):
            self._put(queue, version)

    def _put(self, queue: asyncio.Queue[Notice | None], item: Notice) -> bool:
        if queue.qsize() >= MAX_BACKLOG:
            queue.put_nowait(None)  # tells the stream to end
            self._listeners.discard(queue)
            return False
        queue.put_nowait(item)
        return True

    def in_force(self) -> list[Rule]:
        return sorted(self.state.in_force(self.clock()))

    def update(
        self,
        policies: PolicySet,
        subscriptions: SubscriptionState,
        *,
        compare_apis: bool = True,
        compare_subscriptions: bool = True,
    ) -> list[Rule]:
        """Derive the rules from the current state; returns (and sends) the new ones."""
        now = self.clock()
        before = self.state.in_force(now)
        self.state = next_rules(
            self.state,
            policies,
            subscriptions,
            now,
            linger=self.linger,
            compare_apis=compare_apis,
            compare_subscriptions=compare_subscriptions,
        )
        new = sorted(self.state.in_force(now) - before)
        for rule in new:
            log.info("connection rule: %s", describe(rule))
        for queue in list(self._listeners):
            for rule in new:
                if not self._put(queue, rule):
                    break
        self._sources = "|".join(
            [policies.version, *(f"{k}={v}" for k, v in sorted(subscriptions.versions.items()))]
        )
        self._announce()
        return new

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    async def stream(self) -> AsyncIterator[Notice]:
        """Every rule in force and the data version, then each new rule or version, until
        cancelled.

        Raises:
            ListenerTooSlow: the consumer fell :data:`MAX_BACKLOG` rules behind.
        """
        queue: asyncio.Queue[Notice | None] = asyncio.Queue()
        # Taking the rules in force and registering happen with no await in between, so no
        # update can fall in the gap.
        current: list[Notice] = [*self.in_force(), self.data_version]
        self._listeners.add(queue)
        try:
            for rule in current:
                yield rule
            while True:
                news = await queue.get()
                if news is None:
                    raise ListenerTooSlow
                yield news
        finally:
            self._listeners.discard(queue)


def data_version(sources: str, keys: int) -> str:
    """A short digest of the decision data's versions (equal on enforcers fed the same data)."""
    return hashlib.sha256(f"{sources}#{keys}".encode()).hexdigest()[:16]


def describe(rule: Rule) -> str:
    selectors = [
        f"{name}={value}"
        for name, value in (
            ("token", rule.token_id),
            ("application", rule.application_id),
            ("api", rule.api_id),
            ("key_type", rule.key_type),
        )
        if value
    ]
    return f"close {' '.join(selectors)} with {rule.close_code} {rule.reason!r}"
