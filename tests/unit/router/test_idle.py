"""The idle sweep's arithmetic (pure) and the open-files limit helper."""

from __future__ import annotations

import resource
from dataclasses import dataclass

import pytest

from router.idle import idle_connections, sweep_interval
from router.oslimits import raise_nofile_limit


@dataclass(eq=False)
class Conn:
    total_bytes: int = 0
    activity: int = 0
    idle_since: float = 0.0


def test_sweep_interval_is_a_tenth_of_the_timeout_at_least_half_a_second() -> None:
    assert sweep_interval(300) == 30
    assert sweep_interval(2) == 0.5
    assert sweep_interval(0.1) == 0.5


def test_a_connection_is_idle_only_after_timeout_without_a_byte() -> None:
    conn = Conn()
    assert idle_connections([conn], 5.0, 10.0) == []  # started at 0, silent for 5 s
    conn.total_bytes = 6  # a ping arrived
    assert idle_connections([conn], 9.9, 10.0) == []
    assert conn.idle_since == 9.9 and conn.activity == 6
    assert idle_connections([conn], 19.8, 10.0) == []
    assert idle_connections([conn], 20.0, 10.0) == [conn]


def test_only_the_silent_connections_are_returned() -> None:
    busy, quiet = Conn(), Conn()
    for now in (1.0, 2.0, 3.0):
        busy.total_bytes += 10
        found = idle_connections([busy, quiet], now, 2.5)
    assert found == [quiet]


def test_open_files_soft_limit_is_raised_to_the_hard_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if before[1] != resource.RLIM_INFINITY and before[1] > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, before[1]))
        soft, hard = raise_nofile_limit()
        assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY:
            assert soft == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.mark.parametrize("timeout", [0.5, 3.0], ids=["short", "long"])
def test_sweep_interval_never_exceeds_the_timeout(timeout: float) -> None:
    assert sweep_interval(timeout) <= timeout
