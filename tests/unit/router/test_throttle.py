"""Throttling arithmetic with an injected clock: exact sliding window, store, quota order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.throttle import (
    EXACT_LIMIT,
    InProcessCounterStore,
    SlidingWindow,
    TokenBucket,
    connection_throttle,
    new_counter,
)
from wsgate_proto import enforcer_pb2


def run(counter: SlidingWindow | TokenBucket, times: list[float]) -> list[bool]:
    out = []
    for t in times:
        ok = counter.available(t)
        if ok:
            counter.take(t)
        out.append(ok)
    return out


def test_burst_of_n_passes_and_the_next_is_refused() -> None:
    window = SlidingWindow(5, 10.0)
    assert run(window, [0.0] * 6) == [True] * 5 + [False]


def test_slots_come_back_exactly_one_window_after_their_use() -> None:
    window = SlidingWindow(3, 10.0)
    assert run(window, [0.0, 1.0, 2.0]) == [True] * 3
    assert run(window, [9.999]) == [False]
    assert run(window, [10.0]) == [True]  # the slot used at 0.0 is back at 10.0
    assert run(window, [10.5, 11.0]) == [False, True]
    # no 2N burst across a fixed-window edge: 3 more only once the last 3 are W old
    assert run(window, [12.0, 19.99]) == [True, False]


def test_refused_messages_do_not_use_the_quota() -> None:
    window = SlidingWindow(1, 1.0)
    assert run(window, [0.0, 0.5, 0.9, 1.0]) == [True, False, False, True]


times_strategy = st.lists(
    st.floats(min_value=0.0, max_value=50.0, allow_nan=False), min_size=1, max_size=200
).map(sorted)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=12),
    window=st.sampled_from([0.5, 1.0, 2.5, 10.0]),
    times=times_strategy,
    bursts=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=200),
)
def test_sliding_window_is_exact(
    limit: int, window: float, times: list[float], bursts: list[int]
) -> None:
    """At most `limit` admits in any window (t - W, t]; a refusal only with `limit` in it."""
    arrivals = [t for t, n in zip(times, bursts, strict=False) for _ in range(n)]
    counter = SlidingWindow(limit, window)
    decisions = run(counter, arrivals)
    admitted = [t for t, ok in zip(arrivals, decisions, strict=True) if ok]
    for t in admitted:
        assert sum(1 for a in admitted if t - window < a <= t) <= limit
    for t, ok in zip(arrivals, decisions, strict=True):
        in_window = sum(1 for a in admitted if t - window < a <= t and a <= t)
        if not ok:
            assert in_window >= limit  # never refused below the limit


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=12),
    window=st.sampled_from([0.5, 1.0, 10.0]),
    times=times_strategy,
)
def test_token_bucket_burst_and_rate(limit: int, window: float, times: list[float]) -> None:
    """The fallback for huge quotas: never more than burst + rate * elapsed."""
    bucket = TokenBucket(limit, window)
    decisions = run(bucket, times)
    admitted = [t for t, ok in zip(times, decisions, strict=True) if ok]
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert j - i + 1 <= limit + span * limit / window + 1e-6
    same_instant = TokenBucket(limit, window)
    assert run(same_instant, [1.0] * (limit + 1)) == [True] * limit + [False]


def test_huge_quotas_use_a_token_bucket() -> None:
    assert isinstance(new_counter(EXACT_LIMIT, 1.0), SlidingWindow)
    assert isinstance(new_counter(EXACT_LIMIT + 1, 1.0), TokenBucket)
    with pytest.raises(ValueError):
        SlidingWindow(0, 1.0)


def quota(key: str, n: int, window: float = 10.0, stop: bool = True) -> enforcer_pb2.Quota:
    return enforcer_pb2.Quota(
        key=key, policy=f"P{n}", message_count=n, window_seconds=window, stop_on_quota_reach=stop
    )


def test_store_shares_a_key_and_keeps_it_until_idle() -> None:
    store = InProcessCounterStore()
    a = store.acquire("sub:app:api", 2, 10.0, 0.0)
    b = store.acquire("sub:app:api", 2, 10.0, 0.0)
    assert a is b
    a.take(1.0)
    store.release("sub:app:api", 2.0)
    store.release("sub:app:api", 2.0)
    # released but not idle: a reconnect must not get a fresh quota
    assert store.acquire("sub:app:api", 2, 10.0, 3.0) is a
    store.release("sub:app:api", 12.0)  # idle now: forgotten
    assert len(store) == 0
    # a changed policy gets a fresh counter
    c = store.acquire("k", 2, 10.0, 0.0)
    assert store.acquire("k", 3, 10.0, 0.0) is not c


def test_store_sweeps_unused_idle_counters() -> None:
    store = InProcessCounterStore()
    counter = store.acquire("a", 1, 1.0, 0.0)
    counter.take(0.0)
    store.release("a", 0.5)  # not idle yet: kept
    assert len(store) == 1
    store.acquire("b", 1, 1.0, 100.0)  # a sweep runs (> SWEEP_INTERVAL since the last)
    assert len(store) == 1


def test_connection_throttle_checks_in_order_and_counts_only_admitted() -> None:
    store = InProcessCounterStore()
    quotas = [quota("api:x", 3), quota("sub:a:x", 2, stop=False), quota("app:a:u", 10)]
    throttle = connection_throttle(quotas, store, 0.0)
    assert throttle is not None
    assert [throttle.admit(0.0) for _ in range(2)] == [None, None]
    refused = throttle.admit(0.0)
    assert refused is not None and refused.key == "sub:a:x" and not refused.stop
    # the refused message did not use the API-level quota: another subscription still has 1
    other = connection_throttle([quota("api:x", 3), quota("sub:b:x", 2)], store, 0.0)
    assert other is not None
    assert other.admit(0.0) is None
    refused = other.admit(0.0)
    assert refused is not None and refused.key == "api:x" and refused.stop


def test_unlimited_and_broken_quotas_are_skipped() -> None:
    store = InProcessCounterStore()
    assert connection_throttle([], store, 0.0) is None
    unlimited = [quota("api:x", 0), quota("", 5), quota("sub:a:x", 5, window=0.0)]
    assert connection_throttle(unlimited, store, 0.0) is None
    twice = connection_throttle([quota("k", 1), quota("k", 1)], store, 0.0)
    assert twice is not None and len(twice.limits) == 1
    assert len(store) == 1


def test_untake_forgets_admits_decided_ahead_and_never_used() -> None:
    """router.lease lends admits of the fallback cap to the relay core ahead of the messages;
    the ones the core did not use are given back, and never make the window looser."""
    w = SlidingWindow(3, 10.0)
    w.take(1.0)
    w.take(2.0)
    w.take(2.0)
    assert not w.available(5.0)
    w.untake(2.0, 1)
    assert w.available(5.0)
    w.take(5.0)
    assert not w.available(6.0)
    w.untake(5.0, 1)
    w.untake(2.0, 1)  # past a forgotten one, in a full ring
    w.take(6.0)
    w.take(6.0)
    assert not w.available(6.0)  # 1.0, 6.0, 6.0
    assert w.available(11.0)  # 1.0 left the window
    w.untake(7.0, 1)  # nothing recorded then: nothing changes
    assert not w.available(10.9)
    b = TokenBucket(200_000, 1.0)
    b.take(0.0)
    b.untake(0.0, 5)
    assert b.available(0.0)
