"""The compiled relay path: plaintext connections relayed by ``router._core.Core``.

After the handshake the router hands both sockets to the core (see :func:`hand_over`): the
client's and the backend's fds are dup'ed, their uvloop transports aborted (closing one fd of
a dup pair does not close the socket: no FIN, no RST), and the core's epoll thread relays from
then on with the same framing rules, quotas and closing logic as :class:`router.relay.Relay`
(the reference implementation and kill switch, ``WSGATE_RELAY=python``).

Python keeps control: :class:`NativeRelay` has the surface the server, the live-connection
registry and the idle sweep use of a Relay; commands (terminate, shutdown, abort) go to the
core, and the core's reports (closed, throttled, stream error, abort) arrive through an eventfd
the asyncio loop watches. Counters are read in one snapshot per analytics flush, /metrics
scrape or idle sweep (``Router.snapshot``), never per frame.

Quotas: in-process, the counters live in the core's table (:class:`CoreCounterStore`). With
the Redis-leased global mode (router.redis_store), the decision logic stays in
:class:`router.lease.LeasedCounter` and the core consumes *permits*: one :class:`LeasePump`
per quota key moves what the counter decides into the core's pool for the key (a leased
counter in the core's table: three slots of permits, each usable only in [start, end)):

- slot 0: permits of the lease in use, usable until the lease's own end (its sub-window's
  end on Redis' clock minus the clock guard), slot 1: permits of the next sub-window's lease,
  usable from that sub-window's guarded start, slot 2: while Redis is down and the mode is
  fail-open, admissions by the fallback cap (fail-closed: none), usable until the end of the
  sub-window they are charged to. Every lent permit is decided by the counter as a message at
  that moment would be (``lend_*``), so "a permit of sub-window t is used only inside t" and
  the fallback cap hold as in router/lease.py, and the global count (at most N per window
  across routers) is unchanged: the core can only spend what was lent, inside its validity.
- Credit: a message that finds no usable permit passes on the core's credit allowance, as
  ``LeasedCounter.take`` would pass it on credit, instead of being refused until the pump's
  next round (a loop turn away, longer under load). The allowance is what the counter's
  credit rule allows (``credit_allowance``: within the credit cap, none once Redis has no room
  left), counted against the cap from the moment it is given; the core keeps each use's time
  and the pump charges it like ``take``'s credit (``credited``), so lease.py's bound holds.
- Holding: a message that finds neither a permit nor credit is not refused but held: the
  core stops reading that side (the bytes stay unread, like the watermark backpressure: nothing
  dropped, nothing reordered, at most one read kept per side) and reports the pool (EV_LEASE);
  whatever changes the pool (a put, credit, or the dry mark below) feeds the held bytes again,
  and so does the moment a slot's permits become usable. So a stalled event loop delays
  traffic under the limit instead of refusing it. When the counter says the window is
  exhausted (``LeasedCounter.dry_until``: it has nothing left to lend, and Redis answered no
  room, or less than every router's credit; or Redis is down and fail-open's fallback cap
  admits nothing more, or fail-closed), the pump marks the pool dry (``lease_dry``) and the
  core refuses (drop, or 1008 per the quota's stop_on_quota_reach), as ``take`` refuses, until
  that sub-window ends. And what waited HOLD_MAX (core.c, 1 s) is decided without holding, so
  traffic over a quota is throttled, not queued behind the lease pump. A held side still
  closes on terminate/shutdown/abort (its held bytes are dropped then, as a closed transport
  delivers nothing more), and the idle sweep sees it idle. The Python relay holds by the same
  rule (router.relay's _GatedSide, ``LeasedCounter.waits``), woken by the counter's replies.
- What the core did not use is taken back when its validity ends (or when the slot is
  refilled with another validity) and handed back to the counter (``unlend``): to the lease
  still in use, or to Redis as a return with the next request, or off the credit owed, so no
  permit is used twice and the count in Redis stays true.
- The pump lends in small batches (about half a sub-window's demand), so the counter
  still sees the use as it happens and asks for leases as before. It runs when the core
  reports a pool at its low mark or empty (EV_LEASE, once per key until refilled, at most once
  per read), on every lease reply, and on a short ticker (a quarter of the shortest
  sub-window) that also takes back expired permits and prefetches the next lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from router.analytics import ZERO, Counts
from router.frames import CloseCode, truncate_utf8
from router.lease import LeasedCounter
from router.relay import (
    THROTTLED_REASON,
    Flow,
    RelayInfo,
    ScanState,
    close_outcome,
    log_closed,
)
from router.throttle import counted_quotas
from wsgate_proto import enforcer_pb2

log = logging.getLogger(__name__)

_core: ModuleType | None
try:
    from router import _core

    IMPORT_ERROR = ""
except ImportError as exc:  # not built: only the Python relay is available
    _core = None
    IMPORT_ERROR = str(exc)

RELAY_PATHS = ("native", "python", "auto")
# the kinds of Core.events() reports: router/_core/core.c's enum ev, in order
(
    EV_CLOSED,
    EV_THROTTLED,
    EV_ERROR,
    EV_ABORT,
    EV_LEASE,
    EV_HEAD,
    EV_UPSTREAM,
    EV_HS_END,
    EV_STARTED,
    EV_PLANNED,
) = range(10)
# EV_PLANNED's outcome: a handshake the core did by a plan was relayed, got a backend answer
# (or error) for Python to judge, or lost its client
PLANNED_STARTED, PLANNED_UPSTREAM, PLANNED_GONE = range(3)
SLOT_LEASE, SLOT_NEXT, SLOT_CREDIT = range(3)
TICK_MIN, TICK_MAX = 0.002, 0.05  # seconds between pump rounds (a quarter sub-window within)
# EV_UPSTREAM's error: the backend's response head arrived, or why not
UP_OK, UP_CONNECT, UP_CLOSED, UP_TIMEOUT, UP_TOO_LARGE = range(5)


class NativeUnavailable(RuntimeError):
    """WSGATE_RELAY=native but the extension is not built."""


def available() -> bool:
    return _core is not None


def choose(setting: str) -> str:
    """The relay path for a ``WSGATE_RELAY`` value: ``native`` or ``python``.

    Raises:
        NativeUnavailable: ``native`` was asked for and router._core does not import.
        ValueError: not one of native, python, auto.
    """
    if setting not in RELAY_PATHS:
        raise ValueError(f"relay must be one of {', '.join(RELAY_PATHS)}, not {setting!r}")
    if setting == "python":
        return "python"
    if _core is None:
        if setting == "native":
            raise NativeUnavailable(
                "WSGATE_RELAY=native but the compiled relay core (router._core) is not built: "
                f"{IMPORT_ERROR} (reinstall with a C compiler: pip install -e .)"
            )
        return "python"
    return "native"


@dataclass(frozen=True, slots=True)
class NativeLimit:
    key: str
    policy: str
    stop: bool
    handle: int


class NativeThrottle:
    """A connection's quotas as counters in the core's shared table (what Live.throttle holds:
    the registry releases it when the connection ends)."""

    __slots__ = ("core", "hub", "limits")

    def __init__(self, core: Any, limits: tuple[NativeLimit, ...], hub: NativeHub | None = None):
        self.core = core
        self.limits = limits
        self.hub = hub

    def release(self, now: float) -> None:
        for limit in self.limits:
            self.core.release(limit.key, limit.handle, now)
            if self.hub is not None:
                self.hub.unlease(limit.key, limit.handle, now)

    def for_core(self) -> tuple[tuple[int, bool], ...]:
        return tuple((limit.handle, limit.stop) for limit in self.limits)


class CoreCounter:
    """One quota key's counter in the core's table, held by a Python-relay connection (wss):
    a :class:`router.throttle.Counter` whose hold is given back when it is collected."""

    __slots__ = ("core", "handle", "limit", "window")

    def __init__(self, core: Any, handle: int, limit: int, window: float) -> None:
        self.core, self.handle, self.limit, self.window = core, handle, limit, window

    def available(self, now: float) -> bool:
        return bool(self.core.available(self.handle, now))

    def take(self, now: float) -> None:
        self.core.take(self.handle, now)

    def idle(self, now: float) -> bool:
        return bool(self.core.idle(self.handle, now))

    def __del__(self) -> None:
        self.core.unref(self.handle)


class CoreCounterStore:
    """The router's CounterStore while the core runs: the Python relay's connections (wss)
    count in the same native table as the core's, so a key has one counter for both paths."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def __len__(self) -> int:
        return int(self.core.stats()["quota_counters"])

    def acquire(self, key: str, limit: int, window: float, now: float) -> CoreCounter:
        return CoreCounter(self.core, self.core.acquire(key, limit, window, now), limit, window)

    def release(self, key: str, now: float) -> None:
        self.core.release(key, None, now)

    def admit_all(self, counters: tuple[Any, ...]) -> Callable[[float], int]:
        """ConnectionThrottle's admit in one locked step (the relay thread shares the table)."""
        handles, core = tuple(c.handle for c in counters), self.core
        return lambda now: int(core.admit(handles, now))


# (sub-window, permits, credit, degraded, when they were recorded in the fallback cap or None)
Lent = tuple[int, int, bool, bool, float | None]


class LeasePump:
    """Moves the permits a :class:`LeasedCounter` decides into the core's pool for one quota
    key, and hands back what the core did not use (see the module docstring)."""

    __slots__ = ("core", "counter", "dry", "handle", "key", "lent", "refs", "validity")

    def __init__(self, core: Any, handle: int, counter: LeasedCounter, key: str) -> None:
        self.core = core
        self.handle = handle  # the pump's own hold on the core's counter
        self.counter = counter
        self.key = key
        self.refs = 0  # connections using it
        self.lent: list[list[Lent]] = [[], [], []]  # per slot, what is in it (oldest first)
        self.validity: list[tuple[float, float]] = [(0.0, 0.0)] * 3
        self.dry = -math.inf  # what the core was told last (lease_dry; -inf: not dry)
        # The core does not wait for the loop as the Python relay's messages do: the next
        # sub-window's lease is asked for two pump rounds ahead at least (see _tick).
        counter.lead = max(counter.lead, counter.sub_len / 2)

    def batch(self) -> int:
        """Permits per top-up: half a sub-window's use, at least 4 (a refill is a loop turn
        away: the pool must last that long, up to the lease's end)."""
        return max(4, min(self.counter.max_lease, math.ceil(self.counter.demand / 2) + 2))

    def _back(self, slot: int, count: int) -> None:
        """``count`` permits of ``slot`` came back unused: the newest lent go back first."""
        lent = self.lent[slot]
        while count > 0 and lent:
            sub, n, credit, degraded, at = lent[-1]
            k = min(n, count)
            self.counter.unlend(sub, k, credit=credit, degraded=degraded, at=at)
            count -= k
            if k == n:
                lent.pop()
            else:
                lent[-1] = (sub, n - k, credit, degraded, at)

    def _put(self, slot: int, lent: Lent, start: float, end: float, low: int) -> None:
        back = self.core.lease_put(self.handle, slot, lent[1], start, end, low)
        if (start, end) != self.validity[slot]:
            self._back(slot, back)
            self.lent[slot] = []
            self.validity[slot] = (start, end)
        self.lent[slot].append(lent)

    def sync(self, now: float) -> None:
        """Take back expired permits, then top the pool up from the counter."""
        core, handle, counter = self.core, self.handle, self.counter
        state = core.lease_state(handle)
        held = [0, 0, 0]
        for slot in range(3):
            n, _start, end = state[slot]
            if n > 0 and now >= end:
                self._back(slot, core.lease_take_back(handle, slot))
                self.lent[slot] = []
            elif n > 0:
                held[slot] = n
            else:
                self.lent[slot] = []  # all used
        counter.credited(core.lease_credit(handle, 0))  # admitted on the core's own credit
        counter.tick(now)
        # Permits of another validity than the counter's lease (or next lease) now do not
        # count: the put below replaces them (and hands them back to the counter).
        end = counter.lease_end()
        if end is None or self.validity[SLOT_LEASE][1] != end:
            held[SLOT_LEASE] = 0
        bounds = counter.next_bounds()
        if bounds is None or self.validity[SLOT_NEXT] != bounds:
            held[SLOT_NEXT] = 0
        batch = self.batch()
        low = batch // 2
        got = counter.lend_current(now, batch - held[SLOT_LEASE])
        if got is not None:
            sub, k, start, end = got
            self._put(SLOT_LEASE, (sub, k, False, False, now), start, end, low)
        got = counter.lend_next(now, batch - held[SLOT_NEXT])
        if got is not None:
            sub, k, start, end = got
            self._put(SLOT_NEXT, (sub, k, False, False, None), start, end, low)
        self._credit(now)
        state = core.lease_state(handle)
        empty = not any(n > 0 and s <= now < e for n, s, e in state[:2])
        dry = -math.inf
        if counter.health.up:
            if empty:
                counter.missed(now)  # no permit at hand: a lease before messages find none
            dry = counter.dry_until(now)  # (for when the pool runs out before the next round)
        elif empty and not held[SLOT_CREDIT]:
            # Redis down: the fallback cap's admissions (fail-open), lent like permits
            credit = counter.lend_credit(now, batch - held[SLOT_CREDIT])
            if credit is not None:
                sub, k, start, end, degraded = credit
                self._put(SLOT_CREDIT, (sub, k, True, degraded, now), start, end, low)
            else:  # fail-closed, or the fallback cap is full: refused as take refuses
                dry = math.inf
        # A message the pool has nothing for waits in the core (its side is not read) unless
        # the counter says the window is exhausted: then it is refused, as take refuses it.
        if dry != self.dry:
            core.lease_dry(handle, dry)
            self.dry = dry
        # Nothing lent: the core's report stays pending (no report per held message); the
        # next lease reply or tick refills the pool.

    def _credit(self, now: float) -> None:
        """Size the core's credit allowance to what the counter's credit rule allows now."""
        core, handle, counter = self.core, self.handle, self.counter
        target = counter.credit_allowance(now)
        if target < counter.credit_allowed:
            counter.revoke_credit(core.lease_credit_revoke(handle))
        add = target - counter.credit_allowed
        if add > 0:
            taken = core.lease_credit(handle, add)  # (and what was admitted meanwhile)
            counter.allow_credit(add)
            counter.credited(taken)

    def retire(self, now: float) -> None:
        """The last connection ended: everything still in the pool goes back to the counter."""
        for slot in range(3):
            self._back(slot, self.core.lease_take_back(self.handle, slot))
            self.lent[slot] = []
        counter = self.counter
        counter.revoke_credit(self.core.lease_credit_revoke(self.handle))
        counter.credited(self.core.lease_credit(self.handle, 0))  # (none after the revoke)
        counter.tick(now)


class NativeHub:
    """One core (one relay thread) per Router, and its live NativeRelays by id."""

    def __init__(self, sched: str = "normal") -> None:
        """``sched``: the relay thread's scheduling policy, "normal", "batch" or "auto" (batch
        while many connections are active; core.c's start_thread)."""
        if _core is None:
            raise NativeUnavailable(IMPORT_ERROR)
        self.core = _core.Core(sched=sched)
        self.store = CoreCounterStore(self.core)
        self.relays: dict[int, NativeRelay] = {}
        self.snap: dict[int, tuple[int, ...]] | None = None  # set by Router.snapshot()
        # the core's handshake reports (EV_HEAD, EV_UPSTREAM, EV_HS_END, EV_STARTED), when it
        # listens
        self.on_handshake: Callable[[tuple[Any, ...]], None] | None = None
        self.after_drain: Callable[[], None] | None = None  # once per drain, after its events
        self._loop: asyncio.AbstractEventLoop | None = None
        # The Redis-leased mode (router.redis_store.RedisCounterStore): pumps by core handle.
        self.leases: Any = None
        self.pumps: dict[int, LeasePump] = {}
        self._by_counter: dict[LeasedCounter, LeasePump] = {}
        self._ticker: asyncio.Task[None] | None = None

    def use_leases(self, store: Any) -> None:
        """Quotas are counted through ``store`` (a RedisCounterStore): the core consumes the
        permits its counters lease (see the module docstring)."""
        self.leases = store
        store.on_reply = self._on_reply

    def _on_reply(self, counter: LeasedCounter) -> None:
        pump = self._by_counter.get(counter)
        if pump is not None:
            pump.sync(time.monotonic())

    def _lease(self, key: str, limit: int, window: float, now: float) -> int:
        """A connection's handle on the core's leased counter for ``key`` (its pump started)."""
        handle = int(self.core.acquire(key, limit, window, now, True))
        pump = self.pumps.get(handle)
        if pump is None:
            counter = self.leases.acquire(key, limit, window, now)
            own = int(self.core.acquire(key, limit, window, now, True))
            pump = LeasePump(self.core, own, counter, key)
            self.pumps[handle] = pump
            self._by_counter[counter] = pump
            self.core.release(key, None, now)  # the pump's hold is a reference, not a user
            if self._ticker is None or self._ticker.done():
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
        else:
            self.leases.acquire(key, limit, window, now)
        pump.refs += 1
        pump.sync(now)
        return handle

    def unlease(self, key: str, handle: int, now: float) -> None:
        """A connection holding ``handle`` ended (NativeThrottle.release)."""
        pump = self.pumps.get(handle)
        if pump is None:
            return
        pump.refs -= 1
        self.leases.release(key, now)
        if pump.refs <= 0:
            del self.pumps[handle]
            self._by_counter.pop(pump.counter, None)
            pump.retire(now)
            self.core.unref(pump.handle)

    async def _tick(self) -> None:
        """Pump rounds while leased keys are in use (expiry, prefetch, retries)."""
        while self.pumps:
            sub = min(p.counter.sub_len for p in self.pumps.values())
            await asyncio.sleep(min(TICK_MAX, max(TICK_MIN, sub / 4)))
            now = time.monotonic()
            for pump in list(self.pumps.values()):
                try:
                    pump.sync(now)
                except Exception:  # one key's trouble must not stop the others
                    log.exception("lease pump for %s failed", pump.key)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self.core.fileno(), self.drain)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.core.fileno())
            self._loop = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.drain()
        self.core.close()

    def throttle(self, quotas: Iterable[enforcer_pb2.Quota], now: float) -> NativeThrottle | None:
        """The core's counters for a connection's quotas (router.throttle.connection_throttle's
        rules: keyless, unlimited and repeated quotas are skipped), or None."""
        limits: list[NativeLimit] = []
        for quota in counted_quotas(quotas):
            if self.leases is not None:
                handle = self._lease(quota.key, quota.message_count, quota.window_seconds, now)
            else:
                handle = self.core.acquire(
                    quota.key, quota.message_count, quota.window_seconds, now
                )
            limits.append(NativeLimit(quota.key, quota.policy, quota.stop_on_quota_reach, handle))
        if not limits:
            return None
        return NativeThrottle(self.core, tuple(limits), self if self.leases is not None else None)

    def drain(self) -> None:
        """The core's eventfd is readable: handle what it reported."""
        for event in self.core.events():
            if event[0] == EV_LEASE:
                pump = self.pumps.get(int(event[1]))
                if pump is not None:
                    pump.sync(time.monotonic())
                continue
            if event[0] >= EV_HEAD:
                if self.on_handshake is not None:
                    try:
                        self.on_handshake(event)
                    except Exception:  # one handshake's bug must not lose the others' reports
                        log.exception("handling the core's handshake report %r", event[:2])
                continue
            relay = self.relays.get(event[1])
            if relay is None:
                continue
            kind = event[0]
            if kind == EV_CLOSED:
                del self.relays[event[1]]
                relay._closed(event[2], event[3], event[4], event[5], event[6], event[7])
            elif kind == EV_THROTTLED:
                relay._throttled(event[2], event[3])
            elif kind == EV_ERROR:
                relay._stream_error(event[2], event[3], event[4])
            elif event[2]:
                log.info("aborting %s: %s", relay.info.request_id, event[2])
        if self.after_drain is not None:
            self.after_drain()


class NativeRelay:
    """Both sides of one connection relayed by the core; a Relay's surface for the router."""

    __slots__ = (
        "_counts",
        "_on_done",
        "activity",
        "cause",
        "close_by",
        "close_code",
        "hub",
        "ident",
        "idle_since",
        "info",
        "reported",
        "router_reason",
        "started",
        "throttle",
        "throttle_policy",
    )

    def __init__(
        self,
        hub: NativeHub,
        info: RelayInfo,
        *,
        on_done: Callable[[NativeRelay], None] | None = None,
        throttle: NativeThrottle | None = None,
    ) -> None:
        self.hub = hub
        self.info = info
        self.ident = 0
        self.started = time.monotonic()
        self.throttle = throttle
        self.throttle_policy = ""
        self.cause = ""
        self.router_reason = ""
        self.close_code: int | None = None
        self.close_by = ""
        self.reported = ZERO
        self.activity = 0
        self.idle_since = self.started
        self._counts = ZERO  # the last counters read from the core (the final ones once closed)
        self._on_done = on_done

    def start(
        self,
        client_fd: int,
        backend_fd: int,
        to_client: bytes,
        client_early: bytes,
        backend_early: bytes,
        *,
        max_message: int,
        allow_rsv: bool,
    ) -> None:
        """Give both sockets to the core (it owns and closes the fds from now on)."""
        self.ident = self.hub.core.add(
            client_fd,
            backend_fd,
            to_client,
            client_early,
            backend_early,
            max_message,
            allow_rsv,
            self.throttle.for_core() if self.throttle is not None else (),
        )
        self.hub.relays[self.ident] = self

    def adopt(self, ident: int) -> None:
        """The core relays a handshake it did itself (Core.start) under ``ident``."""
        self.ident = ident
        self.hub.relays[ident] = self

    def counts(self) -> Counts:
        """The core's counters now (or from the router's current snapshot; final once closed)."""
        if self.close_code is None:
            snap = self.hub.snap
            got = snap.get(self.ident) if snap is not None else self.hub.core.counts(self.ident)
            if got is not None:  # (None: ended in the core, its report not read yet)
                self._counts = Counts(*got)
        return self._counts

    @property
    def total_bytes(self) -> int:
        counts = self.counts()
        return counts.bytes_up + counts.bytes_down

    @property
    def throttled(self) -> int:
        return self.counts().throttled

    def terminate(
        self, code: int, reason: str, *, cause: str = "", backend_reason: str = ""
    ) -> bool:
        """Relay.terminate, done by the core at a frame boundary."""
        if self.close_code is not None:
            return False
        done = bool(
            self.hub.core.terminate(
                self.ident, int(code), truncate_utf8(reason), truncate_utf8(backend_reason)
            )
        )
        if done:
            self.cause = cause
            self.router_reason = reason
        return done

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "router stopping") -> None:
        if self.close_code is None:
            self.hub.core.shutdown(self.ident, int(code), truncate_utf8(reason))

    def abort(self, why: str) -> None:
        if self.close_code is None:
            self.hub.core.abort(self.ident, why)

    def scan_state(self) -> ScanState:
        got = self.hub.core.scan_state(self.ident) if self.close_code is None else None
        if got is None:
            return ScanState(0, 0, True, True, self.throttle is not None)
        return ScanState(*got)

    def flow(self) -> Flow:
        got = self.hub.core.flow(self.ident) if self.close_code is None else None
        return Flow(*got) if got is not None else Flow(0, 0, False, False)

    def drop(self) -> None:
        """Drop both TCP connections silently (the router's drain time is over)."""
        if self.close_code is None:
            self.hub.core.abort(self.ident, "")

    # -- the core's reports -----------------------------------------------------------------

    def _throttled(self, index: int, stopped: bool) -> None:
        limit = self.throttle.limits[index] if self.throttle is not None else None
        if stopped:
            self.cause = "throttled"
            self.router_reason = THROTTLED_REASON
            self.throttle_policy = limit.policy if limit is not None else ""
            return
        if limit is not None:
            log.info(
                "throttling %s: quota %s (%s) reached, dropping messages",
                self.info.request_id,
                limit.key,
                limit.policy,
                extra={"request_id": self.info.request_id, "quota": limit.key},
            )

    def _stream_error(self, is_client: bool, code: int, message: str) -> None:
        log.info(
            "closing %s: %s stream error: %s",
            self.info.request_id,
            "client" if is_client else "backend",
            message,
            extra={"request_id": self.info.request_id, "close_code": code},
        )

    def _closed(
        self,
        router_code: int | None,
        closed_by: str,
        terminating: bool,
        up: tuple[bool, int, int | None],
        down: tuple[bool, int, int | None],
        counts: tuple[int, ...],
    ) -> None:
        self._counts = Counts(*counts)
        by, code, self.close_by = close_outcome(router_code, closed_by, terminating, up, down)
        self.close_code = code
        log_closed(
            self.info,
            by,
            code,
            self.router_reason,
            time.monotonic() - self.started,
            self._counts,
            self.throttle is not None,
        )
        if self._on_done is not None:
            self._on_done(self)


class _Gone(asyncio.Protocol):
    """Protocol of a transport whose socket moved into the core: nothing reaches the server."""

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool | None:
        return None


def socket_fd(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise OSError("the transport has no socket")
    return int(sock.fileno())


def is_plain(transport: asyncio.BaseTransport) -> bool:
    """Whether the transport is plain TCP (TLS connections stay on the Python relay)."""
    return transport.get_extra_info("ssl_object") is None and (
        transport.get_extra_info("socket") is not None
    )


def hand_over(transport: asyncio.Transport) -> int:
    """Take the transport's socket away from the event loop; return an fd of it the caller owns.

    Reading stops first, the fd is dup'ed, then the transport is aborted: that closes only the
    loop's fd of the pair, so the socket stays open and the peer sees nothing (no FIN, no RST).
    The transport's write buffer must be empty (nothing of ours is lost).
    """
    transport.pause_reading()
    if transport.get_write_buffer_size():
        raise OSError("the transport still has output to send")
    fd = os.dup(socket_fd(transport))
    transport.set_protocol(_Gone())
    transport.abort()
    return fd
