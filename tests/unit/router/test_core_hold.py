"""The relay core holds a message its leased pool has nothing for (router/_core/core.c, hold):
on real sockets, with the core's own clock.

A leased counter with neither permit nor credit, and no word from Python that the window is
exhausted (lease_dry): the side is not read any further, nothing is dropped nor reordered,
Python is told (EV_LEASE); a put lets the held messages through in order, a dry answer refuses
them; a held connection still closes on the router's terminate, and waiting costs no CPU.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from router.native import EV_CLOSED, EV_LEASE, EV_THROTTLED
from tests.procs import import_or_unavailable

KEY = "api:hold"


@pytest.fixture(scope="module")
def core_module() -> Any:
    return import_or_unavailable("router._core")


@pytest.fixture
def core(core_module: Any) -> Iterator[Any]:
    core = core_module.Core()
    yield core
    core.close()


def frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    head = bytes([0x80 | opcode, (0x80 if masked else 0) | len(payload)])
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(payload: bytes, *, masked: bool = True) -> bytes:
    return frame(0x1, payload, masked=masked)


def read(sock: socket.socket, n: int, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def nothing(sock: socket.socket, wait: float = 0.15) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""  # (EOF would be something too)
    except TimeoutError:
        return True


def events(core: Any, kind: int, wait: float = 1.0) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = [e for e in core.events() if e[0] == kind]
        if got:
            return got
        time.sleep(0.01)
    return []


class Conn:
    """A connection relayed by the core whose quota is one leased counter (no permit yet)."""

    def __init__(self, core: Any, *, stop: bool = False) -> None:
        now = time.monotonic()
        self.core = core
        self.handle = core.acquire(KEY, 1000, 10.0, now, True)
        self.client, client_end = socket.socketpair()
        self.backend, backend_end = socket.socketpair()
        self.ident = core.add(
            client_end.detach(), backend_end.detach(), b"", b"", b"", 1 << 20, False,
            ((self.handle, stop),),
        )  # fmt: skip

    def put(self, n: int, start: float = 0.0) -> None:
        self.core.lease_put(self.handle, 0 if not start else 1, n, start, time.monotonic() + 60, 0)

    def reading_client(self) -> bool:
        return bool(self.core.flow(self.ident)[2])

    def close(self) -> None:
        self.client.close()
        self.backend.close()


@pytest.fixture
def conn(core: Any) -> Iterator[Conn]:
    c = Conn(core)
    yield c
    c.close()


def test_a_held_message_waits_unread_and_passes_in_order_once_permits_come(
    core: Any, conn: Conn
) -> None:
    ping = frame(0x9, b"p", masked=True)
    messages = [text(b"m%d" % k) for k in range(3)]
    conn.client.sendall(ping + b"".join(messages) + ping)
    assert read(conn.backend, len(ping)) == ping  # what precedes the held message goes on
    assert nothing(conn.backend)  # the messages (and the ping behind them) wait
    assert not conn.reading_client()  # the side is not read meanwhile
    assert events(core, EV_LEASE) == [(EV_LEASE, conn.handle)]  # Python is asked for permits
    state = core.lease_state(conn.handle)
    assert state[4] == 0 and state[7] >= 1  # held, not refused
    conn.put(10)
    rest = b"".join(messages) + ping
    assert read(conn.backend, len(rest)) == rest  # unchanged, in order, nothing dropped
    assert core.counts(conn.ident)[6] == 0  # none throttled
    assert conn.reading_client()
    more = text(b"more")
    conn.client.sendall(more)
    assert read(conn.backend, len(more)) == more
    assert core.stats()["held"] == 0


def test_both_directions_hold_on_the_same_pool(core: Any, conn: Conn) -> None:
    down, up = text(b"down", masked=False), text(b"up")
    conn.backend.sendall(down)
    conn.client.sendall(up)
    assert nothing(conn.client) and nothing(conn.backend)
    assert core.stats()["held"] == 2
    conn.put(2)
    assert read(conn.client, len(down)) == down
    assert read(conn.backend, len(up)) == up


def test_a_dry_window_refuses_what_was_held_and_keeps_the_connection(core: Any, conn: Conn) -> None:
    conn.client.sendall(text(b"a") + text(b"b") + frame(0x9, b"p", masked=True))
    assert nothing(conn.backend)
    core.lease_dry(conn.handle, time.monotonic() + 60)  # Redis: no room in this window
    ping = read(conn.backend, 7)
    assert ping[0] == 0x89  # both messages cut out, the ping passes
    assert core.lease_state(conn.handle)[4] == 2  # refused
    assert events(core, EV_THROTTLED)[0][2] == 0  # the "throttling ..." report, quota 0
    assert conn.reading_client()
    core.lease_dry(conn.handle, float("-inf"))  # a new window: held again, not refused
    conn.client.sendall(text(b"c"))
    assert nothing(conn.backend)
    assert core.lease_state(conn.handle)[4] == 2


def test_a_slot_becoming_usable_releases_the_held_message_without_python(
    core: Any, conn: Conn
) -> None:
    conn.put(5, start=time.monotonic() + 0.3)  # the next sub-window's lease, not usable yet
    sent = time.monotonic()
    conn.client.sendall(text(b"x"))
    assert nothing(conn.backend, 0.1)
    got = read(conn.backend, 7)
    assert got[0] == 0x81 and time.monotonic() - sent >= 0.29  # at the slot's start


def test_a_held_connection_still_closes_when_the_router_terminates_it(
    core: Any, conn: Conn
) -> None:
    conn.client.sendall(text(b"held"))
    assert nothing(conn.backend)
    assert core.terminate(conn.ident, 4001, b"rule", b"")
    close = read(conn.client, 8)
    assert close[:2] == b"\x88\x06" and close[2:4] == (4001).to_bytes(2, "big")
    assert read(conn.backend, 1) in (b"", b"\x88")  # told the client went away, or closed
    conn.client.close()
    conn.backend.close()
    closed = events(core, EV_CLOSED)
    assert closed and closed[0][1] == conn.ident
    assert core.stats()["held"] == 0


def test_waiting_costs_no_cpu(core: Any, conn: Conn) -> None:
    """No spin on a readable socket the core does not read (epoll level-triggered)."""
    conn.client.sendall(text(b"held") + text(b"x" * 100) * 50)
    assert nothing(conn.backend)
    cpu = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu < 0.1
    assert core.stats()["held"] == 1


def test_what_waited_hold_max_is_refused_then_new_input_is_held_again(
    core_module: Any, core: Any, conn: Conn
) -> None:
    """Traffic over a quota is throttled, not queued: after HOLD_MAX without a permit, what
    the side had read is decided without holding (refused), and reading resumes."""
    sent = time.monotonic()
    conn.client.sendall(text(b"a") + text(b"b") + frame(0x9, b"p", masked=True))
    ping = read(conn.backend, 7, timeout=core_module.HOLD_MAX + 2)
    waited = time.monotonic() - sent
    assert ping[0] == 0x89 and core_module.HOLD_MAX - 0.05 <= waited < core_module.HOLD_MAX + 1
    assert core.lease_state(conn.handle)[4] == 2  # both refused
    assert conn.reading_client() and core.stats()["held"] == 0
    conn.client.sendall(text(b"c"))  # new input: held again, for HOLD_MAX again
    assert nothing(conn.backend, 0.3)
    conn.put(1)
    assert read(conn.backend, 7)[0] == 0x81
