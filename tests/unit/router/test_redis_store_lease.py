"""The lease arithmetic of the Redis counter store, without Redis: the script's model plus
LeasedCounters driven on a simulated clock with round trips and skewed router clocks."""

from __future__ import annotations

import pytest

from router.lease import (
    CURRENT,
    Clock,
    Health,
    LeasedCounter,
    LeaseReply,
    credit_cap,
    grant_size,
    lease_want,
    sub_windows,
)
from router.throttle import SlidingWindow
from tests.unit.router.lease_model import ScriptModel, Sim


def test_sub_windows_are_capped_by_the_shortest_useful_length() -> None:
    assert sub_windows(60.0, 100) == 100
    assert sub_windows(10.0, 100) == 100
    assert sub_windows(1.0, 100) == 20  # 50 ms each at least
    assert sub_windows(0.01, 100) == 1


@pytest.mark.parametrize(
    ("want", "remaining", "routers", "grant"),
    [
        (10, 1000, 3, 10),  # plenty left: what was asked
        (500, 1000, 3, 166),  # near the limit: a share of what is left
        (10, 5, 3, 1),  # the last permits one by one
        (10, 0, 3, 0),
        (10, -4, 3, 0),  # over (credit charged beyond the limit)
        (0, 1000, 1, 0),
    ],
)
def test_grant_size(want: int, remaining: int, routers: int, grant: int) -> None:
    assert grant_size(want, remaining, routers) == grant


def test_lease_want_and_credit_cap() -> None:
    assert lease_want(10.0, 0, 1000) == 16
    assert lease_want(10.0, 40, 1000) == 61  # this sub-window already used more
    assert lease_want(10_000.0, 0, 1000) == 1000
    assert lease_want(0.0, 0, 1000) == 1
    assert credit_cap(3000, 3) == 2
    assert credit_cap(10, 3) == 1
    assert credit_cap(10_000_000, 1) == 64


def test_the_model_never_reserves_more_than_the_limit_in_s_plus_one_sub_windows() -> None:
    model = ScriptModel(limit=100, sub_len=0.1, subs=10, routers=1)
    granted = [model.run(k * 0.1 + 0.05, k, 1000, ()).grant for k in range(40)]
    assert granted[:4] == [50, 25, 12, 6]  # half of what is left each time (routers = 1)
    for k in range(len(granted)):
        assert sum(granted[max(0, k - 10) : k + 1]) <= 100
    assert sum(granted[:11]) >= 98
    # sub-window 0 left the window: its 50 are back, half of what is left is granted
    assert granted[11] == (100 - sum(granted[1:11])) // 2 >= 25


def test_returns_and_credit_adjust_only_the_live_sub_windows() -> None:
    model = ScriptModel(limit=100, sub_len=1.0, subs=10, routers=1)
    model.run(5.5, 5, 40, ())
    assert model.counts == {5: 40}
    model.run(6.5, 6, 0, ((5, -50), (6, 3), (-100, 7)))  # give back more than held: clamped
    assert model.counts == {5: 0, 6: 3}


def counter(health: Health | None = None, kicks: list[LeasedCounter] | None = None):
    seen = kicks if kicks is not None else []
    return LeasedCounter(
        100,
        10.0,
        subs=10,
        routers=2,
        max_lease=1000,
        clock=Clock(),
        health=health or Health(),
        kick=seen.append,
    )


def test_a_cold_counter_admits_on_credit_and_asks_once() -> None:
    kicks: list[LeasedCounter] = []
    c = counter(kicks=kicks)
    assert c.available(0.3)  # nothing known yet: credit (cap 1 for 100 / (200 * 2))
    c.take(0.3)
    assert len(kicks) == 1 and c.in_flight
    assert not c.available(0.3)  # the credit cap is used up until the reply
    req = c.request(0.3)
    assert req.adjust == ((CURRENT, 1),)  # charged to the current sub-window (clock unknown)
    assert (req.target, req.want) == (0, 9)  # this sub-window, 1.5 x the fair share + 1
    c.granted(req, LeaseReply(9, req.target, 0, 89, 0.3), 0.3)
    assert c.permits == 9 and c.available(0.31)


def granted_at(c: LeasedCounter, t: float, grant: int, sub: int, remaining: int) -> None:
    """Redis (clock = local + 0.5) answers a request sent at local t - 1 ms at once."""
    req = c.request(t - 0.001)
    c.granted(req, LeaseReply(grant, sub, 0, remaining, t - 0.0005 + 0.5), t)


def test_permits_are_used_only_inside_their_sub_window() -> None:
    c = counter()
    granted_at(c, 0.1, 5, 0, remaining=1)  # sub-window 0 = Redis [0, 1) = local [-0.5, 0.5)
    guard = c.clock.guard
    assert guard == pytest.approx(0.75 * 0.001 + 0.0005)
    assert c.available(0.5 - guard - 1e-6)
    c.take(0.5 - guard - 1e-6)
    assert not c.available(0.5 - guard)  # within the guard of the end; no room for credit
    c.in_flight = False
    # once the next sub-window has surely begun, the lease is retired and its rest given back
    assert c.request(0.5 + guard + 1e-6).adjust == ((0, -4),)


def test_near_an_edge_a_message_is_charged_to_both_sub_windows() -> None:
    c = counter()
    granted_at(c, 0.1, 5, 0, remaining=50)
    c.in_flight = False
    granted_at(c, 0.3, 7, 1, remaining=40)  # the next sub-window's lease, early
    edge = 0.5 - c.clock.guard
    assert c.available(edge) and c.permits == 5
    c.take(edge)
    assert (c.permits, c._next_permits) == (4, 6)
    c.take(0.5 + c.clock.guard)  # past the edge: only the next sub-window's lease
    assert c.permits == 5


def test_fail_open_uses_the_local_cap_and_remembers_what_it_admitted() -> None:
    health = Health(up=False, fail_open=True)
    c = counter(health)
    admitted = 0
    for k in range(80):
        if c.available(k * 0.01):
            c.take(k * 0.01)
            admitted += 1
    assert admitted == 50  # limit 100 / 2 routers, the in-process sliding window
    assert health.stats.degraded_admits == 50 and health.stats.degraded_refusals == 30
    assert c.owed == 50
    health.up = True
    assert c.request(1.0).adjust == ((CURRENT, 50),)  # charged once Redis is back


def test_fail_closed_refuses_once_the_leases_run_out() -> None:
    health = Health(up=True, fail_open=False)
    c = counter(health)
    req = c.request(0.2)
    c.granted(req, LeaseReply(3, 0, 0, 97, 0.2005), 0.201)
    health.up = False
    results = [c.available(0.1) and (c.take(0.1) or True) for _ in range(5)]
    assert results == [True, True, True, False, False]  # granted permits stay valid
    assert health.stats.degraded_refusals == 2


def steady(sim: Sim, duration: float, rates: list[float], start: float = 0.0) -> None:
    """Every router gets messages evenly at its own rate (per second)."""
    events = sorted(
        (start + (k + 0.5 * i / len(rates)) / rate, i)
        for i, rate in enumerate(rates)
        for k in range(int(duration * rate))
    )
    for t, i in events:
        sim.message(i, t)


@pytest.mark.parametrize(
    ("rtt", "share"),
    [(0.0002, 0.98), (0.002, 0.96), (0.02, 0.75)],  # edges (2 x guard) cost with long trips
    ids=["rtt-0.2ms", "rtt-2ms", "rtt-20ms"],
)
def test_three_routers_overloading_hold_the_global_limit(rtt: float, share: float) -> None:
    sim = Sim(limit=3000, window=10.0, subs=100, routers=3, rtt=rtt)
    steady(sim, 40.0, [200.0, 150.0, 100.0])  # 450/s offered for 300/s allowed
    assert sim.worst_window() <= 3000
    in_last_windows = sum(1 for t in sim.admitted if t >= 10.0)
    assert in_last_windows >= share * 3 * 3000  # at best S/(S+1) of the limit


def test_bursts_hold_the_global_limit() -> None:
    sim = Sim(limit=600, window=2.0, subs=20, routers=3, rtt=0.001)
    exact, in_process = SlidingWindow(600, 2.0), 0  # what one router alone would admit
    for burst in range(12):
        t0 = burst * 0.7
        for k in range(400):
            t = t0 + k * 0.0001
            sim.message(k % 3, t)
            if exact.available(t):
                exact.take(t)
                in_process += 1
    # credit taken on stale news may overdraw, by at most 2 * routers * cap per window
    assert sim.worst_window() <= 600 + 2 * 3 * credit_cap(600, 3)
    assert len(sim.admitted) >= 0.95 * in_process


def test_traffic_under_the_limit_is_never_refused() -> None:
    sim = Sim(limit=3000, window=10.0, subs=100, routers=3, rtt=0.001)
    steady(sim, 30.0, [120.0, 90.0, 60.0])  # 270/s for 300/s allowed
    assert sim.refused == 0
    sparse = Sim(limit=100, window=60.0, subs=100, routers=3, rtt=0.001)
    steady(sparse, 120.0, [0.3, 0.2, 0.1])  # a message every few seconds
    assert sparse.refused == 0


def test_requests_per_sub_window_stay_few() -> None:
    sim = Sim(limit=3000, window=10.0, subs=100, routers=3, rtt=0.001)
    steady(sim, 30.0, [200.0, 150.0, 100.0])
    per_router_per_second = sim.model.calls / 30.0 / 3
    assert per_router_per_second < 40  # 10 sub-windows per second


def test_redis_down_then_back_the_debt_restores_the_count() -> None:
    sim = Sim(limit=300, window=10.0, subs=100, routers=3, rtt=0.001)
    steady(sim, 5.0, [50.0, 50.0, 50.0])
    sim.redis_up = False
    sim.model.counts.clear()  # a restarted Redis has lost everything
    steady(sim, 5.0, [50.0, 50.0, 50.0], start=5.0)
    assert all(not h.up for h in sim.health)
    sim.redis_up = True
    for h in sim.health:
        h.up = True
    steady(sim, 20.0, [50.0, 50.0, 50.0], start=10.0)
    # each router admitted up to limit/3 while down; charged back, the window still holds
    assert sim.worst_window() <= 300 + 3
    assert sum(h.stats.degraded_admits for h in sim.health) > 0


# -- lending to the relay core (router.native.LeasePump): pure, no core, no Redis -----------


def test_lent_permits_come_from_the_lease_and_are_valid_only_in_its_sub_window() -> None:
    c = counter()
    granted_at(c, 0.1, 5, 0, remaining=50)  # sub-window 0 = local [-0.5, 0.5)
    c.in_flight = False
    got = c.lend_current(0.2, 3)
    assert got is not None
    sub, k, _start, end = got
    assert (sub, k, c.permits) == (0, 3, 2)
    assert end == pytest.approx(0.5 - c.clock.guard)  # the lease's own end, guard included
    assert c.lend_current(end, 3) is None  # too late for this lease
    c.unlend(0, 3)  # the core did not use them: back to the lease while it is in use
    assert c.permits == 5


def test_permits_lent_and_unused_after_their_sub_window_go_back_to_redis() -> None:
    c = counter()
    granted_at(c, 0.1, 5, 0, remaining=50)
    c.in_flight = False
    got = c.lend_current(0.2, 4)
    assert got is not None and got[1] == 4
    t = 0.5 + c.clock.guard + 1e-6  # the next sub-window has surely begun: lease retired
    c.tick(t)
    c.unlend(0, 3)  # 1 of the 4 was used by the core
    c.in_flight = False
    assert dict(c.request(t).adjust)[0] == -4  # the lease's 1 left + the 3 lent back


def test_the_next_sub_windows_lease_is_lent_for_its_own_sub_window() -> None:
    c = counter()
    granted_at(c, 0.1, 5, 0, remaining=50)
    c.in_flight = False
    granted_at(c, 0.3, 7, 1, remaining=40)
    got = c.lend_next(0.31, 4)
    assert got is not None
    sub, k, start, end = got
    assert (sub, k, c._next_permits) == (1, 4, 3)
    assert start == pytest.approx(0.5 + c.clock.guard) and end == pytest.approx(1.5 - c.clock.guard)
    c.unlend(1, 2)
    assert c._next_permits == 5


def test_credit_is_lent_within_the_cap_and_unlent_credit_is_not_charged() -> None:
    kicks: list[LeasedCounter] = []
    c = counter(kicks=kicks)
    got = c.lend_credit(0.3, 5)
    assert got is not None
    sub, k, _start, _end, degraded = got
    assert (sub, k, degraded) == (CURRENT, 1, False)  # cap 1; clock unknown yet
    assert len(kicks) == 1 and c.in_flight  # a lease is asked for at once
    assert c.lend_credit(0.3, 5) is None  # the cap is used up
    c.unlend(CURRENT, 1, credit=True)
    assert c.owed == 0 and c.health.stats.credit == 0
    assert c.request(0.3).adjust == ()  # nothing to charge


def test_fail_open_lends_what_the_local_cap_admits_and_fail_closed_lends_nothing() -> None:
    c = counter(Health(up=False, fail_open=True))
    got = c.lend_credit(0.1, 80)
    assert got is not None and got[1] == 50 and got[4]  # limit 100 / 2 routers
    assert c.lend_credit(0.2, 1) is None
    assert c.owed == 50  # charged when Redis is back
    c.unlend(got[0], 10, credit=True, degraded=True, at=0.1)
    assert c.owed == 40 and c.health.stats.degraded_admits == 40
    again = c.lend_credit(0.2, 80)  # what came back unused is admissible again
    assert again is not None and again[1] == 10
    closed = counter(Health(up=False, fail_open=False))
    assert closed.lend_credit(0.1, 5) is None
