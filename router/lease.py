"""Leased permits for a quota shared by many routers: the arithmetic, pure (no I/O, no clock).

The global count lives in Redis (:mod:`router.redis_store`), the decision for each message stays
here, local, synchronous and O(1). How the two fit:

Sub-windows. A quota of N messages per W seconds is counted in S sub-windows of length
``b = W / S`` on Redis' clock (sub-window ``k`` covers ``[k*b, (k+1)*b)``). Routers reserve
*leases* of permits in one sub-window. A grant into sub-window ``t`` is made only if the permits
reserved in sub-windows ``t-S .. c+1`` (``c`` the current one; nothing is ever reserved later
than ``c+1``) plus the grant stay within N. A permit of sub-window ``t`` is used only while the
router's estimate of Redis' clock is inside ``t``, with a guard for the clock's uncertainty.
Any interval of length W touches at most S+1 consecutive sub-windows, whose reservations never
exceed N, so **at most N messages pass in any window of length W, across all routers** (the
in-process store's guarantee). The price of the granularity: a message's slot comes back
between W and W + b after it passed (in process: exactly W), so a steady saturating load gets
about ``N * S / (S + 1)`` per window (99% with S = 100). Unused permits are given back when
their sub-window ends (with the next request), or expire with the window.

Leases. The first request in a sub-window asks for about 1.5x what this router used per
sub-window lately; the script caps every grant at ``max(1, remaining // (2 * routers))`` so
the last permits are shared out in small pieces. A router asks for more when its lease runs
low and for the next sub-window's lease a little before the current one ends, so in the
common case the permit is already there when the message arrives. A sub-window where Redis
had nothing left ("dry") is not asked again.

Credit. A message that finds no lease (the very first on a key, or a reply that is late) is
not made to wait: it passes on credit if Redis' last answer left room for every router's
credit (or there is no answer yet: a cold start) and this router's credit not charged yet,
plus the credit that Redis found over the limit when it was charged in the last window, stays
under a small cap, ``max(1, limit / (400 * routers))``. Credit is charged to its sub-window
with the next request, even beyond the limit, so the count stays true. So credit never
exceeds the limit by more than ``2 * routers * cap`` (0.5% of it, or 2 messages per router
for small limits) in any window, and traffic under the limit is never refused for want of a
lease: a message every few seconds, whose lease is long gone, passes on credit. (The relay
core decides without this class: it holds an allowance of the same credit, see below.)

Holding. When the credit is used up too and a reply is late (a stalled event loop: the
request or its reply waits for the loop longer than a sub-window), the message is not refused
while the window is not known to be exhausted (``waits``, ``dry_until``): the relay holds it
(both relay paths) until the counter's next reply (``wake``), the next lease's start, or 1 s.

Redis down: every counter also feeds an in-process counter of ``limit // routers`` (the
in-process arithmetic). Fail-open decides with it while Redis is down, and records what it
admitted as credit, charged when Redis is back (a restarted, empty Redis relearns the recent
past); fail-closed refuses. Leases already granted stay valid until their sub-window ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from router.throttle import SlidingWindow, TokenBucket, new_counter

MIN_SUB_WINDOW = 0.05  # seconds: shorter sub-windows would need too many requests
CREDIT_SHARE = 400  # the credit cap is limit / (CREDIT_SHARE * routers)
MAX_CREDIT = 64
PREFETCH_SHARE = 0.25  # ask for the next sub-window's lease in the last quarter of this one
MIN_LEAD = 0.002  # ... but at least this long (plus 3 round trips) before it ends
CURRENT = -1  # "the sub-window Redis is in": credit taken before Redis' clock was known
GUARD = 0.0005  # seconds of clock uncertainty added to half the round trip


def sub_windows(window: float, wanted: int) -> int:
    """How many sub-windows a window of ``window`` seconds gets (at least 1)."""
    return max(1, min(wanted, math.floor(window / MIN_SUB_WINDOW + 1e-9)))


def grant_size(want: int, remaining: int, routers: int) -> int:
    """What the script grants: never above what is left, small pieces near the limit.

    Mirrored by the Lua script in :mod:`router.redis_store` (tested against each other).
    """
    if remaining <= 0 or want <= 0:
        return 0
    share = max(1, remaining // (2 * routers))
    return min(want, remaining, share)


def lease_want(demand: float, used_now: int, max_lease: int) -> int:
    """Permits to ask for: 1.5x the recent use per sub-window (or this one's so far), + 1."""
    return max(1, min(max_lease, math.ceil(1.5 * max(demand, float(used_now))) + 1))


def credit_cap(limit: int, routers: int) -> int:
    return max(1, min(MAX_CREDIT, limit // (CREDIT_SHARE * routers)))


@dataclass(slots=True)
class Clock:
    """Local monotonic time -> Redis time, learnt from each reply's ``TIME``.

    ``offset`` comes from replies whose round trip is close to the shortest seen (Redis read
    its clock somewhere inside the round trip, so the midpoint is off by at most half of it).
    """

    offset: float = 0.0
    rtt: float = math.inf
    known: bool = False
    samples: int = 0

    def sample(self, sent: float, received: float, redis_now: float) -> None:
        rtt = max(0.0, received - sent)
        self.samples += 1
        # Accept a sample whose round trip is close to the best seen; let the best age slowly.
        if not self.known or rtt <= self.rtt * 1.5 + 0.0002:
            self.offset = redis_now - (sent + received) / 2.0
            self.rtt = rtt if not self.known else min(rtt, self.rtt * 1.05 + 0.00005)
            self.known = True
        else:
            self.rtt *= 1.05

    @property
    def guard(self) -> float:
        # an accepted sample's midpoint is off by at most 0.75 * rtt + 0.1 ms
        return (0.75 * self.rtt if self.known else 0.0) + GUARD


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """One call of the lease script for one counter."""

    target: int  # sub-window the permits are wanted in (the script clamps it to c .. c+1)
    want: int
    adjust: tuple[tuple[int, int], ...]  # (sub-window, delta): returns < 0, credit used > 0
    sent: float  # local monotonic time
    credit: int = 0  # of the positive deltas, messages admitted on credit (not while down)


@dataclass(frozen=True, slots=True)
class LeaseReply:
    grant: int
    target: int  # sub-window granted into
    current: int  # sub-window Redis was in
    remaining: int  # permits left in the target's window after the grant
    redis_now: float  # seconds, Redis TIME


@dataclass(slots=True)
class Stats:
    """What a store's counters did, summed (read by metrics and tests)."""

    requests: int = 0
    credit: int = 0  # messages admitted on credit while Redis was reachable
    overdrawn: int = 0  # ... of which Redis found beyond the limit when charged
    degraded_admits: int = 0  # admitted by the local cap while Redis was down
    degraded_refusals: int = 0  # refused because Redis was down (fail-closed or local cap)
    returned: int = 0
    holds: int = 0  # messages held for a lease (the Python relay's; the core counts its own)


@dataclass(slots=True)
class Health:
    """Shared by a store's counters: is Redis reachable, what to do when it is not."""

    up: bool = True
    fail_open: bool = True
    stats: Stats = field(default_factory=Stats)


class LeasedCounter:
    """A :class:`router.throttle.Counter` that decides from permits leased from Redis.

    ``kick(counter)`` is called (at most once until the reply or failure) when the counter
    wants a request; the shell then calls :meth:`request`, sends it, and :meth:`granted` or
    :meth:`failed` with the outcome.
    """

    __slots__ = (
        "_allowed",
        "_check_at",
        "_credit_cap",
        "_credit_sent",
        "_debt",
        "_debt_total",
        "_demand",
        "_dry",
        "_fallback",
        "_low",
        "_next_permits",
        "_next_sub",
        "_overdrawn",
        "_remaining",
        "_remaining_at",
        "_returns",
        "_sub",
        "_used",
        "_valid_until",
        "_waiting",
        "clock",
        "health",
        "in_flight",
        "key",
        "kick",
        "last",
        "lead",
        "limit",
        "max_lease",
        "permits",
        "routers",
        "sub_len",
        "subs",
        "window",
    )

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        subs: int,
        routers: int,
        max_lease: int,
        clock: Clock,
        health: Health,
        kick: Callable[[LeasedCounter], None],
        key: str = "",
    ) -> None:
        if limit < 1 or window <= 0 or subs < 1:
            raise ValueError("a quota needs limit >= 1, window > 0 and subs >= 1")
        self.limit = limit
        self.window = window
        self.subs = subs
        self.sub_len = window / subs
        self.routers = max(1, routers)
        self.max_lease = max(1, max_lease)
        self.clock = clock
        self.health = health
        self.kick = kick
        self.key = key  # where the shell keeps its count (opaque here)
        self.in_flight = False
        self.last = -math.inf
        self.lead = 0.0  # ask for the next sub-window's lease at least this long before
        # The lease in use: ``permits`` of sub-window ``_sub``, usable until ``_valid_until``.
        self.permits = 0
        self._sub: int | None = None
        self._valid_until = -math.inf
        self._low = -1  # ask for more when permits <= _low
        self._check_at = math.inf  # local time to lease the next sub-window
        self._next_sub: int | None = None  # a lease already granted for a later sub-window
        self._next_permits = 0
        self._used = 0  # admitted in the current sub-window (leased or on credit)
        self._demand = float(math.ceil(limit / (subs * self.routers)))
        self._dry: int | None = None  # latest sub-window where Redis had nothing left
        self._remaining: int | None = None  # permits left, from the last reply
        self._remaining_at = -math.inf  # when that reply came
        self._returns: dict[int, int] = {}  # sub-window -> unused permits to give back (< 0)
        self._debt: dict[int, int] = {}  # sub-window -> admitted without a lease (> 0)
        self._debt_total = 0  # credit not yet charged (degraded admits excluded)
        self._credit_sent = 0  # credit in the request in flight
        self._allowed = 0  # credit the relay core may take on its own (LeasePump), not charged
        self._credit_cap = credit_cap(limit, self.routers)
        self._overdrawn: list[tuple[float, int]] = []  # (when, credit found over the limit)
        self._fallback = cast(
            SlidingWindow | TokenBucket, new_counter(max(1, limit // self.routers), window)
        )
        self._waiting: dict[Callable[[], None], None] = {}  # held messages' wake-ups, in order

    # --- the Counter protocol (called per message) -------------------------------------

    def available(self, now: float) -> bool:
        if self.permits > 0 and now < self._valid_until:
            return True
        return self._available_slow(now)

    def take(self, now: float) -> None:
        self.last = now
        self._fallback.take(now)
        if self.permits > 0 and now < self._valid_until:
            self.permits -= 1
            self._used += 1
            if self.permits <= self._low or now >= self._check_at:
                self._maintain(now)
            return
        self._take_slow(now)

    def idle(self, now: float) -> bool:
        if self.last > now - self.window or self.in_flight:
            return False
        return not self._debt or max(self._debt) < self.sub_at(now) - self.subs

    # --- local state -----------------------------------------------------------------------

    def sub_at(self, now: float) -> int:
        """The sub-window (on Redis' clock) that local time ``now`` falls in."""
        return math.floor((now + self.clock.offset) / self.sub_len)

    def bounds(self, sub: int) -> tuple[float, float]:
        """Local times between which permits of ``sub`` may be used: inside it on Redis'
        clock, whatever the clock's error (a permit used outside its sub-window breaks the
        guarantee on either side)."""
        offset, guard = self.clock.offset, self.clock.guard
        return sub * self.sub_len - offset + guard, (sub + 1) * self.sub_len - offset - guard

    def _give_back(self, sub: int, permits: int) -> None:
        if permits > 0:
            self._returns[sub] = self._returns.get(sub, 0) - permits

    def _install(self, sub: int, permits: int, now: float) -> None:
        """Make the lease of ``sub`` the one in use (the previous one's rest goes back)."""
        if self._sub is not None:
            self._give_back(self._sub, self.permits)
            if self._sub != sub:
                self._demand = 0.5 * self._demand + 0.5 * self._used
                self._used = 0
        end = self.bounds(sub)[1]
        self._sub, self.permits, self._valid_until = sub, permits, end
        self._low = permits // 4 if self._dry != sub else -1
        lead = max(self.sub_len * PREFETCH_SHARE, 3 * self.clock.rtt + MIN_LEAD, self.lead)
        self._check_at = end - lead if self._dry != sub + 1 else math.inf

    def _advance(self, now: float) -> None:
        """Retire a lease once the next sub-window has surely begun; install the next one."""
        if self._sub is not None and now >= self._valid_until:
            if now < self.bounds(self._sub + 1)[0]:
                return  # at the edge: see _at_edge
            self._give_back(self._sub, self.permits)
            self._demand = 0.5 * self._demand + 0.5 * self._used
            self._sub, self.permits, self._used = None, 0, 0
            self._valid_until, self._check_at, self._low = -math.inf, math.inf, -1
        if self._next_sub is not None:
            start, end = self.bounds(self._next_sub)
            if now >= end:  # never used: too late now
                self._give_back(self._next_sub, self._next_permits)
                self._next_sub, self._next_permits = None, 0
            elif now >= start and self._sub is None:
                sub, permits = self._next_sub, self._next_permits
                self._next_sub, self._next_permits = None, 0
                self._install(sub, permits, now)

    def _at_edge(self, now: float) -> bool:
        """Within the clock's uncertainty of the end of the lease's sub-window, holding a
        permit of both sides: such a message is charged to both (whichever it falls in)."""
        return (
            self._sub is not None
            and now >= self._valid_until
            and self.permits > 0
            and self._next_sub == self._sub + 1
            and self._next_permits > 0
        )

    def _available_slow(self, now: float) -> bool:
        self._advance(now)  # leases granted stay valid while Redis is down too
        if (self.permits > 0 and now < self._valid_until) or self._at_edge(now):
            return True
        health = self.health
        if not health.up:
            ok = health.fail_open and self._fallback.available(now)
            if not ok:
                health.stats.degraded_refusals += 1
            return ok
        if not self.in_flight and self._wanted_target(now) is not None:
            self._want()
        return self._may_borrow(now)

    def _may_borrow(self, now: float) -> bool:
        """A message without a lease passes on credit while Redis' last answer left room for
        every router's credit (or there was none yet), and the credit not charged yet plus the
        credit Redis found over the limit in the last window stay under the cap."""
        return self._credit_room(now) > self._allowed

    def _credit_room(self, now: float) -> int:
        """Credit that may be out now besides what is owed, in flight or overdrawn (the rule of
        _may_borrow): for messages here and the core's allowance together."""
        if self._dry is not None and self._dry >= self.sub_at(now):
            return 0
        remaining = self._remaining  # None: a cold start, nothing known yet
        if remaining is not None and remaining < self._credit_cap * self.routers:
            return 0
        taken = self._debt_total + self._credit_sent
        overdrawn = self._overdrawn
        if overdrawn:
            while overdrawn and overdrawn[0][0] <= now - self.window:
                overdrawn.pop(0)
            taken += sum(n for _, n in overdrawn)
        return max(0, self._credit_cap - taken)

    def _take_slow(self, now: float) -> None:
        self._advance(now)
        if self.permits > 0 and now < self._valid_until:  # a lease installed just now
            self.permits -= 1
            self._used += 1
            return
        if self._at_edge(now):
            self.permits -= 1
            self._next_permits -= 1
            self._used += 1
            return
        sub = self.sub_at(now) if self.clock.known else CURRENT
        self._debt[sub] = self._debt.get(sub, 0) + 1
        if not self.health.up:
            self.health.stats.degraded_admits += 1
            if len(self._debt) > self.subs + 2:  # older than a window: no longer matters
                for old in [k for k in self._debt if k < sub - self.subs]:
                    del self._debt[old]
            return
        self._debt_total += 1
        self._used += 1
        self.health.stats.credit += 1
        if not self.in_flight:
            self._want()

    def _maintain(self, now: float) -> None:
        """The lease runs low or the next sub-window is near: ask, unless nothing would come."""
        if self.in_flight:
            return
        if self._wanted_target(now) is None and not self._returns and not self._debt:
            self._low = -1 if self._dry == self._sub else self._low
            self._check_at = math.inf
            return
        self._want()

    def _wanted_target(self, now: float) -> int | None:
        sub = self._sub
        if sub is None:
            if self._next_sub is not None:  # between two leases: the next one is here
                return None
            current = self.sub_at(now)
            return None if self._dry == current else current
        if self.permits <= self._low and self._dry != sub:
            return sub
        if (
            now >= min(self._check_at, self._valid_until)
            and self._next_sub is None
            and self._dry != sub + 1
        ):
            return sub + 1
        return None

    def _want(self) -> None:
        if self.health.up:
            self.in_flight = True
            self.kick(self)

    # --- requests and replies ------------------------------------------------------------

    def request(self, now: float) -> LeaseRequest:
        """What to ask Redis for now (permits, and the returns and credit to settle)."""
        self._advance(now)
        target = self._wanted_target(now)
        want = lease_want(self._demand, self._used, self.max_lease)
        if target is None:
            target, want = self.sub_at(now), 0  # only settling
        adjust: dict[int, int] = dict(self._returns)
        for sub, owed in self._debt.items():
            adjust[sub] = adjust.get(sub, 0) + owed
        credit = self._debt_total
        self._credit_sent = credit
        self._returns, self._debt, self._debt_total = {}, {}, 0
        self.health.stats.requests += 1
        return LeaseRequest(target, want, tuple(sorted(adjust.items())), now, credit)

    def granted(self, req: LeaseRequest, reply: LeaseReply, received: float) -> None:
        self.in_flight = False
        self._credit_sent = 0
        self.clock.sample(req.sent, received, reply.redis_now)
        self.health.stats.returned -= sum(d for _, d in req.adjust if d < 0)
        self._remaining, self._remaining_at = reply.remaining, received
        if req.credit and reply.remaining < 0:  # the credit went over the limit
            over = min(req.credit, -reply.remaining)
            self._overdrawn.append((received, over))
            self.health.stats.overdrawn += over
        target, grant = reply.target, reply.grant
        if req.want > 0 and (grant == 0 or reply.remaining <= 0):  # nothing left there
            self._dry = target if self._dry is None else max(self._dry, target)
            if target == self._sub:
                self._low = -1
            elif self._sub is not None and target == self._sub + 1:
                self._check_at = math.inf
        if grant <= 0:
            return
        self._advance(received)
        start, end = self.bounds(target)
        if received >= end:  # too late to use
            self._give_back(target, grant)
        elif target == self._sub:
            self.permits += grant
            self._low = (self.permits // 4) if self._dry != target else -1
        elif received < start:  # a later sub-window: kept until it begins
            if self._next_sub == target:
                self._next_permits += grant
            else:
                if self._next_sub is not None:
                    self._give_back(self._next_sub, self._next_permits)
                self._next_sub, self._next_permits = target, grant
            if self._sub is not None:
                self._check_at = math.inf  # the next lease is here
        else:
            self._install(target, grant, received)

    def failed(self, req: LeaseRequest) -> None:
        """The request did not reach Redis (or its reply was lost): keep what it carried."""
        self.in_flight = False
        self._credit_sent = 0
        for sub, delta in req.adjust:
            if delta > 0:
                self._debt[sub] = self._debt.get(sub, 0) + delta
            else:
                self._returns[sub] = self._returns.get(sub, 0) + delta

    # --- lending to the relay core (router.native.LeasePump) ------------------------------
    #
    # The core admits messages from permits moved into its pool. Each permit lent here is
    # decided as ``take`` would decide a message now (from the lease in use, the next
    # sub-window's lease, credit, or the fallback cap while Redis is down) and is usable by the
    # core only in [start, end): inside the sub-window it is counted in, so every invariant
    # above holds for lent permits too. What the core did not use is handed back (``unlend``).

    @property
    def demand(self) -> float:
        """Permits used per sub-window lately (what the next lease is sized on)."""
        return self._demand

    def lease_end(self) -> float | None:
        """Until when the lease in use may be used (None: no lease in use)."""
        return self._valid_until if self._sub is not None else None

    def next_bounds(self) -> tuple[float, float] | None:
        """When the next sub-window's lease may be used (None: none granted)."""
        return self.bounds(self._next_sub) if self._next_sub is not None else None

    def tick(self, now: float) -> None:
        """What ``take`` does besides counting: retire/install leases, prefetch the next one."""
        self._advance(now)
        if (
            self.health.up
            and not self.in_flight
            and (self.permits <= self._low or now >= self._check_at or self._debt or self._returns)
        ):
            self._maintain(now)

    def lend_current(self, now: float, n: int) -> tuple[int, int, float, float] | None:
        """Up to ``n`` permits of the lease in use: (sub-window, count, start, end)."""
        self._advance(now)
        if self._sub is None or self.permits <= 0 or now >= self._valid_until or n <= 0:
            return None
        k = min(n, self.permits)
        self.permits -= k
        self._used += k
        self._lent(now, k)
        if self.permits <= self._low or now >= self._check_at:
            self._maintain(now)
        # start: none needed (this lease is the current one); the end is fixed at install
        return self._sub, k, 0.0, self._valid_until

    def lend_next(self, now: float, n: int) -> tuple[int, int, float, float] | None:
        """Up to ``n`` permits of the next sub-window's lease, usable once it has begun."""
        if self._next_sub is None or self._next_permits <= 0 or n <= 0:
            return None
        start, end = self.bounds(self._next_sub)
        if now >= end:
            return None
        k = min(n, self._next_permits)
        self._next_permits -= k
        return self._next_sub, k, start, end

    def lend_credit(self, now: float, n: int) -> tuple[int, int, float, float, bool] | None:
        """Admissions without a lease, as ``take`` would make them now: on credit (within the
        cap), or by the fallback cap while Redis is down and failing open; none fail-closed.
        (sub-window charged, count, start, end, degraded); usable until that sub-window ends."""
        self._advance(now)
        if (self.permits > 0 and now < self._valid_until) or n <= 0:
            return None  # the lease in use comes first (lend_current)
        health = self.health
        if self.clock.known:
            sub = self.sub_at(now)
            start = sub * self.sub_len - self.clock.offset
            end = start + self.sub_len
        else:
            sub, start, end = CURRENT, now, now + self.sub_len
        k = 0
        if not health.up:
            if not health.fail_open:
                return None
            while k < n and self._fallback.available(now):
                self._fallback.take(now)
                k += 1
            if not k:
                health.stats.degraded_refusals += 1
                return None
            self.last = now
            self._debt[sub] = self._debt.get(sub, 0) + k
            health.stats.degraded_admits += k
            if len(self._debt) > self.subs + 2:
                for old in [b for b in self._debt if b < sub - self.subs]:
                    del self._debt[old]
            return sub, k, start, end, True
        if not self.in_flight and self._wanted_target(now) is not None:
            self._want()
        while k < n and self._may_borrow(now):
            self._debt_total += 1
            k += 1
        if not k:
            return None
        self._lent(now, k)
        self._debt[sub] = self._debt.get(sub, 0) + k
        self._used += k
        health.stats.credit += k
        if not self.in_flight:
            self._want()
        return sub, k, start, end, False

    def _lent(self, now: float, k: int) -> None:
        self.last = now
        for _ in range(k):  # the fallback cap knows the recent past when Redis goes down
            self._fallback.take(now)

    def unlend(
        self,
        sub: int,
        count: int,
        *,
        credit: bool = False,
        degraded: bool = False,
        at: float | None = None,
    ) -> None:
        """``count`` permits lent (of sub-window ``sub``, at local time ``at`` when they were
        recorded in the fallback cap) that the core did not use."""
        if count <= 0:
            return
        if at is not None:
            self._fallback.untake(at, count)
        if not credit:
            if sub == self._sub:
                self.permits += count
                self._used = max(0, self._used - count)
            elif sub == self._next_sub:
                self._next_permits += count
            else:  # its sub-window is over: back to Redis with the next request
                self._give_back(sub, count)
                self._demand = max(0.0, self._demand - 0.5 * count)
            return
        owed = self._debt.get(sub, 0)
        back = min(owed, count)
        if back:
            if back == owed:
                del self._debt[sub]
            else:
                self._debt[sub] = owed - back
            if not degraded:
                self._debt_total = max(0, self._debt_total - back)
        if count > back and sub != CURRENT:
            self._give_back(sub, count - back)  # charged already: returned like a permit
        if degraded:
            self.health.stats.degraded_admits -= count
        else:
            self.health.stats.credit -= count
            self._used = max(0, self._used - count)

    @property
    def owed(self) -> int:
        """Messages admitted without a lease and not yet charged in Redis."""
        return sum(self._debt.values())

    # The core's own credit. A message that finds no permit in the core's pool must pass on
    # credit as ``take`` would pass it, not wait for the pump (a loop turn away: a refused
    # message under the limit). So the core holds an *allowance*: how many messages it may
    # admit on credit by itself, sized by the credit rule (_credit_room) and counted in it
    # from the moment it is given, used or not; what the core admitted on it is charged like
    # ``take``'s credit (``credited``, at each message's time). Credit given, owed, in flight
    # and overdrawn together stay within the cap, so the bound above holds for the core too.

    @property
    def credit_allowed(self) -> int:
        """The core's allowance: given and not yet used (as far as collected) or withdrawn."""
        return self._allowed

    def credit_allowance(self, now: float) -> int:
        """What the core's allowance should be now: the credit rule's room; 0 while Redis is
        down (the fallback cap decides then: ``lend_credit``)."""
        return self._credit_room(now) if self.health.up else 0

    def dry_until(self, now: float) -> float:
        """Until when (local time) the core must refuse a message its pool has no permit nor
        credit for, as ``take`` refuses it: this counter has no permit left to lend, and Redis
        answered that the window has no room left up to a sub-window not over yet, or its last
        answer left less than every router's credit (the window is all but used: the credit
        rule's own test; re-checked by every pump round, so only until this sub-window ends).
        -inf: not so; the core holds such a message until the pump tops its pool up (a lease
        late, the loop stalled: traffic under the limit waits, it is not refused)."""
        if (self.permits > 0 and now < self._valid_until) or self._next_permits > 0:
            return -math.inf
        sub, dry = self.sub_at(now), self._dry
        if dry is not None and dry >= sub:
            return (dry + 1) * self.sub_len - self.clock.offset
        remaining = self._remaining
        if remaining is not None and remaining < self._credit_cap * self.routers:
            return (sub + 1) * self.sub_len - self.clock.offset
        return -math.inf

    def missed(self, now: float) -> None:
        """Messages found no permit in the core's pool (or used its last ones): ask for a
        lease as ``take`` asks when it finds none."""
        self._advance(now)
        if self.health.up and not self.in_flight and self._wanted_target(now) is not None:
            self._want()

    def allow_credit(self, n: int) -> None:
        """The core's allowance grew by ``n``."""
        self._allowed += max(0, n)

    def revoke_credit(self, n: int) -> None:
        """``n`` of the allowance were withdrawn unused."""
        self._allowed = max(0, self._allowed - n)

    def credited(self, times: Iterable[float]) -> None:
        """The core admitted a message on its allowance at each of ``times`` (oldest first):
        each is charged as ``take`` charges credit, to the sub-window it passed in."""
        k = 0
        for at in times:
            k += 1
            sub = self.sub_at(at) if self.clock.known else CURRENT
            self._debt[sub] = self._debt.get(sub, 0) + 1
            self.last = max(self.last, at)
            self._fallback.take(max(at, self._fallback.last))  # its ring stays in order
        if not k:
            return
        self._allowed = max(0, self._allowed - k)
        self._debt_total += k
        self._used += k
        self.health.stats.credit += k
        if not self.in_flight:
            self._want()

    # Holding (the Python relay; the core does the same with dry_until, see router.native). A
    # message that finds neither a permit nor credit while the window is not known to be
    # exhausted waits for the next lease reply instead of being refused: a lease late or a
    # stalled loop delays traffic under the limit, it does not refuse it.

    def waits(self, now: float) -> bool:
        """After ``available(now)`` said no: whether the message is held rather than refused.
        Redis is up and the window is not known to be exhausted (:meth:`dry_until`, the core's
        rule); a lease was asked for by ``available`` (or is in flight, or the next sub-window's
        lease begins at :meth:`next_bounds`). Redis down: decided at once, as ever."""
        if not self.health.up or now < self.dry_until(now):
            return False
        self.health.stats.holds += 1
        return True

    def wait(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, after the next lease reply or failure (:meth:`wake`)."""
        self._waiting[wake] = None

    def unwait(self, wake: Callable[[], None]) -> None:
        self._waiting.pop(wake, None)

    def wake(self) -> None:
        """A reply or a failure was taken in (the shell calls this after ``granted`` or
        ``failed``): the messages held meanwhile are decided again, in the order they waited."""
        if self._waiting:
            waiting, self._waiting = self._waiting, {}
            for wake in waiting:
                wake()
