"""A Python model of router/redis_store.py's Lua lease script, and a discrete-event driver for
LeasedCounters (simulated clock and round trips): the lease arithmetic tested without Redis."""

from __future__ import annotations

import bisect
import collections
import functools
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.lease import CURRENT, Clock, Health, LeasedCounter, LeaseReply, LeaseRequest, grant_size
from router.native import LeasePump
from router.relay import HOLD_MAX
from router.throttle import ConnectionThrottle, Held, InProcessCounterStore, Limit


@dataclass
class ScriptModel:
    """The script's arithmetic over one hash (sub-window -> reserved permits)."""

    limit: int
    sub_len: float
    subs: int
    routers: int
    counts: dict[int, int] = field(default_factory=dict)
    calls: int = 0

    def run(self, now: float, target: int, want: int, adjust: tuple[tuple[int, int], ...]):
        self.calls += 1
        c = math.floor(now / self.sub_len)
        target = min(max(target, c), c + 1)
        oldest = c - self.subs
        for b, d in adjust:
            b = c if b == CURRENT else b
            if oldest <= b <= c + 1 and d:
                if d < 0:
                    d = -min(-d, self.counts.get(b, 0))
                if d:
                    self.counts[b] = self.counts.get(b, 0) + d
        for b in [b for b in self.counts if b < oldest]:
            del self.counts[b]
        used = sum(v for b, v in self.counts.items() if b >= target - self.subs)
        remaining = self.limit - used
        grant = grant_size(want, remaining, self.routers)
        if grant:
            self.counts[target] = self.counts.get(target, 0) + grant
        return LeaseReply(grant, target, c, remaining - grant, now)


@dataclass
class Sim:
    """Routers (one LeasedCounter each) sharing one ScriptModel, with round trip ``rtt``;
    router i's monotonic clock is Redis' clock minus ``skews[i]``. During each of ``stalls``
    ((start, end), Redis time) every router's event loop is stuck: what it would run then (lease
    requests and replies, pump rounds, the Python relay's messages) runs at the stall's end."""

    limit: int
    window: float
    subs: int
    routers: int
    rtt: float = 0.001
    skews: tuple[float, ...] = ()
    fail_open: bool = True
    now: float = 0.0  # Redis time
    admitted: list[float] = field(default_factory=list)
    refused: int = 0
    redis_up: bool = True
    stalls: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        self.model = ScriptModel(self.limit, self.window / self.subs, self.subs, self.routers)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.skews = self.skews or tuple(100.0 + 7.0 * i for i in range(self.routers))
        self.health = [Health(fail_open=self.fail_open) for _ in range(self.routers)]
        self.counters = [
            LeasedCounter(
                self.limit,
                self.window,
                subs=self.subs,
                routers=self.routers,
                max_lease=1000,
                clock=Clock(),
                health=self.health[i],
                kick=functools.partial(self._kick, i),
            )
            for i in range(self.routers)
        ]

    def _kick(self, i: int, counter: LeasedCounter) -> None:
        self._at(self.loop_time(self.now), lambda: self._send(i, counter))

    def loop_time(self, t: float) -> float:
        """When a router's loop runs what is due at ``t`` (the end of a stall it falls in)."""
        for start, end in self.stalls:
            if start <= t < end:
                return end
        return t

    def local(self, i: int) -> float:
        return self.now - self.skews[i]

    def _at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), fn))

    def _send(self, i: int, counter: LeasedCounter) -> None:
        req = counter.request(self.local(i))
        if not self.redis_up:
            self._at(self.now + self.rtt, lambda: self._fail(i, counter, req))
            return
        self._at(self.now + self.rtt / 2, lambda: self._serve(i, counter, req))

    def _fail(self, i: int, counter: LeasedCounter, req: LeaseRequest) -> None:
        counter.failed(req)
        self.health[i].up = False
        self.replied(i)

    def _serve(self, i: int, counter: LeasedCounter, req: LeaseRequest) -> None:
        reply = self.model.run(self.now, req.target, req.want, req.adjust)
        at = self.loop_time(self.now + self.rtt / 2)
        self._at(at, lambda: self._granted(i, counter, req, reply))

    def _granted(
        self, i: int, counter: LeasedCounter, req: LeaseRequest, reply: LeaseReply
    ) -> None:
        counter.granted(req, reply, self.local(i))
        self.replied(i)

    def replied(self, i: int) -> None:
        """Router i's store got a reply (or a failure): RedisCounterStore.on_reply."""

    def run_until(self, t: float) -> None:
        while self._events and self._events[0][0] <= t:
            when, _, fn = heapq.heappop(self._events)
            self.now = max(self.now, when)
            fn()
        self.now = max(self.now, t)

    def message(self, i: int, t: float) -> bool:
        """Router i gets a message at Redis time t (the Python relay: its loop decides)."""
        t = self.loop_time(t)
        self.run_until(t)
        if self.admit(i, self.local(i)):
            self.admitted.append(t)
            return True
        self.refused += 1
        return False

    def admit(self, i: int, local: float) -> bool:
        """The python relay's decision: the counter itself."""
        counter = self.counters[i]
        if counter.available(local):
            counter.take(local)
            return True
        return False

    def worst_window(self) -> int:
        """Most messages admitted in any window of length ``window`` (Redis time)."""
        times = sorted(self.admitted)
        return max(
            (bisect.bisect_left(times, t + self.window) - k for k, t in enumerate(times)),
            default=0,
        )


@dataclass
class NativeSim(Sim):
    """The same routers on the native relay: each router's relay core (a real
    ``router._core.Core``, the simulated clock passed in) decides every message from the pool
    its :class:`router.native.LeasePump` fills from the counter, on its own thread (stalls do
    not stop it). The pump runs on every lease reply and every ``tick`` seconds, as NativeHub
    runs it; the core's own reports (EV_LEASE) are left out: on a loaded machine the loop
    answers them no sooner than that.

    A message the core holds (``hold``: its pool is dry, the counter did not say the window is)
    waits with the ones after it on the same router (the core stops reading that side) and is
    decided again when the core would feed it again: after a pump round (a put, credit or dry
    change moves the pool's generation) and when a slot's permits become usable.
    ``admitted`` has the time each message passed; ``delays`` how long each waited."""

    core_module: Any = None
    tick: float = 0.025
    hold: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.core = self.core_module.Core()
        self.handles: list[int] = []
        self.pumps: list[LeasePump] = []
        self.waiting: list[collections.deque[float]] = [collections.deque() for _ in self.counters]
        self.delays: list[float] = []
        for i, counter in enumerate(self.counters):
            key = f"api:r{i}"  # one core per router in real life: one key each here
            handle = self.core.acquire(key, self.limit, self.window, self.local(i), True)
            self.handles.append(handle)
            self.pumps.append(LeasePump(self.core, handle, counter, key))
            self._at(self.now, functools.partial(self._tick, i))

    def _tick(self, i: int) -> None:
        self.pumps[i].sync(self.local(i))
        self._feed(i)
        self._at(self.loop_time(self.now + self.tick), functools.partial(self._tick, i))

    def replied(self, i: int) -> None:
        self.pumps[i].sync(self.local(i))
        self._feed(i)

    def message(self, i: int, t: float) -> bool:
        """Router i's core reads a message at Redis time t (or holds it behind the waiting
        ones); True: not refused (yet)."""
        self.run_until(t)
        refused = self.refused
        self.waiting[i].append(t)
        self._feed(i)
        return self.refused == refused

    def _feed(self, i: int) -> None:
        """The core decides router i's waiting messages, in order, until one is held; those
        held HOLD_MAX already (the whole backlog: the core had read them) without holding."""
        waiting, local = self.waiting[i], self.local(i)
        hold_max = self.core_module.HOLD_MAX
        expired = bool(waiting) and self.now >= waiting[0] + hold_max
        while waiting:
            hold = self.hold and not expired
            got = self.core.admit((self.handles[i],), local, hold)
            if got <= -2:  # held: the side is read again when the pool changes
                state = self.core.lease_state(self.handles[i])
                starts = [f + self.skews[i] for n, f, e in state[:3] if n > 0 and local < f < e]
                # the core's own timers: a slot's permits become usable, or HOLD_MAX is over
                at = min([*starts, waiting[0] + hold_max])
                self._at(at + 1e-9, functools.partial(self._feed, i))
                return
            arrived = waiting.popleft()
            if got < 0:
                self.admitted.append(self.now)
                self.delays.append(self.now - arrived)
            else:
                self.refused += 1

    @property
    def held(self) -> int:
        """Messages still waiting in the cores."""
        return sum(len(w) for w in self.waiting)

    def close(self) -> None:
        self.core.close()


@dataclass
class PySim(Sim):
    """The same routers on the Python relay (router.relay): every message is decided on the
    router's event loop (a stall stops it: what arrives meanwhile is read and decided at its
    end) by a :class:`router.throttle.ConnectionThrottle` over the router's counter.

    With ``hold`` (router.relay's _GatedSide), a message the counter has nothing for while its
    window is not known to be exhausted (``LeasedCounter.waits``) is held with the ones after
    it on the same router (the side is not read) and decided again, on the loop, when the
    counter takes in a lease reply (``wake``, as RedisCounterStore calls it), when the next
    sub-window's lease begins, or after HOLD_MAX: then the backlog is decided without holding.
    Without ``hold``: the Python relay before holding (refused at once). ``delays``: how long
    each admitted message waited after the relay read it."""

    hold: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.throttles = [
            ConnectionThrottle((Limit(f"api:r{i}", "p", c, False),), InProcessCounterStore())
            for i, c in enumerate(self.counters)
        ]
        self.waiting: list[collections.deque[float]] = [collections.deque() for _ in self.counters]
        self.since = [0.0] * self.routers  # when router i's side was held (0: not held)
        self.turn = [0] * self.routers  # a timer set before the latest feed is stale
        self.wakes = [functools.partial(self._feed, i) for i in range(self.routers)]
        self.delays: list[float] = []

    def replied(self, i: int) -> None:
        self.counters[i].wake()

    def message(self, i: int, t: float) -> bool:
        """Router i's loop reads a message sent at Redis time t (or it waits unread behind the
        held ones); True: not refused (yet)."""
        t = self.loop_time(t)
        self.run_until(t)
        refused = self.refused
        self.waiting[i].append(t)
        if not self.since[i]:
            self._feed(i)
        return self.refused == refused

    def _timer(self, i: int, turn: int) -> None:
        if self.turn[i] == turn:
            self._feed(i)

    def _feed(self, i: int) -> None:
        waiting, local, counter = self.waiting[i], self.local(i), self.counters[i]
        counter.unwait(self.wakes[i])
        self.turn[i] += 1
        expired = bool(self.since[i]) and self.now >= self.since[i] + HOLD_MAX
        throttle = self.throttles[i]
        throttle.hold = self.hold and not expired
        while waiting:
            got = throttle.admit(local)
            if isinstance(got, Held):
                self.since[i] = self.since[i] or self.now
                counter.wait(self.wakes[i])
                at = self.since[i] + HOLD_MAX
                bounds = counter.next_bounds()
                if bounds is not None and local < bounds[0]:
                    at = min(at, bounds[0] + self.skews[i])
                turn = self.turn[i]
                self._at(self.loop_time(at), functools.partial(self._timer, i, turn))
                return
            arrived = waiting.popleft()
            if got is None:
                self.admitted.append(self.now)
                self.delays.append(self.now - arrived)
            else:
                self.refused += 1
        self.since[i] = 0.0

    @property
    def held(self) -> int:
        return sum(len(w) for w in self.waiting)
