"""Per-message throttling arithmetic, pure: no I/O, no clock of its own (``now`` is passed in).

Semantics (exact sliding window): a quota of N messages per W seconds admits a message at time
``t`` if and only if fewer than N messages were admitted in ``(t - W, t]``. So a burst of N
passes, the N+1th is refused, at most N messages ever pass in any window of length W, and a
message is never refused while fewer than N passed in the last W seconds. Slots come back one
by one, exactly W seconds after the message that used them (a continuous refill, not a reset
at fixed window edges, so there is no 2N burst across an edge).

Implementation: a ring of the admit times of the last N admitted messages. The N-th most
recent admit is the ring's oldest entry; the message is admitted when that entry is at least W
old. One compare and one store per message; 8 bytes per slot, allocated only as slots are first
used. Quotas above :data:`EXACT_LIMIT` messages per window (in practice "unlimited" for one
router) use a token bucket of the same burst and rate instead, so memory stays bounded: there,
a window may see up to 2N messages (N of burst + N refilled), never a burst above N.

Counters live in a :class:`CounterStore`, keyed by the quota key the enforcer chose
(``api:<api_id>``, ``sub:<app>:<api>``, ``app:<app>:<subscriber>``): every connection of this
router with the same key shares one counter. The in-process store is the only one for now;
a store shared between routers (Redis) implements the same protocol.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from wsgate_proto import enforcer_pb2

EXACT_LIMIT = 100_000
SWEEP_INTERVAL = 60.0  # seconds between sweeps of unused counters in the in-process store


class Counter(Protocol):
    """One quota key's counter: ``available`` asks, ``take`` records an admitted message."""

    limit: int
    window: float

    def available(self, now: float) -> bool: ...

    def take(self, now: float) -> None: ...

    def idle(self, now: float) -> bool:
        """True when the counter is indistinguishable from a fresh one (safe to forget)."""
        ...


class SlidingWindow:
    """Exact sliding-window log of the last ``limit`` admit times (see the module docstring)."""

    __slots__ = ("_head", "_ring", "last", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a quota needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._ring = array("d")
        self._head = 0  # index of the oldest entry once the ring is full
        self.last = float("-inf")  # time of the last admitted message

    def available(self, now: float) -> bool:
        ring = self._ring
        return len(ring) < self.limit or ring[self._head] <= now - self.window

    def take(self, now: float) -> None:
        ring = self._ring
        if len(ring) < self.limit:
            ring.append(now)
        else:
            ring[self._head] = now
            self._head = (self._head + 1) % self.limit
        self.last = now

    def idle(self, now: float) -> bool:
        return self.last <= now - self.window

    def untake(self, at: float, n: int) -> None:
        """Forget up to ``n`` admits recorded at time ``at`` (decided ahead, never used).

        A full ring loses the entry each admit overwrote; it was at least a window older than
        ``at`` (that is why the admit passed), so it comes back as ``-inf``, the oldest. Costs
        one step per entry newer than the ones forgotten (few: only what was lent since).
        """
        ring = self._ring
        k = 0  # entries newer than the one looked at (0: the newest)
        while n > 0 and k < len(ring):
            size = len(ring)
            full = size >= self.limit
            i = (self._head - 1 - k) % size if full else size - 1 - k
            value = ring[i]
            if value == at:
                if full:
                    for step in range(k, 0, -1):  # the newer ones move one step older
                        ring[(self._head - 1 - step) % size] = ring[(self._head - step) % size]
                    self._head = (self._head - 1) % size
                    ring[self._head] = float("-inf")
                else:
                    del ring[i]
                n -= 1
            elif value < at and value != float("-inf"):
                return  # older: nothing more was recorded at ``at``
            else:
                k += 1


class TokenBucket:
    """Burst ``limit``, refilled continuously at ``limit / window`` per second."""

    __slots__ = ("_stamp", "_tokens", "last", "limit", "rate", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a quota needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.rate = limit / window
        self._tokens = float(limit)
        self._stamp = float("-inf")
        self.last = float("-inf")

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            elapsed = now - self._stamp
            self._tokens = min(float(self.limit), self._tokens + elapsed * self.rate)
            self._stamp = now

    def available(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= 1.0

    def take(self, now: float) -> None:
        if now != self._stamp:  # usually just refilled by available(now)
            self._refill(now)
        self._tokens -= 1.0
        self.last = now

    def idle(self, now: float) -> bool:
        return self.last <= now - self.window

    def untake(self, at: float, n: int) -> None:
        """Give back ``n`` tokens taken (decided ahead, never used)."""
        self._tokens = min(float(self.limit), self._tokens + n)


def new_counter(limit: int, window: float) -> Counter:
    return SlidingWindow(limit, window) if limit <= EXACT_LIMIT else TokenBucket(limit, window)


class CounterStore(Protocol):
    """Where counters live. ``acquire`` when a connection starts, ``release`` when it ends."""

    def acquire(self, key: str, limit: int, window: float, now: float) -> Counter: ...

    def release(self, key: str, now: float) -> None: ...


C = TypeVar("C", bound=Counter)


class CounterTable(Generic[C]):
    """Counters by quota key, reference-counted by the connections that use them.

    A counter is kept while a connection uses it and, after the last one ends, until it is
    idle (its window has passed), so reconnecting does not reset a quota. If a key comes back
    with another limit or window (the policy changed), new connections get a fresh counter;
    the ones still holding the old counter keep it. Subclasses say how a counter is made.
    """

    def __init__(self) -> None:
        self._counters: dict[str, C] = {}
        self._refs: dict[str, int] = {}
        self._swept = 0.0

    def __len__(self) -> int:
        return len(self._counters)

    def _make(self, key: str, limit: int, window: float) -> C:
        raise NotImplementedError

    def acquire(self, key: str, limit: int, window: float, now: float) -> C:
        if now - self._swept > SWEEP_INTERVAL:
            self.sweep(now)
        counter = self._counters.get(key)
        if counter is None or counter.limit != limit or counter.window != window:
            counter = self._make(key, limit, window)
            self._counters[key] = counter
        self._refs[key] = self._refs.get(key, 0) + 1
        return counter

    def release(self, key: str, now: float) -> None:
        refs = self._refs.get(key, 0) - 1
        if refs > 0:
            self._refs[key] = refs
            return
        self._refs.pop(key, None)
        counter = self._counters.get(key)
        if counter is not None and counter.idle(now):
            del self._counters[key]

    def sweep(self, now: float) -> None:
        """Forget counters nobody uses and whose window has passed."""
        self._swept = now
        for key, counter in list(self._counters.items()):
            if key not in self._refs and counter.idle(now):
                del self._counters[key]


class InProcessCounterStore(CounterTable[Counter]):
    """Counters shared by the connections of this router process (see :class:`CounterTable`)."""

    def _make(self, key: str, limit: int, window: float) -> Counter:
        return new_counter(limit, window)


@dataclass(frozen=True, slots=True)
class Limit:
    """One quota as the relay needs it: its counter and what happens when it is reached."""

    key: str
    policy: str
    counter: Counter
    stop: bool


@dataclass(frozen=True, slots=True)
class Held:
    """``ConnectionThrottle.admit``'s answer for a message that waits: ``limit``'s counter has
    nothing for it now, but its window is not known to be exhausted (a leased counter whose
    lease is late, see router.lease.LeasedCounter.waits)."""

    limit: Limit


class ConnectionThrottle:
    """The quotas of one connection, checked in the enforcer's order for every data message.

    A message is admitted only if every quota has room; only then is it counted against all of
    them (a refused message uses none of them up). While ``hold`` is set (the Python relay sets
    it), a message the first quota without room would only delay (a leased counter waiting for
    its lease) is held instead of refused (router/_core/quota.c's wq_decide).
    """

    __slots__ = ("_admit_all", "_waits", "counters", "hold", "limits", "store")

    def __init__(self, limits: tuple[Limit, ...], store: CounterStore) -> None:
        self.limits = limits
        self.counters = tuple(limit.counter for limit in limits)
        self.store = store
        # A store whose counters live elsewhere (the native relay core's table, shared with
        # another thread) answers for all of them in one step: router.native.CoreCounterStore.
        admit_all = getattr(store, "admit_all", None)
        self._admit_all = admit_all(self.counters) if admit_all is not None else None
        # per counter: whether a message it has no room for may wait (leased counters only)
        self._waits: tuple[Callable[[float], bool] | None, ...] = tuple(
            getattr(counter, "waits", None) for counter in self.counters
        )
        self.hold = False  # (read only when a quota has no room: nothing per message)

    def admit(self, now: float) -> Limit | Held | None:
        """None when the message may pass (and was counted), else the first quota reached, or
        (``hold`` set) :class:`Held` when that quota's counter says the message may wait."""
        if self._admit_all is not None:
            first = self._admit_all(now)
            return None if first < 0 else self.limits[first]
        counters = self.counters
        for i, counter in enumerate(counters):
            if not counter.available(now):
                waits = self._waits[i]
                if waits is not None and self.hold and waits(now):
                    return Held(self.limits[i])
                return self.limits[i]
        for counter in counters:
            counter.take(now)
        return None

    def release(self, now: float) -> None:
        for limit in self.limits:
            self.store.release(limit.key, now)


def counted_quotas(quotas: Iterable[enforcer_pb2.Quota]) -> Iterator[enforcer_pb2.Quota]:
    """The quotas that limit something, each key once: keyless ones, ``message_count <= 0``
    (unlimited) and non-positive windows are skipped (the rule for both relay paths)."""
    seen: set[str] = set()
    for quota in quotas:
        if not quota.key or quota.message_count <= 0 or not quota.window_seconds > 0:
            continue
        if quota.key in seen:
            continue
        seen.add(quota.key)
        yield quota


def connection_throttle(
    quotas: Iterable[enforcer_pb2.Quota],
    store: CounterStore,
    now: float,
) -> ConnectionThrottle | None:
    """The throttle for a connection's quotas, or None when none limits anything.

    Quotas without a key, with ``message_count <= 0`` (unlimited) or a non-positive window are
    skipped; a key repeated in the list is counted once.
    """
    limits: list[Limit] = []
    for quota in counted_quotas(quotas):
        counter = store.acquire(quota.key, quota.message_count, quota.window_seconds, now)
        limits.append(Limit(quota.key, quota.policy, counter, quota.stop_on_quota_reach))
    if not limits:
        return None
    return ConnectionThrottle(tuple(limits), store)
