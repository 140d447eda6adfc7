"""Differential tests: the C quota counters (router/_core/quota.c) against the Python reference
(router.throttle: SlidingWindow, TokenBucket, InProcessCounterStore, ConnectionThrottle).

Random sequences of acquire / admit / release at random increasing times must give the same
admit answers and the same number of counters kept. Under ``CI=true`` a missing build fails.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.throttle import ConnectionThrottle, InProcessCounterStore, Limit
from tests.procs import import_or_unavailable

KEYS = ["api:a", "sub:x:a", "app:x:s"]
QUOTAS = [(1, 1.0), (3, 2.0), (5, 0.5), (200_000, 1.0), (150_001, 3.0)]


@pytest.fixture(scope="module")
def core() -> Any:
    return import_or_unavailable("router._core")


op = st.one_of(
    st.tuples(
        st.just("open"),
        st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(QUOTAS)), min_size=1, max_size=3),
    ),
    st.tuples(st.just("admit"), st.integers(0, 7)),
    st.tuples(st.just("close"), st.integers(0, 7)),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.001, 0.1, 0.4, 1.0, 2.5, 61.0])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=120))
def test_same_answers(core: Any, ops: list[tuple[str, Any]]) -> None:
    now = 1000.0
    py_store = InProcessCounterStore()
    table = core.CounterTable()
    conns: list[tuple[ConnectionThrottle, list[tuple[str, int]]]] = []
    for kind, arg in ops:
        if kind == "wait":
            now += arg
        elif kind == "open":
            limits, handles, seen = [], [], set()
            for key, (limit, window) in arg:
                if key in seen:
                    continue
                seen.add(key)
                counter = py_store.acquire(key, limit, window, now)
                limits.append(Limit(key, "p", counter, False))
                handles.append((key, table.acquire(key, limit, window, now)))
            conns.append((ConnectionThrottle(tuple(limits), py_store), handles))
        elif conns:
            throttle, handles = conns[arg % len(conns)]
            if kind == "admit":
                refused = throttle.admit(now)
                want = -1 if refused is None else throttle.limits.index(refused)
                assert table.admit(tuple(h for _, h in handles), now) == want
            else:
                conns.remove((throttle, handles))
                throttle.release(now)
                for key, handle in handles:
                    table.release(key, handle, now)
        assert len(table) == len(py_store)
    for throttle, handles in conns:
        throttle.release(now)
        for key, handle in handles:
            table.release(key, handle, now)
    assert len(table) == len(py_store)


def test_exact_window_and_bucket(core: Any) -> None:
    table = core.CounterTable()
    exact = table.acquire("api:a", 3, 1.0, 0.0)
    assert [table.admit((exact,), 0.0) for _ in range(4)] == [-1, -1, -1, 0]
    assert table.admit((exact,), 0.999) == 0
    assert table.admit((exact,), 1.0) == -1  # the first slot came back exactly W later
    bucket = table.acquire("api:b", core.EXACT_LIMIT + 1, 1.0, 0.0)
    passed = sum(table.admit((bucket,), 0.0) < 0 for _ in range(core.EXACT_LIMIT + 5))
    assert passed == core.EXACT_LIMIT + 1
    # a refused message uses none of the quotas up
    one = table.acquire("sub:a", 1, 5.0, 0.0)
    two = table.acquire("app:a", 2, 5.0, 0.0)
    assert table.admit((two, one), 0.0) == -1
    assert table.admit((two, one), 0.0) == 1  # "one" is full: "two" keeps its second slot
    assert table.admit((two,), 0.0) == -1


def test_counter_kept_after_release_until_idle(core: Any) -> None:
    table = core.CounterTable()
    h = table.acquire("api:a", 1, 10.0, 0.0)
    assert table.admit((h,), 0.0) == -1
    table.release("api:a", h, 1.0)
    assert len(table) == 1  # reconnecting does not reset the quota
    h = table.acquire("api:a", 1, 10.0, 2.0)
    assert table.admit((h,), 2.0) == 0
    table.release("api:a", h, 11.0)
    assert len(table) == 0
