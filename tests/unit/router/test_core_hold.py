"""Both relay paths hold a message its leased quota has nothing for: the native core
(router/_core/core.c, hold, with its own clock) and the Python relay (router.relay's
_GatedSide), the same behaviour tests on real sockets.

A leased pool with neither permit nor credit, and no word that the window is exhausted (dry):
the side is not read any further, nothing is dropped nor reordered, a lease is asked for; a put
lets the held messages through in order, a dry answer refuses them; a held connection still
closes on the router's terminate, waiting costs no CPU, and what waited HOLD_MAX is decided
without holding. The core's pool is driven with lease_put / lease_dry; the Python relay's quota
is :class:`Pool`, the same pool in Python (what router.lease.LeasedCounter offers the relay:
available/take, waits, next_bounds, wait/wake).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from router.native import EV_CLOSED, EV_LEASE, EV_THROTTLED
from router.relay import HOLD_MAX, Relay, RelayInfo
from router.throttle import ConnectionThrottle, InProcessCounterStore, Limit
from tests.procs import import_or_unavailable

KEY = "api:hold"
T = TypeVar("T")


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


def until(check: Callable[[], bool], wait: float = 1.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


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

    def dry(self, until: float) -> None:
        self.core.lease_dry(self.handle, until)

    def reading_client(self) -> bool:
        return bool(self.core.flow(self.ident)[2])

    def asked(self) -> bool:
        return events(self.core, EV_LEASE) == [(EV_LEASE, self.handle)]

    def refused(self) -> int:
        return int(self.core.lease_state(self.handle)[4])

    def waits(self) -> int:
        return int(self.core.lease_state(self.handle)[7])

    def throttled(self) -> int:
        return int(self.core.counts(self.ident)[6])

    def reported_throttling(self) -> bool:
        return events(self.core, EV_THROTTLED)[0][2] == 0  # the "throttling ..." report, quota 0

    def held(self) -> int:
        return int(self.core.stats()["held"])

    def terminate(self, code: int, reason: str) -> bool:
        return bool(self.core.terminate(self.ident, code, reason.encode(), b""))

    def finished(self) -> bool:
        closed = events(self.core, EV_CLOSED)
        return bool(closed) and closed[0][1] == self.ident

    def close(self) -> None:
        self.client.close()
        self.backend.close()


class Pool:
    """The core's leased pool (router/_core/quota.c) in Python, as the Python relay's quota:
    permits usable in [start, until), a dry mark; no credit. A message without a permit waits
    unless dry; a put or a dry change wakes the waiting (the core's generation)."""

    limit, window = 1000, 10.0

    def __init__(self) -> None:
        self.slots: list[list[float]] = []  # [permits, start, until]
        self.dry_until = -math.inf
        self.holds = 0
        self.asked = 0
        self._waiting: dict[Callable[[], None], None] = {}

    def available(self, now: float) -> bool:
        if any(n > 0 and s <= now < u for n, s, u in self.slots):
            return True
        self.asked += 1  # (LeasedCounter asks for a lease here)
        return False

    def take(self, now: float) -> None:
        for slot in self.slots:
            if slot[0] > 0 and slot[1] <= now < slot[2]:
                slot[0] -= 1
                return

    def idle(self, now: float) -> bool:
        return False

    def waits(self, now: float) -> bool:
        if now < self.dry_until:
            return False
        self.holds += 1
        return True

    def next_bounds(self) -> tuple[float, float] | None:
        now = time.monotonic()
        later = [(s, u) for n, s, u in self.slots if n > 0 and s > now]
        return min(later) if later else None

    def wait(self, wake: Callable[[], None]) -> None:
        self._waiting[wake] = None

    def unwait(self, wake: Callable[[], None]) -> None:
        self._waiting.pop(wake, None)

    def wake(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for wake in waiting:
            wake()


class PyConn:
    """The same connection on the Python relay (router.relay.Relay), its loop on a thread."""

    def __init__(self, *, stop: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pool = Pool()
        self.done = threading.Event()
        self.client, client_end = socket.socketpair()
        self.backend, backend_end = socket.socketpair()
        future = asyncio.run_coroutine_threadsafe(
            self._start(client_end, backend_end, stop), self.loop
        )
        self.relay = future.result(5)

    async def _start(
        self, client_end: socket.socket, backend_end: socket.socket, stop: bool
    ) -> Relay:
        loop = asyncio.get_running_loop()
        client, _ = await loop.connect_accepted_socket(asyncio.Protocol, client_end)
        backend, _ = await loop.connect_accepted_socket(asyncio.Protocol, backend_end)
        for transport in (client, backend):
            transport.pause_reading()  # as the handshake leaves them
        limit = Limit(KEY, "hold", self.pool, stop)
        relay = Relay(
            client, backend, RelayInfo("req", KEY, "/", "127.0.0.1"), max_message=1 << 20,
            allow_rsv=False, on_done=lambda _: self.done.set(),
            throttle=ConnectionThrottle((limit,), InProcessCounterStore()),
        )  # fmt: skip
        relay.start(b"", b"", False)
        return relay

    def call(self, fn: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(5)

    def put(self, n: int, start: float = 0.0) -> None:
        def put() -> None:
            self.pool.slots.append([n, start, time.monotonic() + 60])
            self.pool.wake()

        self.call(put)

    def dry(self, until: float) -> None:
        def dry() -> None:
            self.pool.dry_until = until
            self.pool.wake()

        self.call(dry)

    def reading_client(self) -> bool:
        return self.call(lambda: self.relay.flow().reading_client)

    def asked(self) -> bool:
        return self.call(lambda: self.pool.asked > 0)

    def refused(self) -> int:
        return self.call(lambda: self.relay.throttled)

    def waits(self) -> int:
        return self.call(lambda: self.pool.holds)

    def throttled(self) -> int:
        return self.call(lambda: self.relay.throttled)

    def reported_throttling(self) -> bool:
        return True  # (a log line on this path)

    def held(self) -> int:
        relay = self.relay
        return self.call(lambda: sum(s.held is not None for s in (relay.client, relay.backend)))

    def terminate(self, code: int, reason: str) -> bool:
        return self.call(lambda: self.relay.terminate(code, reason))

    def finished(self) -> bool:
        return self.done.wait(2.0)

    def close(self) -> None:
        self.client.close()
        self.backend.close()
        self.call(self.relay.drop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(params=["native", "python"])
def conn(request: pytest.FixtureRequest) -> Iterator[Conn | PyConn]:
    c: Conn | PyConn
    c = Conn(request.getfixturevalue("core")) if request.param == "native" else PyConn()
    yield c
    c.close()


def test_a_held_message_waits_unread_and_passes_in_order_once_permits_come(
    conn: Conn | PyConn,
) -> None:
    ping = frame(0x9, b"p", masked=True)
    messages = [text(b"m%d" % k) for k in range(3)]
    conn.client.sendall(ping + b"".join(messages) + ping)
    assert read(conn.backend, len(ping)) == ping  # what precedes the held message goes on
    assert nothing(conn.backend)  # the messages (and the ping behind them) wait
    assert not conn.reading_client()  # the side is not read meanwhile
    assert conn.asked()  # a lease is asked for
    assert conn.refused() == 0 and conn.waits() >= 1  # held, not refused
    conn.put(10)
    rest = b"".join(messages) + ping
    assert read(conn.backend, len(rest)) == rest  # unchanged, in order, nothing dropped
    assert conn.throttled() == 0  # none throttled
    assert conn.reading_client()
    more = text(b"more")
    conn.client.sendall(more)
    assert read(conn.backend, len(more)) == more
    assert conn.held() == 0


def test_both_directions_hold_on_the_same_pool(conn: Conn | PyConn) -> None:
    down, up = text(b"down", masked=False), text(b"up")
    conn.backend.sendall(down)
    conn.client.sendall(up)
    assert nothing(conn.client) and nothing(conn.backend)
    assert conn.held() == 2
    conn.put(2)
    assert read(conn.client, len(down)) == down
    assert read(conn.backend, len(up)) == up


def test_a_dry_window_refuses_what_was_held_and_keeps_the_connection(conn: Conn | PyConn) -> None:
    conn.client.sendall(text(b"a") + text(b"b") + frame(0x9, b"p", masked=True))
    assert nothing(conn.backend)
    conn.dry(time.monotonic() + 60)  # Redis: no room in this window
    ping = read(conn.backend, 7)
    assert ping[0] == 0x89  # both messages cut out, the ping passes
    assert conn.refused() == 2
    assert conn.reported_throttling()
    assert conn.reading_client()
    conn.dry(float("-inf"))  # a new window: held again, not refused
    conn.client.sendall(text(b"c"))
    assert nothing(conn.backend)
    assert conn.refused() == 2


def test_a_slot_becoming_usable_releases_the_held_message_by_itself(
    conn: Conn | PyConn,
) -> None:
    conn.put(5, start=time.monotonic() + 0.3)  # the next sub-window's lease, not usable yet
    sent = time.monotonic()
    conn.client.sendall(text(b"x"))
    assert nothing(conn.backend, 0.1)
    got = read(conn.backend, 7)
    assert got[0] == 0x81 and time.monotonic() - sent >= 0.29  # at the slot's start


def test_a_held_connection_still_closes_when_the_router_terminates_it(
    conn: Conn | PyConn,
) -> None:
    conn.client.sendall(text(b"held"))
    assert nothing(conn.backend)
    assert conn.terminate(4001, "rule")
    close = read(conn.client, 8)
    assert close[:2] == b"\x88\x06" and close[2:4] == (4001).to_bytes(2, "big")
    assert read(conn.backend, 1) in (b"", b"\x88")  # told the client went away, or closed
    conn.client.close()
    conn.backend.close()
    assert conn.finished()
    assert conn.held() == 0


def test_waiting_costs_no_cpu(conn: Conn | PyConn) -> None:
    """No spin on a readable socket the core does not read (epoll level-triggered)."""
    conn.client.sendall(text(b"held") + text(b"x" * 100) * 50)
    assert nothing(conn.backend)
    cpu = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu < 0.1
    assert conn.held() == 1


def test_what_waited_hold_max_is_refused_then_new_input_is_held_again(
    conn: Conn | PyConn,
) -> None:
    """Traffic over a quota is throttled, not queued: after HOLD_MAX without a permit, what
    the side had read is decided without holding (refused), and reading resumes."""
    sent = time.monotonic()
    conn.client.sendall(text(b"a") + text(b"b") + frame(0x9, b"p", masked=True))
    ping = read(conn.backend, 7, timeout=HOLD_MAX + 2)
    waited = time.monotonic() - sent
    assert ping[0] == 0x89 and HOLD_MAX - 0.05 <= waited < HOLD_MAX + 1
    assert conn.refused() == 2  # both refused
    assert conn.reading_client() and conn.held() == 0
    conn.client.sendall(text(b"c"))  # new input: held again, for HOLD_MAX again
    assert nothing(conn.backend, 0.3)
    conn.put(1)
    assert read(conn.backend, 7)[0] == 0x81
