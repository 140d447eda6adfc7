"""A :class:`router.throttle.CounterStore` shared by every router through Redis.

Selected by ``WSGATE_RATELIMIT_REDIS_URL``. Each router decides per message from permits it
leased in advance (:class:`router.lease.LeasedCounter`, pure); this module is the thin shell
around it: the Lua script that grants leases atomically, the requests sent as asyncio tasks
(never awaited by the relay), and Redis' health: when a call fails the store goes *down*
(one log line, ``transitions`` + 1), counters follow ``WSGATE_RATELIMIT_REDIS_FAILURE_MODE``
(fail-open with a local cap of ``limit // WSGATE_RATELIMIT_EXPECTED_ROUTERS``, or fail-closed),
and a reconnect loop pings Redis with capped exponential backoff until it answers (one log line
again); nothing needs a restart.

On the native relay path the compiled core admits the messages, from permits these counters
lend it (router.native.LeasePump, run on every lease reply through ``on_reply``, on the core's
low-pool reports and on a ticker); the decisions and this store's count stay as they are.

Redis layout: one hash per quota key and window geometry,
``<prefix>{<quota key>}:<window ms>:<sub-windows>`` (the braces keep a key on one cluster
slot), field = sub-window index on Redis' clock, value = permits reserved in it. The script
reads Redis' ``TIME``, so the routers need no synchronised clocks; old fields are deleted as
the window moves on and the hash expires a window after its last use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from router.lease import (
    Clock,
    Health,
    LeasedCounter,
    LeaseReply,
    LeaseRequest,
    Stats,
    sub_windows,
)
from router.throttle import CounterTable
from wsgate_common.metrics import Callbacks

log = logging.getLogger(__name__)

FAIL_OPEN = "fail-open"
FAIL_CLOSED = "fail-closed"
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0

# KEYS[1]: the quota's hash. ARGV: limit, sub-window length (us), sub-windows S, target
# sub-window, permits wanted, routers, then pairs (sub-window, delta): unused permits given
# back (< 0, never below what the sub-window holds) and messages admitted on credit (> 0,
# charged even beyond the limit; sub-window -1 = the current one). Only sub-windows c-S .. c+1
# are touched (c = now). The grant goes into max(c, min(target, c+1)) and is capped like
# router.lease.grant_size.
# Returns {grant, target, c, remaining after the grant, Redis time in microseconds}.
LEASE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local sub = tonumber(ARGV[2])
local s = tonumber(ARGV[3])
local c = math.floor(now / sub)
local target = tonumber(ARGV[4])
if target < c then target = c elseif target > c + 1 then target = c + 1 end
local oldest = c - s
for i = 7, #ARGV, 2 do
  local b = tonumber(ARGV[i])
  local d = tonumber(ARGV[i + 1])
  if b == -1 then b = c end
  if b >= oldest and b <= c + 1 and d ~= 0 then
    local field = string.format('%d', b)
    if d < 0 then
      local have = tonumber(redis.call('HGET', KEYS[1], field) or '0')
      if -d > have then d = -have end
    end
    if d ~= 0 then redis.call('HINCRBY', KEYS[1], field, d) end
  end
end
local used = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local b = tonumber(all[i])
  if b < oldest then
    redis.call('HDEL', KEYS[1], all[i])
  elseif b >= target - s then
    used = used + tonumber(all[i + 1])
  end
end
local remaining = limit - used
local grant = 0
local want = tonumber(ARGV[5])
if remaining > 0 and want > 0 then
  local share = math.floor(remaining / (2 * tonumber(ARGV[6])))
  if share < 1 then share = 1 end
  grant = math.min(want, remaining, share)
  redis.call('HINCRBY', KEYS[1], string.format('%d', target), grant)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(sub * (s + 2) / 1000) + 1000)
return {grant, target, c, remaining - grant, now}
"""


@dataclass(frozen=True, slots=True)
class RedisStoreConfig:
    url: str
    prefix: str = "wsgate:rl:"
    failure_mode: str = FAIL_OPEN
    expected_routers: int = 1
    sub_windows: int = 100
    max_lease: int = 1000
    timeout: float = 0.5


class RedisCounterStore(CounterTable[LeasedCounter]):
    """Leased counters keyed by quota key, kept like the in-process store's (see there)."""

    def __init__(self, config: RedisStoreConfig, client: Any = None) -> None:
        if config.failure_mode not in (FAIL_OPEN, FAIL_CLOSED):
            raise ValueError(f"failure mode must be {FAIL_OPEN} or {FAIL_CLOSED}")
        self.config = config
        self.clock = Clock()
        self.health = Health(up=True, fail_open=config.failure_mode == FAIL_OPEN)
        self.transitions = 0  # times Redis became unreachable (a metric's counter)
        self.errors = 0  # failed calls
        self.commands = 0  # calls sent to Redis (lease scripts and pings)
        self._client = client if client is not None else _client(config)
        self._script = self._client.register_script(LEASE_SCRIPT)
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()
        # Called after each lease reply or failure (router.native.NativeHub: the core's pool
        # for that key is topped up from it at once).
        self.on_reply: Callable[[LeasedCounter], None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    # --- CounterStore --------------------------------------------------------------------

    def __bool__(self) -> bool:  # a store with no counter yet is still a store
        return True

    @property
    def stats(self) -> Stats:
        return self.health.stats

    @property
    def up(self) -> bool:
        return self.health.up

    def _make(self, key: str, limit: int, window: float) -> LeasedCounter:
        subs = sub_windows(window, self.config.sub_windows)
        return LeasedCounter(
            limit,
            window,
            subs=subs,
            routers=self.config.expected_routers,
            max_lease=self.config.max_lease,
            clock=self.clock,
            health=self.health,
            kick=self._kick,
            key=f"{self.config.prefix}{{{key}}}:{round(window * 1000)}:{subs}",
        )

    # --- requests ------------------------------------------------------------------------

    def _kick(self, counter: LeasedCounter) -> None:
        """A counter wants a request: send it from a task, the caller never waits."""
        if self._closed:
            counter.in_flight = False
            return
        task = asyncio.get_running_loop().create_task(self._lease(counter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lease(self, counter: LeasedCounter) -> None:
        req = counter.request(time.monotonic())
        try:
            reply = await self.call_script(counter, req)
        except Exception as exc:  # any failure: Redis is not usable right now
            counter.failed(req)
            self._failed(exc)
        else:
            counter.granted(req, reply, time.monotonic())
        if self.on_reply is not None:
            self.on_reply(counter)
        counter.wake()  # the Python relay's held messages (router.relay)

    async def call_script(self, counter: LeasedCounter, req: LeaseRequest) -> LeaseReply:
        sub_us = round(counter.sub_len * 1_000_000)
        args: list[int] = [
            counter.limit,
            sub_us,
            counter.subs,
            req.target,
            req.want,
            counter.routers,
        ]
        for sub, delta in req.adjust:
            args += [sub, delta]
        self.commands += 1
        raw = await self._script(keys=[counter.key], args=args)
        grant, target, current, remaining, now_us = (int(x) for x in raw)
        return LeaseReply(grant, target, current, remaining, now_us / 1_000_000)

    # --- health --------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.health.up or self._closed:
            return
        self.health.up = False
        self.transitions += 1
        log.warning(
            "rate-limit Redis %s unreachable (%s): %s until it is back",
            _safe_url(self.config.url),
            exc.__class__.__name__,
            f"admitting up to limit/{self.config.expected_routers} per router"
            if self.health.fail_open
            else "refusing throttled messages (fail-closed)",
        )
        self._reconnect = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        delay = BACKOFF_START
        down_since = time.monotonic()
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                self.commands += 1
                await self._client.ping()
            except Exception:
                self.errors += 1
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            self.health.up = True
            log.warning(
                "rate-limit Redis %s reachable again after %.1fs: global limits resume",
                _safe_url(self.config.url),
                time.monotonic() - down_since,
            )
            return

    async def check(self) -> bool:
        """Ping Redis once at start (logs the outcome; a failure starts the recovery loop)."""
        try:
            self.commands += 1
            await self._client.ping()
        except Exception as exc:
            self._failed(exc)
            return False
        log.info("rate-limit counters in Redis %s", _safe_url(self.config.url))
        return True

    def register_metrics(
        self, registry: CollectorRegistry, native_holds: Callable[[], int] | None = None
    ) -> None:
        """Export the store's state in ``registry`` (read at scrape time); ``native_holds``:
        the relay core's count of held messages (it holds by the same rule as lease.py)."""
        callbacks = Callbacks(registry)
        callbacks.gauge(
            "wsgate_router_ratelimit_redis_up",
            "1 while the rate-limit Redis answers, 0 while the failure mode applies",
            lambda: 1.0 if self.health.up else 0.0,
        )
        callbacks.counter(
            "wsgate_router_ratelimit_redis_unavailable",
            "Times the rate-limit Redis became unreachable (fail-open/closed took over)",
            lambda: float(self.transitions),
        )
        callbacks.counter(
            "wsgate_router_ratelimit_redis_errors",
            "Failed calls to the rate-limit Redis",
            lambda: float(self.errors),
        )
        callbacks.counter(
            "wsgate_router_ratelimit_redis_commands",
            "Calls sent to the rate-limit Redis (lease scripts and pings)",
            lambda: float(self.commands),
        )
        stats = self.health.stats
        callbacks.counter(
            "wsgate_router_ratelimit_degraded_messages",
            "Messages decided without Redis while it was down, by decision",
            lambda: {
                ("admitted",): float(stats.degraded_admits),
                ("refused",): float(stats.degraded_refusals),
            },
            labels=("decision",),
        )
        callbacks.counter(
            "wsgate_router_ratelimit_held_messages",
            "Times a message waited for a lease (its side not read): the leased permits did not "
            "cover it yet and Redis had not said the window was exhausted; it passes when the "
            "lease arrives, or is decided after 1 s. By relay path",
            lambda: {
                ("python",): float(stats.holds),
                ("native",): float(native_holds() if native_holds is not None else 0),
            },
            labels=("path",),
        )
        callbacks.counter(
            "wsgate_router_ratelimit_credit_messages",
            "Messages admitted before their lease arrived, charged to Redis afterwards",
            lambda: float(stats.credit),
        )

    async def close(self) -> None:
        self._closed = True
        tasks: Iterable[asyncio.Task[None]] = [*self._tasks]
        if self._reconnect is not None:
            tasks = [*tasks, self._reconnect]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._client.aclose()


def _client(config: RedisStoreConfig) -> Any:
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(
        config.url,
        socket_timeout=config.timeout,
        socket_connect_timeout=config.timeout,
        retry=Retry(NoBackoff(), 0),  # fail fast: the recovery loop does the retrying
        health_check_interval=0,
    )


def _safe_url(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"


def build_store(
    url: str,
    *,
    prefix: str = "wsgate:rl:",
    failure_mode: str = FAIL_OPEN,
    expected_routers: int = 1,
    sub_windows: int = 100,
    max_lease: int = 1000,
    timeout: float = 0.5,
) -> RedisCounterStore:
    return RedisCounterStore(
        RedisStoreConfig(
            url=url,
            prefix=prefix,
            failure_mode=failure_mode,
            expected_routers=max(1, expected_routers),
            sub_windows=max(1, sub_windows),
            max_lease=max(1, max_lease),
            timeout=timeout,
        )
    )


__all__ = ["FAIL_CLOSED", "FAIL_OPEN", "LEASE_SCRIPT", "RedisCounterStore", "build_store"]
