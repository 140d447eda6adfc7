"""WatchConnections: the connection rules in force, streamed to every router that listens.

:class:`ConnectionWatch` keeps the current :class:`~enforcer.rules.RuleState`; after each applied
xDS update :meth:`ConnectionWatch.update` derives the next one and hands the rules that are new
to every listener. A new listener first gets every rule in force. Listeners are asyncio queues,
so everything runs on the enforcer's one loop without locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from enforcer.policies import PolicySet
from enforcer.rules import EMPTY_RULES, LINGER, Rule, RuleState, next_rules
from enforcer.subscriptions import SubscriptionState

log = logging.getLogger(__name__)

MAX_BACKLOG = 100_000  # a listener this far behind is dropped (it reconnects and resyncs)


class ListenerTooSlow(Exception):
    """A listener's backlog overflowed; its stream ends so it reconnects and starts over."""


class ConnectionWatch:
    def __init__(self, clock: Callable[[], float] = time.time, linger: float = LINGER) -> None:
        self.clock = clock
        self.linger = linger
        self.state: RuleState = EMPTY_RULES
        self._listeners: set[asyncio.Queue[Rule | None]] = set()

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
                if queue.qsize() >= MAX_BACKLOG:
                    queue.put_nowait(None)  # tells the stream to end
                    self._listeners.discard(queue)
                    break
                queue.put_nowait(rule)
        return new

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    async def stream(self) -> AsyncIterator[Rule]:
        """Every rule in force, then each new one, until cancelled.

        Raises:
            ListenerTooSlow: the consumer fell :data:`MAX_BACKLOG` rules behind.
        """
        queue: asyncio.Queue[Rule | None] = asyncio.Queue()
        # Taking the rules in force and registering happen with no await in between, so no
        # update can fall in the gap.
        current = self.in_force()
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
