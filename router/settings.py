"""Router settings: ``WSGATE_*`` environment variables, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from wsgate_common.resources import DEFAULT_LABEL
from wsgate_common.settings import CommonSettings


class RouterSettings(CommonSettings):
    router_host: str = "0.0.0.0"
    router_port: int = 9090
    router_tls_port: int = 9095
    label: str = DEFAULT_LABEL
    xds_address: str = "localhost:18000"
    enforcer_address: str = "localhost:8081"
    enforcer_http_url: str = "http://localhost:8082"
    # Limits and timeouts of the data plane.
    router_max_message: int = 1024 * 1024
    # permessage-deflate between client and backend: "passthrough" forwards the client's offer
    # (the size limit then sees compressed frames); "strip" removes it, so the limit holds on
    # what the backend receives. An API's route may say otherwise (Route.compression).
    router_compression: Literal["passthrough", "strip"] = "passthrough"
    router_handshake_timeout: float = 10.0
    router_backend_connect_timeout: float = 10.0
    router_enforcer_timeout: float = 2.0
    # Global per-message throttling: counters leased from Redis (router/redis_store.py) when
    # a URL is set (redis://[:password@]host:6379/0), else per router process.
    ratelimit_redis_url: str = ""
    ratelimit_redis_failure_mode: Literal["fail-open", "fail-closed"] = "fail-open"
    # Fail-open admits limit / this many per router while Redis is down; also sizes leases.
    ratelimit_expected_routers: int = Field(default=1, ge=1)
    ratelimit_redis_prefix: str = "wsgate:rl:"
    ratelimit_redis_sub_windows: int = Field(default=100, ge=1, le=1000)
    ratelimit_redis_max_lease: int = Field(default=1000, ge=1)
    ratelimit_redis_timeout: float = Field(default=0.5, gt=0)
    # No byte either way for this long -> close 1001 "idle timeout" (pings count); 0 disables.
    router_idle_timeout: float = 300.0
    # On SIGTERM: stop accepting, close every relay with 1001, then wait this long for the
    # closing handshakes before cutting what is left and exiting 0.
    router_drain_seconds: float = Field(default=5.0, ge=0)
    # Relayed + upgrading connections; one more gets 503 at the handshake. 0 disables.
    router_max_connections: int = 10_000
    # Analytics: JSON lines on the `wsgate.analytics` logger, or appended to this file (a
    # relative path is under the data dir) when set; flushed every interval, queue bounded.
    router_analytics_file: Path | None = None
    router_analytics_interval: float = 1.0
    router_analytics_queue: int = 10_000
    # Allowed handshake decisions are reused for this many seconds at most (never past the
    # token's expiry; emptied by rules and data changes, bypassed while the rules stream is
    # down: router/decisions.py); 0 disables. At most this many are held.
    router_decision_cache_ttl: float = Field(default=30.0, ge=0)
    router_decision_cache_size: int = Field(default=10_000, ge=0)
    # WSGATE_RELAY: who relays established plaintext connections. "native": the compiled core
    # (router._core; the router refuses to start without it), "python": router/relay.py (the
    # reference implementation), "auto": native when built. wss connections always use python.
    relay: Literal["native", "python", "auto"] = "auto"
    # WSGATE_ROUTER_RELAY_SCHED: the native relay thread's scheduling policy. "batch"
    # (SCHED_BATCH: woken by socket events it does not preempt the running task, so it handles
    # more events per wakeup and costs less CPU per message, but a lone connection's round trip
    # may wait while the CPU is busy; router/_core/core.c start_thread), "normal", or "auto":
    # batch while at least 4 connections were active in the last 10 ms, normal otherwise.
    router_relay_sched: Literal["auto", "batch", "normal"] = "auto"
    # WSGATE_ROUTER_NATIVE_HANDSHAKE: on the native relay path the core also accepts plaintext
    # connections and does the upgrade I/O (request head, backend upgrade, 101) of handshakes
    # whose allow is cached; Python still decides each one (router/server.py CoreHandshakes).
    router_native_handshake: bool = True
    # WSGATE_ROUTER_NATIVE_FAST_START: with native handshakes, the core also checks a backend's
    # plain 101 (no extension, no subprotocol) and starts the relay without waiting for Python;
    # any other answer is still judged by Python. false: Python judges every answer.
    router_native_fast_start: bool = True
    # WSGATE_ROUTER_NATIVE_PLANS: with the fast start, a handshake Python decided (and that
    # the core started) leaves the core a plan for that exact request head (but its
    # Sec-WebSocket-Key) from that client address: the same request again is connected,
    # answered and relayed by the core alone, Python only hears the outcome. Plans end with the
    # decision cache entry they come from (rules, versions, TTL, the rules stream down).
    router_native_plans: bool = True

    @property
    def analytics_path(self) -> Path | None:
        path = self.router_analytics_file
        if path is None or not str(path):
            return None
        return path if path.is_absolute() else self.data_dir / path
