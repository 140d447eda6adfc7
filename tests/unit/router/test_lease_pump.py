"""The relay core's leased pool (router.native.LeasePump + router._core) against the Python
relay's decisions (router.lease.LeasedCounter used directly), on a simulated clock; and both
relay paths' holding (a message the lease has nothing for yet waits, it is not refused).

The core decides each message without Python, from permits the pump lends it; the pump runs
only on lease replies and on a ticker (a loop turn away, longer under load). A message the
Python path would pass must pass in the core too, whether it finds the pool empty or falls
between two leases, and the global limit must hold within lease.py's credit bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from router.lease import Clock, Health, LeasedCounter, LeaseReply, credit_cap
from router.native import LeasePump
from router.relay import HOLD_MAX
from tests.procs import import_or_unavailable
from tests.unit.router.lease_model import NativeSim, PySim, Sim

LIMIT, WINDOW, SUBS, ROUTERS = 3000, 10.0, 100, 3  # sub-windows of 0.1 s, credit cap 2


@pytest.fixture(scope="module")
def core_module() -> Any:
    return import_or_unavailable("router._core")


@pytest.fixture
def core(core_module: Any) -> Iterator[Any]:
    core = core_module.Core()
    yield core
    core.close()


def counter(kicks: list[LeasedCounter]) -> LeasedCounter:
    return LeasedCounter(
        LIMIT,
        WINDOW,
        subs=SUBS,
        routers=ROUTERS,
        max_lease=1000,
        clock=Clock(),
        health=Health(),
        kick=kicks.append,
    )


def lease(c: LeasedCounter, t: float, grant: int, sub: int) -> None:
    """Redis (clock = local + 0.05: sub-window 0 is local [-0.05, 0.05)) grants ``grant``
    permits of ``sub`` to a request sent 1 ms before local time t."""
    req = c.request(t - 0.001)
    c.granted(req, LeaseReply(grant, sub, 0, 2000, t - 0.0005 + 0.05), t)


class Twins:
    """Two counters with one history: ``python`` decides messages itself (the Python relay),
    ``native`` lends to a core whose pool decides them (the native relay)."""

    def __init__(self, core: Any) -> None:
        self.kicks: list[LeasedCounter] = []
        self.python, self.native = counter(self.kicks), counter(self.kicks)
        self.core = core
        self.handle = core.acquire("api:g", LIMIT, WINDOW, 0.0, True)
        self.pump = LeasePump(core, self.handle, self.native, "api:g")

    def lease(self, t: float, grant: int, sub: int) -> None:
        for c in (self.python, self.native):
            lease(c, t, grant, sub)
        self.pump.sync(t)  # as on the reply (RedisCounterStore.on_reply)

    def message(self, t: float) -> tuple[bool, bool]:
        """(the Python path passed it, the core passed it)."""
        python = self.python.available(t)
        if python:
            self.python.take(t)
        return python, self.core.admit((self.handle,), t) < 0


def test_a_message_finding_the_pool_empty_passes_on_credit_as_on_the_python_path(
    core: Any,
) -> None:
    """The lease's permits are all in the core's pool and used; the pump is a loop turn
    away: the next messages pass on credit up to the cap, as without the core."""
    twins = Twins(core)
    twins.lease(0.0, 3, 0)
    assert core.lease_state(twins.handle)[0][0] == 3  # the whole lease lent
    decisions = [twins.message(0.001 * k) for k in range(1, 7)]
    assert [p for p, _ in decisions] == [True] * 5 + [False]  # 3 permits + credit cap 2
    assert decisions == [(p, p) for p, _ in decisions], "the core decided otherwise"
    # the pump's next round charges the core's credit as take charges it: same sub-window
    twins.pump.sync(0.007)
    assert twins.native.owed == twins.python.owed == 2
    twins.python.in_flight = twins.native.in_flight = False
    python, native = twins.python.request(0.008), twins.native.request(0.008)
    assert native.adjust == python.adjust == ((0, 2),) and native.credit == python.credit == 2


def test_between_two_leases_a_message_passes_on_credit_as_on_the_python_path(
    core: Any,
) -> None:
    """Past the lease's guarded end, before the next sub-window has surely begun and with no
    next lease: the Python path passes it on credit; so must the core."""
    twins = Twins(core)
    twins.lease(0.0, 5, 0)
    end = twins.native.lease_end()
    assert end is not None
    start = end + 2 * twins.native.clock.guard  # the next sub-window's guarded start
    gap = [end + (start - end) * f for f in (0.1, 0.5, 0.9)]
    decisions = [twins.message(t) for t in gap]
    assert [p for p, _ in decisions] == [True, True, False]  # on credit, up to the cap
    assert decisions == [(p, p) for p, _ in decisions], "the core decided otherwise"
    twins.pump.sync(start + 0.001)
    assert twins.native.owed == twins.python.owed == 2


def test_unused_credit_allowance_is_never_charged_and_counts_against_the_cap(
    core: Any,
) -> None:
    """The core's allowance is reserved under the credit cap (the Python relay's messages on
    the same counter see it) and withdrawn unused when the counter no longer allows credit."""
    twins = Twins(core)
    c, handle = twins.native, twins.handle
    twins.pump.sync(0.0)  # a cold start: nothing known, credit allowed
    assert c.credit_allowed == core.lease_state(handle)[5] == credit_cap(LIMIT, ROUTERS)
    assert not c.available(0.0)  # the cap is the core's now
    req = c.request(0.001)
    assert req.adjust == ()  # nothing charged for credit not used
    c.granted(req, LeaseReply(0, 0, 0, 0, 0.05), 0.002)  # Redis has nothing left
    twins.pump.sync(0.002)
    assert c.credit_allowed == core.lease_state(handle)[5] == 0  # withdrawn
    assert core.admit((handle,), 0.003) == 0  # refused, as the Python path refuses it
    twins.pump.retire(0.004)
    assert c.owed == 0 and core.idle(handle, 100.0)


def test_the_core_gets_the_next_sub_windows_lease_asked_for_earlier(core: Any) -> None:
    """The Python relay's messages wait for the loop that brings the next lease; the core's do
    not, so the pump asks for it half a sub-window ahead (two of its rounds at least), where
    the Python path asks a quarter ahead."""
    twins = Twins(core)
    twins.lease(0.0, 40, 0)  # sub-window 0 ends at local 0.05; the pump lends 7 of the 40
    twins.python.tick(0.0)
    assert not twins.python.in_flight
    assert twins.native.in_flight and twins.native.request(0.001).target == 1


def test_a_message_the_pool_has_nothing_for_waits_for_the_pump_not_refused(core: Any) -> None:
    """Pool and credit used up, the lease reply a loop turn away: the core holds the message
    (its side is not read) instead of refusing one the window has room for, and the pump's
    next round lets it pass."""
    twins = Twins(core)
    twins.lease(0.0, 3, 0)
    handle = twins.handle
    for k in range(1, 6):  # the 3 permits, then the credit cap (2)
        assert core.admit((handle,), 0.001 * k, True) == -1
    assert core.admit((handle,), 0.006) == 0  # without holding: refused (the old answer)
    assert core.admit((handle,), 0.006, True) == -2  # held by quota 0
    waits = core.lease_state(handle)[7]
    assert waits == 1 and core.lease_state(handle)[5] == 0  # allowance used up
    twins.lease(0.01, 20, 0)  # the reply: the pump tops the pool up
    assert core.admit((handle,), 0.011, True) == -1


def test_the_core_refuses_once_the_counter_says_the_window_is_exhausted(core: Any) -> None:
    """Redis answered no room left: a message the pool has nothing for is refused, as the Python
    path refuses it, until that sub-window is over; then held again (a new window may have
    room)."""
    twins = Twins(core)
    handle, c = twins.handle, twins.native
    twins.lease(0.0, 2, 0)
    assert [twins.message(0.001 * k) for k in range(1, 3)] == [(True, True)] * 2
    for counter_ in (twins.python, c):  # Redis: nothing left in sub-window 0
        req = counter_.request(0.003)
        counter_.granted(req, LeaseReply(0, 0, 0, 0, 0.0535), 0.004)
    twins.pump.sync(0.004)
    dry = core.lease_state(handle)[8]
    assert dry == pytest.approx(0.05, abs=0.002)  # sub-window 0's end (Redis 0.1), local time
    assert not twins.python.available(0.005)  # the Python path refuses it ...
    assert core.admit((handle,), 0.005, True) == 0  # ... and so does the core
    assert core.admit((handle,), dry + 0.001, True) == -2  # past it: held, a lease is asked
    twins.pump.sync(dry + 0.001)
    assert c.in_flight


def steady(sim: Sim, duration: float, rates: list[float], jitter: float = 0.0) -> None:
    """Every router gets messages at its own rate; with ``jitter``, in bursts (a client a
    little late sends what it owes at once, as on a loaded machine)."""
    events = []
    for i, rate in enumerate(rates):
        for k in range(int(duration * rate)):
            t = (k + 0.5 * i / len(rates)) / rate
            if jitter:
                t = (t // jitter + 1) * jitter  # held back to the next multiple of jitter
            events.append((t, i))
    for t, i in sorted(events):
        sim.message(i, t)


@pytest.mark.parametrize("jitter", [0.0, 0.03])
def test_traffic_under_the_limit_is_never_refused_by_the_core(
    core_module: Any, jitter: float
) -> None:
    """The integration test's load (3 x 50/s for 300/s allowed), the pump only on replies and
    a 25 ms ticker: the Python path refuses nothing, neither may the core."""
    python = Sim(limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.001)
    steady(python, 6.0, [50.0] * 3, jitter)
    assert python.refused == 0
    native = NativeSim(
        limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.001, core_module=core_module
    )
    try:
        steady(native, 6.0, [50.0] * 3, jitter)
    finally:
        native.close()
    assert native.refused == 0, f"{native.refused} messages under the limit refused"


@pytest.mark.parametrize("jitter", [0.0, 0.03])
def test_a_stalled_loop_delays_traffic_under_the_limit_but_never_refuses_it(
    core_module: Any, jitter: float
) -> None:
    """The integration test's load while every router's loop is stuck 300 ms in each second (no
    lease request, reply nor pump round: longer than a sub-window plus the credit): the core
    holds what its pool has nothing for until the loop is back, and refuses none of it."""
    stalls = tuple((0.7 + k, 1.0 + k) for k in range(5))
    sim = NativeSim(
        limit=LIMIT,
        window=WINDOW,
        subs=SUBS,
        routers=ROUTERS,
        rtt=0.001,
        core_module=core_module,
        stalls=stalls,
    )
    try:
        steady(sim, 6.0, [50.0] * 3, jitter)
        sim.run_until(7.0)
    finally:
        sim.close()
    assert sim.refused == 0, f"{sim.refused} messages under the limit refused"
    assert sim.held == 0 and len(sim.admitted) == 3 * 300  # all passed, none left waiting
    assert max(sim.delays) > 0.1  # (they did wait for the loop)
    assert max(sim.delays) < 0.3 + 0.1  # the stall, then a reply and a pump round or two
    assert sim.worst_window() <= LIMIT


def test_the_core_holds_the_global_limit_within_the_credit_bound(core_module: Any) -> None:
    """Overloaded (450/s for 300/s allowed): credit is bounded as on the Python path, and
    holding does not queue the excess."""
    sim = NativeSim(
        limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.002, core_module=core_module
    )
    try:
        steady(sim, 25.0, [200.0, 150.0, 100.0], 0.03)
    finally:
        sim.close()
    assert sim.worst_window() <= LIMIT + 2 * ROUTERS * credit_cap(LIMIT, ROUTERS)
    # not starved: the pump on a ticker alone keeps the core at half the limit's rate at least
    assert sum(1 for t in sim.admitted if t >= 10.0) >= 0.5 * 1.5 * LIMIT
    # throttled, not queued: what the core held passed within HOLD_MAX or was refused then
    assert sim.refused > 0 and max(sim.delays) <= core_module.HOLD_MAX + 1e-6


STALLS = tuple((0.7 + k, 1.0 + k) for k in range(5))  # 300 ms in each second


def test_without_holding_a_stalled_loop_refuses_traffic_under_the_limit() -> None:
    """The defect holding fixes, on the Python path (what it did before): the messages read at
    the stall's end find no lease, the credit cap passes 2, the rest are refused."""
    sim = PySim(
        limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.001, stalls=STALLS, hold=False
    )
    steady(sim, 6.0, [50.0] * 3)
    assert sim.refused > 100  # (200 of 900)


@pytest.mark.parametrize("jitter", [0.0, 0.03])
def test_a_stalled_loop_never_refuses_traffic_under_the_limit_on_the_python_path(
    jitter: float,
) -> None:
    """The integration test's load while every router's loop is stuck 300 ms in each second:
    the Python relay holds what the lease has nothing for until the reply its loop asked for
    comes back, and refuses none of it."""
    sim = PySim(limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.001, stalls=STALLS)
    steady(sim, 6.0, [50.0] * 3, jitter)
    sim.run_until(7.0)
    assert sim.refused == 0, f"{sim.refused} messages under the limit refused"
    assert sim.held == 0 and len(sim.admitted) == 3 * 300  # all passed, none left waiting
    assert sum(c.health.stats.holds for c in sim.counters) > 0  # (they did wait)
    assert max(sim.delays) < 0.1  # a round trip after the loop is back, not HOLD_MAX
    assert sim.worst_window() <= LIMIT


def test_the_python_path_holds_the_global_limit_within_the_credit_bound() -> None:
    """Overloaded (450/s for 300/s allowed): holding neither breaks the bound nor queues the
    excess; it is throttled (what was held passed within HOLD_MAX or was refused then)."""
    sim = PySim(limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.002)
    steady(sim, 25.0, [200.0, 150.0, 100.0], 0.03)
    sim.run_until(27.0)
    assert sim.worst_window() <= LIMIT + 2 * ROUTERS * credit_cap(LIMIT, ROUTERS)
    assert sum(1 for t in sim.admitted if t >= 10.0) >= 0.9 * 1.5 * LIMIT  # not starved
    assert sim.refused > 0 and max(sim.delays) <= HOLD_MAX + 1e-6
    assert sim.held == 0


def test_the_python_path_refuses_at_once_when_redis_is_down_fail_closed() -> None:
    """Redis unreachable: nothing to wait for; fail-closed refuses as before (no hold)."""
    sim = PySim(limit=LIMIT, window=WINDOW, subs=SUBS, routers=ROUTERS, rtt=0.001, fail_open=False)
    sim.redis_up = False
    assert sim.message(0, 0.0)  # a cold start: on credit; its request fails
    sim.run_until(0.01)
    assert not sim.health[0].up
    assert [sim.message(0, 0.02 + 0.001 * k) for k in range(5)] == [False] * 5
    assert sim.held == 0 and sim.counters[0].health.stats.holds == 0


def test_the_relays_hold_for_the_same_time_at_most(core_module: Any) -> None:
    assert core_module.HOLD_MAX == HOLD_MAX
