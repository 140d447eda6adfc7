"""The sign-in backoff (issue 12 item 6): grows after free failures, decays, never locks out
forever, bounded memory."""

from __future__ import annotations

from wsgate_common.backoff import Backoff, BackoffPolicy, keys_for, retry_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_a_growing_capped_delay() -> None:
    clock = Clock()
    backoff = Backoff(BackoffPolicy(free_failures=3, base_delay=1, max_delay=8, decay=60), clock)
    keys = keys_for("alice", "10.0.0.1")
    delays = [backoff.failed(keys) for _ in range(8)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:] == [1, 2, 4, 8, 8]
    assert backoff.retry_after(keys) == 8
    assert backoff.retry_after(["user:alice"]) == 8
    assert backoff.retry_after(["addr:10.0.0.1"]) == 8
    assert backoff.retry_after(keys_for("bob", "10.0.0.2")) == 0


def test_the_hold_back_ends_and_failures_decay() -> None:
    clock = Clock()
    backoff = Backoff(BackoffPolicy(free_failures=2, base_delay=1, max_delay=60, decay=10), clock)
    keys = keys_for("alice", "")
    for _ in range(6):
        backoff.failed(keys)
    assert 0 < backoff.retry_after(keys) <= 60
    clock.now += 61
    assert backoff.retry_after(keys) == 0  # never locked out for longer than max_delay
    clock.now += 10 * 6  # long quiet: every failure forgiven
    assert backoff.retry_after(keys) == 0 and len(backoff) == 0
    assert [backoff.failed(keys) for _ in range(3)] == [0, 0, 1]


def test_success_forgets_the_user_and_memory_is_bounded() -> None:
    clock = Clock()
    backoff = Backoff(BackoffPolicy(free_failures=1, max_keys=100), clock)
    for _ in range(3):
        backoff.failed(["user:alice"])
    backoff.succeeded(["user:alice"])
    assert backoff.retry_after(["user:alice"]) == 0
    for i in range(1000):
        backoff.failed([f"user:guess{i}"])
    assert len(backoff) == 100


def test_keys_and_header() -> None:
    assert keys_for("x" * 1000, "::1") == ["user:" + "x" * 256, "addr:::1"]
    assert retry_header(0.2) == "1" and retry_header(7.01) == "8"
