"""The listeners: read a request head, answer health/ready/testkey, or run a WebSocket handshake.

A handshake goes: route match -> enforcer Check -> backend upgrade -> 101 to the client -> the
transports are handed to a :class:`router.relay.Relay`. Every failure on the way is answered
with a JSON error and ``Connection: close``; nothing stays half-open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import httpx

from router import backend, credentials, http11, native
from router.analytics import (
    ZERO,
    ConnectionEvent,
    Counts,
    HandshakeEvent,
    Pipeline,
    Sink,
    Tags,
    delta,
)
from router.config import RouteStore
from router.credentials import Extracted
from router.decisions import DecisionCache, decision_key
from router.enforcer_client import EnforcerClient, EnforcerUnavailable
from router.frames import CloseCode
from router.http11 import HeadReader, HttpError, Request
from router.idle import IDLE_REASON, idle_connections, sweep_interval
from router.live import Live, LiveConnections
from router.metrics import RouterMetrics
from router.native import NativeHub, NativeLimit, NativeRelay, NativeThrottle
from router.redis_store import RedisCounterStore
from router.registry import Identity
from router.relay import Relay, RelayInfo
from router.routes import BadPath, Match, host_without_port
from router.throttle import (
    CounterStore,
    InProcessCounterStore,
    connection_throttle,
    counted_quotas,
)
from wsgate_common.logs import info_writer
from wsgate_common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from wsgate_common.request_ids import safe_request_id
from wsgate_proto import enforcer_pb2

log = logging.getLogger(__name__)

MAX_EARLY = 64 * 1024  # bytes a client may send before its handshake is answered
MAX_TESTKEY_BODY = 64 * 1024
NO_MATCH = "No matching resource found for the API request"
# Sec-WebSocket-Protocol goes too, without the entries that carried a credential, and
# Sec-WebSocket-Extensions, without permessage-deflate when compression is stripped.
FORWARDED_TO_BACKEND = ("origin",)
DEFLATE = "permessage-deflate"
COMPRESSION_MODES = ("passthrough", "strip")


def strips_compression(route: str, default: str, quotas: Sequence[enforcer_pb2.Quota] = ()) -> bool:
    """Whether the permessage-deflate offer is kept from the backend: the route's own mode
    (``Route.compression``) when it names one, else the router's setting; and always when a
    quota may drop messages (not ``stop_on_quota_reach``): with compression a message
    depends on the ones before it (context takeover), so cutting one out would break the
    receiver's decompression."""
    if any(q.message_count > 0 and not q.stop_on_quota_reach for q in quotas):
        return True
    return (route if route in COMPRESSION_MODES else default) == "strip"


FORWARDED_TO_TESTKEY = ("authorization", "content-type", "accept", "user-agent")


@dataclass(slots=True)
class RouterConfig:
    """The knobs the listeners need (a subset of RouterSettings, easy to build in tests)."""

    enforcer_http_url: str = "http://localhost:8082"
    max_message: int = 1024 * 1024
    compression: str = "passthrough"  # or "strip" (see strips_compression)
    handshake_timeout: float = 10.0
    backend_connect_timeout: float = 10.0
    idle_timeout: float = 300.0  # no byte either way for this long -> 1001; 0 disables
    max_connections: int = 10_000  # relayed + upgrading; beyond -> 503; 0 disables
    analytics_interval: float = 1.0  # seconds between analytics flushes
    analytics_queue: int = 10_000  # events held between flushes (oldest dropped beyond)
    decision_cache_ttl: float = 30.0  # seconds an allow is reused at most; 0 disables
    decision_cache_size: int = 10_000
    # Relay path of plaintext connections: "native" (the compiled core, router._core),
    # "python" (router.relay, the reference) or "auto" (native when built). wss: always python.
    relay: str = "auto"
    # On the native path, the core also accepts plaintext connections and does the upgrade I/O
    # of handshakes with a cached allow (CoreHandshakes); False: asyncio accepts them all.
    native_handshake: bool = True
    # With native_handshake: the core checks a backend's plain 101 itself and starts the relay
    # (EV_STARTED); False: every backend answer goes to Python (EV_UPSTREAM).
    native_fast_start: bool = True
    # With native_fast_start: the core repeats a handshake Python decided from a plan
    # (CoreHandshakes._make_plan) when the same request comes again; False: never.
    native_plans: bool = True
    # The native relay thread's scheduling policy: "auto" (SCHED_BATCH while many connections
    # are active), "batch" (SCHED_BATCH) or "normal" (router._core.Core's sched).
    relay_sched: str = "auto"


class Handshake(Exception):
    """Ends a handshake early with an HTTP error answer (status, code, message, description)."""

    def __init__(self, status: int, code: int, message: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.message, self.description = status, code, message, description


class Router:
    """State shared by all connections: routes, the enforcer, live relays, quota counters."""

    def __init__(
        self,
        config: RouterConfig,
        routes: RouteStore,
        enforcer: EnforcerClient,
        counters: CounterStore | None = None,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.relay_path = native.choose(config.relay)  # raises when native is missing
        self.config = config
        self.routes = routes
        self.enforcer = enforcer
        # The core's relay thread starts here; the loop watches its reports from start().
        self.native: NativeHub | None = (
            NativeHub(config.relay_sched) if self.relay_path == "native" else None
        )
        # Quota counters: the core's table when it runs (shared by both relay paths), else
        # this process's, or the given store. Redis: the counters lease permits and the core
        # consumes them (router.native.LeasePump); the Python relay (wss) uses them directly.
        self.counters: CounterStore = counters or (
            self.native.store if self.native is not None else InProcessCounterStore()
        )
        if self.native is not None and isinstance(counters, RedisCounterStore):
            self.native.use_leases(counters)
        self.live = LiveConnections()  # registry for rules (WatchConnections) and token expiry
        self.http = httpx.AsyncClient(timeout=5.0)
        self.relays: set[Relay | NativeRelay] = set()
        self.pending: set[Connection] = set()
        self.upgrading = 0  # handshakes past the connection-limit check, not relayed yet
        # called after each `upgrading += 1` (the core's planned handshakes count against the
        # same limit: CoreHandshakes._allow)
        self.on_upgrade: Callable[[], None] | None = None
        self.servers: list[asyncio.Server] = []
        self.finished = ZERO  # counters of the relays that ended (metrics add the live ones)
        self.decisions = DecisionCache(config.decision_cache_ttl, config.decision_cache_size)
        self.metrics = RouterMetrics(
            active=lambda: len(self.relays),
            xds_version=lambda: self.routes.version,
            dropped=lambda: self.analytics.dropped,
            traffic=self.traffic,
            decisions=self.decisions,
            relay=self._relay_counts,
            relay_path=self.relay_path,
            core_handshakes=self._core_handshakes if self.native is not None else None,
        )
        self.analytics = Pipeline(
            list(sinks),
            self._collect,
            capacity=config.analytics_queue,
            interval=config.analytics_interval,
        )
        self.idle_closed = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.core_handshakes: CoreHandshakes | None = None

    def start(self) -> None:
        """Start the analytics flusher and the idle sweep (idempotent; listen() calls it)."""
        if self.native is not None:
            self.native.start(asyncio.get_running_loop())
        self.analytics.start()
        if self._sweeper is None and self.config.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def _sweep_idle(self) -> None:
        while True:
            timeout = self.config.idle_timeout
            await asyncio.sleep(sweep_interval(timeout))
            with self.snapshot():
                idle = idle_connections(self.relays, time.monotonic(), timeout)
            for relay in idle:
                if relay.terminate(
                    CloseCode.GOING_AWAY, IDLE_REASON, cause=IDLE_REASON, backend_reason=IDLE_REASON
                ):
                    self.idle_closed += 1
                    log.info(
                        "closing %s api=%s: idle for %.0f s",
                        relay.info.request_id,
                        relay.info.api,
                        timeout,
                        extra={"request_id": relay.info.request_id, "close_code": 1001},
                    )

    def _collect(self, now: float) -> list[ConnectionEvent]:
        """Analytics flush: one event per connection whose counters moved since its last one."""
        events = []
        mono = time.monotonic()
        with self.snapshot():
            for relay in self.relays:
                reported = relay.reported
                if relay.total_bytes == reported.bytes_up + reported.bytes_down:
                    continue  # no byte, so no frame either: nothing moved (the idle majority)
                counts = relay.counts()
                if counts != reported:
                    moved, age = delta(relay.reported, counts), mono - relay.started
                    events.append(ConnectionEvent(tags_of(relay.info), moved, age, now))
                    relay.reported = counts
        return events

    def connections(self) -> int:
        """Relays and upgrades against config.max_connections (with the core's planned
        handshakes the router has not heard of yet)."""
        count = len(self.relays) + self.upgrading
        handshakes = self.core_handshakes
        if handshakes is not None and handshakes.planning:
            count += handshakes.unseen()
        return count

    def traffic(self) -> Counts:
        """Every relay's counters summed, ended and live ones (read by /metrics, not per frame)."""
        fu, fd, mu, md, bu, bd, th = self.finished
        with self.snapshot():
            for relay in self.relays:
                c = relay.counts()
                fu += c.frames_up
                fd += c.frames_down
                mu += c.messages_up
                md += c.messages_down
                bu += c.bytes_up
                bd += c.bytes_down
                th += c.throttled
        return Counts(fu, fd, mu, md, bu, bd, th)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Within: the native relays' counters come from one snapshot of the core (a walk over
        every connection costs one call into the core, not one per connection)."""
        hub = self.native
        if hub is None or not hub.relays:
            yield
            return
        hub.snap = hub.core.snapshot()
        try:
            yield
        finally:
            hub.snap = None

    def native_holds(self) -> int:
        """Times the core held a message for a lease (/metrics)."""
        return int(self.native.core.stats().get("holds", 0)) if self.native is not None else 0

    def _core_handshakes(self) -> dict[tuple[str, ...], float]:
        """Connections the core accepted, by outcome (/metrics)."""
        stats = self.native.core.stats() if self.native is not None else {}
        return {
            ("accepted",): float(stats.get("accepted", 0)),
            ("planned",): float(stats.get("planned", 0)),
            ("relayed",): float(stats.get("fast_started", 0)),
            ("relayed_alone",): float(stats.get("self_started", 0)),
            ("handed_back",): float(stats.get("handed_back", 0)),
        }

    def _relay_counts(self) -> dict[tuple[str, ...], float]:
        """Live connections by relay path (/metrics)."""
        on_core = len(self.native.relays) if self.native is not None else 0
        return {("native",): float(on_core), ("python",): float(len(self.relays) - on_core)}

    def metrics_text(self) -> bytes:
        """``/metrics``: exact at any moment, whatever the analytics queue dropped."""
        return self.metrics.render()

    async def listen(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None) -> int:
        """Start one listener; returns the port actually bound (``port`` may be 0)."""
        loop = asyncio.get_running_loop()
        if ssl_ctx is None and self.native is not None and self.config.native_handshake:
            sock = await _listening_socket(loop, host, port)
            if sock is not None and self.core_handshakes is None:
                self.start()
                self.core_handshakes = CoreHandshakes(self, self.native)
                bound = int(sock.getsockname()[1])
                self.native.core.listen(
                    sock.detach(), http11.MAX_HEAD + 1, self.config.handshake_timeout
                )
                return bound
            if sock is not None:
                sock.close()
        server = await loop.create_server(
            lambda: Connection(self),
            host,
            port,
            ssl=ssl_ctx,
            ssl_handshake_timeout=self.config.handshake_timeout if ssl_ctx else None,
            backlog=1024,
            reuse_address=True,
        )
        self.servers.append(server)
        self.start()
        return int(server.sockets[0].getsockname()[1])

    def apply_rule(self, rule: enforcer_pb2.ConnectionRule) -> int:
        """A WatchConnections rule: forget the cached allows it selects and close the live
        connections it selects. A data version notice empties the cache when it changed, and
        tells live connections which rules came before the decisions taken at it."""
        if rule.data_version:
            self.live.announce(rule.data_version)
            dropped = self.decisions.set_data_version(rule.data_version)
            log.debug(
                "enforcer data version %s: %d cached decisions dropped", rule.data_version, dropped
            )
            return 0
        self.decisions.apply_rule(rule)
        return self.live.apply_rule(rule)

    def rules_stream(self, up: bool) -> None:
        """The rules stream opened or ended: the decision cache is only used while it is up."""
        if up:
            self.decisions.stream_opened()
            return
        was_up = self.decisions.stream_up  # not each failed retry while the enforcer is away
        dropped = self.decisions.stream_lost()
        if was_up and self.decisions.enabled:
            log.info(
                "decision cache off until the rules stream is back (%d dropped; hits %d, "
                "misses %d so far)",
                dropped,
                self.decisions.hits,
                self.decisions.misses,
            )

    def relay_done(self, relay: Relay | NativeRelay, live: Live) -> None:
        self.relays.discard(relay)
        self.live.end(live)
        counts = relay.counts()
        self.finished = Counts(*(a + b for a, b in zip(self.finished, counts, strict=True)))
        self.metrics.connection_closed(
            relay.close_code, relay.close_by, relay.cause, relay.router_reason
        )
        self.analytics.emit(
            ConnectionEvent(
                tags_of(relay.info),
                delta(relay.reported, counts),
                time.monotonic() - relay.started,
                time.time(),
                final=True,
                close_code=relay.close_code,
                closed_by=relay.close_by,
                close_reason=relay.router_reason,
                cause=relay.cause,
            )
        )
        relay.reported = counts

    async def shutdown(self, drain: float = 2.0) -> None:
        """Stop accepting, close relays with 1001, give them ``drain`` seconds, then release."""
        for server in self.servers:
            server.close()
        if self.native is not None and self.core_handshakes is not None:
            self.native.core.unlisten()
        for conn in list(self.pending):
            conn.abort()
        for relay in list(self.relays):
            relay.shutdown()
        deadline = time.monotonic() + drain
        while self.relays and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.05)
        for relay in list(self.relays):
            relay.drop()
        if self.native is not None:
            await asyncio.sleep(0.05)  # the core's last close reports
            self.native.close()
            self.native = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.analytics.stop()
        await self.http.aclose()
        await self.enforcer.close()


def tags_of(info: RelayInfo) -> Tags:
    return Tags(
        info.request_id,
        info.api,
        info.api_id,
        info.topic,
        info.application_id,
        info.key_type,
        info.client_ip,
    )


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def backend_headers(
    request: Request, request_id: str, found: Extracted, strip: bool, client_ip: str
) -> list[tuple[str, str]]:
    """The headers of the backend upgrade request besides the WebSocket ones."""
    extensions = request.headers.get("sec-websocket-extensions", "")
    if strip:
        extensions = http11.without_extension(extensions, DEFLATE)
    headers = [
        ("Sec-WebSocket-Protocol", found.offer),
        ("Sec-WebSocket-Extensions", extensions),
    ]
    headers += [(name, request.headers.get(name, "")) for name in FORWARDED_TO_BACKEND]
    headers += [("X-Forwarded-For", client_ip), ("X-Request-ID", request_id)]
    return headers


HANDSHAKE_LINE = "handshake %s api=%s topic=%s path=%s result=%s status=%d latency=%.1fms cache=%s"


def handshake_done(
    router: Router, tags: Tags, path: str, status: int, reason: str, started: float, cache: str
) -> None:
    """A handshake ended (either path): its log line, metrics and analytics event."""
    latency_ms = (time.monotonic() - started) * 1000
    result = "upgraded" if status == 101 else "rejected"
    args = (tags.request_id, tags.api, tags.topic, path, result, status, latency_ms, cache)
    write = info_writer(log)
    if write is not None:  # the same line without a LogRecord (the text format has no extras)
        write(HANDSHAKE_LINE % args)
    else:
        log.info(
            HANDSHAKE_LINE,
            *args,
            extra={
                "request_id": tags.request_id,
                "api": tags.api,
                "topic": tags.topic,
                "status": status,
                "cache": cache,
            },
        )
    router.metrics.handshake(status == 101, status, latency_ms / 1000)
    router.analytics.emit(
        HandshakeEvent(tags, status == 101, status, reason, latency_ms, time.time())
    )


class Connection(asyncio.Protocol):
    """A client connection until its handshake is answered (then a Relay owns the transport)."""

    def __init__(self, router: Router, initial: bytes = b"") -> None:
        self.initial = initial  # bytes the core read before it gave the socket back
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.reader: HeadReader | None = HeadReader()
        self.request: Request | None = None
        self.early = bytearray()
        self.body_needed = 0
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.client_ip = ""

    # -- transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else ""
        self.router.pending.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.router.config.handshake_timeout, self._timed_out)
        if self.initial:
            data, self.initial = self.initial, b""
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.reader is None:
            self.early += data
            if len(self.early) > MAX_EARLY and self.transport is not None:
                self.transport.pause_reading()
            self._maybe_body_complete()
            return
        try:
            got = self.reader.feed(data)
            if got is None:
                return
            head, rest = got
            self.reader = None
            self.request = http11.parse_request_head(head)
        except HttpError as exc:
            self.reply(http11.http_error_response(exc))
            return
        self.early += rest
        self._dispatch(self.request)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.router.pending.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # -- helpers -----------------------------------------------------------------------------

    def reply(self, data: bytes) -> None:
        """Send a complete answer and close (the router never keeps plain HTTP alive)."""
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.task is None:
            log.info("handshake timeout from %s", self.client_ip)
            self.reply(
                http11.error_response(
                    408, 408, "Request Timeout", "The request head was not received in time."
                )
            )

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        self._cancel_timer()
        self.task = asyncio.get_running_loop().create_task(coro)

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        path = request.path
        if path == "/health":
            self.reply(http11.response(200, b'{"status":"healthy"}'))
        elif path == "/ready":
            if self.router.routes.ready:
                self.reply(http11.response(200, b'{"status":"ready"}'))
            else:
                self.reply(http11.response(503, b'{"status":"not ready"}'))
        elif path == "/metrics" and request.method in ("GET", "HEAD"):
            self.reply(http11.response(200, self.router.metrics_text(), METRICS_CONTENT_TYPE))
        elif path == "/testkey":
            self._start_testkey(request)
        elif http11.is_upgrade(request):
            self._spawn(self._upgrade(request))
        else:
            self.reply(
                http11.error_response(
                    404 if request.method == "GET" else 400,
                    404 if request.method == "GET" else 400,
                    "Not Found" if request.method == "GET" else "Bad Request",
                    "This gateway serves WebSocket APIs: send a WebSocket upgrade request."
                    if request.method == "GET"
                    else "Expected a WebSocket upgrade request.",
                )
            )

    # -- /testkey ----------------------------------------------------------------------------

    def _start_testkey(self, request: Request) -> None:
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            self.reply(http11.error_response(411, 411, "Length Required", "Send Content-Length."))
            return
        try:
            length = int(request.headers.get("content-length", "0") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > MAX_TESTKEY_BODY:
            self.reply(http11.error_response(400, 400, "Bad Request", "Invalid Content-Length."))
            return
        self.body_needed = length
        if length and "100-continue" in request.headers.get("expect", "").lower():
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._maybe_body_complete()

    def _maybe_body_complete(self) -> None:
        request = self.request
        if request is None or request.path != "/testkey" or self.task is not None:
            return
        if len(self.early) >= self.body_needed:
            self._spawn(self._testkey(request, bytes(self.early[: self.body_needed])))

    async def _testkey(self, request: Request, body: bytes) -> None:
        url = self.router.config.enforcer_http_url.rstrip("/") + "/testkey"
        if request.query:
            url += "?" + request.query
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_TO_TESTKEY}
        # the enforcer holds wrong passwords back per client address: tell it whose this is
        # (the client's own X-Forwarded-For is not forwarded, so it cannot pick an address)
        headers["x-forwarded-for"] = self.client_ip
        try:
            answer = await self.router.http.request(
                request.method, url, headers=headers, content=body
            )
        except httpx.HTTPError as exc:
            log.warning(
                "testkey: enforcer unreachable at %s: %s", credentials.redact_target(url), exc
            )
            self.reply(
                http11.error_response(
                    503, 503, "Service Unavailable", "The enforcer could not be reached."
                )
            )
            return
        content_type = answer.headers.get("content-type", "application/octet-stream")
        retry = answer.headers.get("retry-after")
        extra = [("Retry-After", retry)] if retry else []
        self.reply(http11.response(answer.status_code, answer.content, content_type, extra))

    # -- WebSocket upgrade -------------------------------------------------------------------

    async def _upgrade(self, request: Request) -> None:
        started = time.monotonic()
        router = self.router
        request_id = safe_request_id(request.headers.get("x-request-id"))
        api, topic, status, reason = "-", "-", 101, ""
        api_id = application_id = key_type = ""
        cache = "off"
        counted = False
        try:
            try:
                key = http11.validate_upgrade(request)
            except HttpError as exc:
                status, reason = exc.status, exc.description
                self.reply(http11.http_error_response(exc))
                return
            limit = router.config.max_connections
            if limit and router.connections() >= limit:
                raise Handshake(
                    503,
                    503,
                    "Service Unavailable",
                    f"The gateway is at its connection limit ({limit}); try again later.",
                )
            router.upgrading += 1
            counted = True
            if router.on_upgrade is not None:
                router.on_upgrade()
            host = host_without_port(request.headers.get("host", ""))
            match = self._match(host, request.path)
            api, topic = f"{match.route.api_name}:{match.route.api_version}", match.topic.path
            api_id = match.route.api_id
            found = credentials.extract(request.headers, request.query)
            checked_at = time.monotonic()
            verdict, cache = await self._check(request, request_id, host, match, found)
            application_id, key_type = verdict.application_id, verdict.key_type.upper()
            identity = Identity.of(verdict.token_id, application_id, api_id, key_type)
            live = router.live.begin(
                identity, checked_at, verdict.subscription_id, verdict.data_version
            )
            try:
                url, ca_pem = self._endpoint(match, verdict.key_type)
                strip = strips_compression(
                    match.route.compression, router.config.compression, verdict.quotas
                )
                conn = await self._connect_backend(request, request_id, url, ca_pem, found, strip)
                if self.closed or self.transport is None:
                    conn.transport.abort()
                    status, reason = 499, "client closed the connection during the handshake"
                    return
                info = RelayInfo(
                    request_id, api, topic, self.client_ip, api_id, application_id, key_type
                )
                self._start_relay(key, conn, info, live, verdict, found)
            finally:
                if live.relay is None:
                    router.live.end(live)
        except Handshake as exc:
            status, reason = exc.status, exc.description or exc.message
            self.reply(http11.error_response(exc.status, exc.code, exc.message, exc.description))
        except asyncio.CancelledError:
            status, reason = 499, "client closed the connection during the handshake"
            raise
        except Exception:
            status, reason = 500, "unexpected router error"
            log.exception("handshake %s failed", request_id)
            self.reply(
                http11.error_response(500, 500, "Internal Server Error", "Unexpected router error.")
            )
        finally:
            if counted:
                router.upgrading -= 1
            tags = Tags(request_id, api, api_id, topic, application_id, key_type, self.client_ip)
            handshake_done(router, tags, request.path, status, reason, started, cache)

    def _match(self, host: str, path: str) -> Match:
        try:
            match = self.router.routes.table.match(host, path)
        except BadPath as exc:
            raise Handshake(400, 400, "Bad Request", f"Invalid request path: {exc}") from None
        if match is None:
            raise Handshake(404, 404, "Not Found", NO_MATCH)
        return match

    async def _check(
        self, request: Request, request_id: str, host: str, match: Match, found: Extracted
    ) -> tuple[enforcer_pb2.HandshakeResponse, str]:
        return await check_handshake(
            self.router, request, request_id, host, match, found, self.client_ip
        )

    @staticmethod
    def _endpoint(match: Match, key_type: str) -> tuple[str, str]:
        topic = match.topic
        if key_type.upper() == "SANDBOX":
            if not topic.sandbox_url:
                raise Handshake(
                    401,
                    900901,
                    "Invalid Credentials",
                    "Sandbox key is not allowed: the API has no sandbox endpoint",
                )
            return topic.sandbox_url, topic.sandbox_ca_pem
        if not topic.production_url:
            raise Handshake(
                401,
                900901,
                "Invalid Credentials",
                "Production key is not allowed: the API has no production endpoint",
            )
        return topic.production_url, topic.production_ca_pem

    async def _connect_backend(
        self,
        request: Request,
        request_id: str,
        url: str,
        ca_pem: str,
        found: Extracted,
        strip: bool,
    ) -> backend.BackendConnection:
        """Open the backend's WebSocket; ``strip``: without offering permessage-deflate."""
        try:
            target = backend.parse_backend_url(url, found.query)
        except ValueError as exc:
            raise Handshake(502, 101503, "Connection Failure", str(exc)) from None
        headers = backend_headers(request, request_id, found, strip, self.client_ip)
        try:
            conn = await backend.connect(
                target, ca_pem, headers, self.router.config.backend_connect_timeout
            )
        except backend.BackendError as exc:
            log.warning("backend %s for %s: %s", url, request_id, exc.description)
            message = "Gateway Timeout" if exc.status == 504 else "Connection Failure"
            raise Handshake(exc.status, 101503, message, exc.description) from None
        chosen = conn.response.headers.get("sec-websocket-extensions", "")
        if strip and DEFLATE in http11.extension_names(chosen):
            conn.transport.abort()  # it chose an extension it was not offered (RFC 6455 4.1)
            log.warning("backend %s for %s: negotiated %s unasked", url, request_id, DEFLATE)
            raise Handshake(
                502, 101503, "Connection Failure", f"The backend negotiated {DEFLATE} unasked."
            )
        return conn

    def _start_relay(
        self,
        key: str,
        conn: backend.BackendConnection,
        info: RelayInfo,
        live: Live,
        verdict: enforcer_pb2.HandshakeResponse,
        found: Extracted,
    ) -> None:
        assert self.transport is not None
        chosen = conn.response.headers
        extensions = chosen.get("sec-websocket-extensions", "")
        protocol = credentials.selected_subprotocol(found, chosen.get("sec-websocket-protocol", ""))
        answer = http11.switching_protocols(http11.accept_key(key), protocol, extensions)
        router = self.router
        if self._native_ok(conn, verdict):
            self._start_native(answer, conn, info, live, verdict, bool(extensions))
            return
        self.transport.write(answer)
        throttle = None
        if verdict.quotas:
            throttle = connection_throttle(verdict.quotas, router.counters, time.monotonic())
            live.throttle = throttle
        relay = Relay(
            self.transport,
            conn.transport,
            info,
            max_message=router.config.max_message,
            allow_rsv=bool(extensions),
            on_done=lambda done: router.relay_done(done, live),
            throttle=throttle,
        )
        router.relays.add(relay)
        router.pending.discard(self)
        self.transport = None  # the relay owns it now
        relay.start(bytes(self.early), conn.rest, conn.handshake.lost)
        self.early = bytearray()
        router.live.attach(live, relay, verdict.token_expires_at)

    def _native_ok(
        self, conn: backend.BackendConnection, verdict: enforcer_pb2.HandshakeResponse
    ) -> bool:
        """Whether this connection goes to the core: plaintext both ways, the backend still
        there, and quotas (if any) counted where the core can consume them (its own table, or
        permits leased from Redis)."""
        router = self.router
        assert self.transport is not None
        if router.native is None or conn.handshake.lost:
            return False
        if not (native.is_plain(self.transport) and native.is_plain(conn.transport)):
            return False
        if self.transport.get_write_buffer_size() or conn.transport.get_write_buffer_size():
            return False  # output still queued in a transport would be lost at the hand-over
        if verdict.quotas and router.counters is not router.native.store:
            return router.native.leases is router.counters  # a store the core cannot consume
        return True

    def _start_native(
        self,
        answer: bytes,
        conn: backend.BackendConnection,
        info: RelayInfo,
        live: Live,
        verdict: enforcer_pb2.HandshakeResponse,
        allow_rsv: bool,
    ) -> None:
        """Hand both sockets to the core; the 101 is sent by the core, before anything else."""
        router = self.router
        hub = router.native
        assert hub is not None and self.transport is not None
        throttle = None
        if verdict.quotas:
            throttle = hub.throttle(verdict.quotas, time.monotonic())
            live.throttle = throttle
        relay = NativeRelay(
            hub, info, on_done=lambda done: router.relay_done(done, live), throttle=throttle
        )
        client_fd = native.hand_over(self.transport)
        try:
            backend_fd = native.hand_over(conn.transport)
        except BaseException:
            os.close(client_fd)
            raise
        router.relays.add(relay)
        router.pending.discard(self)
        self.transport = None
        relay.start(
            client_fd,
            backend_fd,
            answer,
            bytes(self.early),
            conn.rest,
            max_message=router.config.max_message,
            allow_rsv=allow_rsv,
        )
        self.early = bytearray()
        router.live.attach(live, relay, verdict.token_expires_at)


async def _listening_socket(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> socket.socket | None:
    """A bound, listening TCP socket for the core, or None when ``host`` names more than one
    address (asyncio's create_server binds each; the core listens on one socket)."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((info[0], info[4]) for info in infos))
    if len(addresses) != 1:
        return None
    family, address = addresses[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class _CoreUpgrade:
    """A handshake whose backend upgrade the core is doing (between connect and its report)."""

    started: float
    request: Request
    tags: Tags
    key: str  # the client's Sec-WebSocket-Key
    backend_key: str
    url: str
    target: backend.BackendUrl
    verdict: enforcer_pb2.HandshakeResponse
    found: Extracted
    strip: bool
    live: Live
    cache: str  # how the decision cache took part (the log line's cache=)
    # the connection's quota counters, when taken at Core.connect (for the fast start)
    throttle: NativeThrottle | None = None
    throttle_taken: bool = False
    # the backend's other addresses, tried in order when one refuses (backend.connect does
    # the same), and Core.connect's arguments after the address
    others: tuple[str, ...] = ()
    connect_args: tuple[object, ...] = ()
    plan: int = 0  # the core's plan it was done by (0: decided by Python)
    # what a plan for the same request is made of (CoreHandshakes._make_plan)
    head: bytes = b""
    cache_key: bytes = b""
    route_version: str = ""
    address: str = ""
    request_bytes: bytes = b""
    answer: bytes = b""


@dataclass(slots=True, eq=False)
class _Plan:
    """What Python knows of a plan the core holds (its ctx): a decided request whose repeats
    the core does alone; the core's reports of them come back with it."""

    request: Request
    tags: Tags  # (request_id: each handshake's own)
    url: str
    target: backend.BackendUrl
    verdict: enforcer_pb2.HandshakeResponse
    found: Extracted
    strip: bool
    cache_key: bytes
    identity: Identity
    limits: tuple[tuple[str, str, bool], ...]  # (key, policy, stop) of each counted quota
    expires: float
    ident: int = 0


@dataclass(slots=True)
class _Head:
    """A request head the core reported, and what the router learnt of it so far."""

    hid: int
    peer: str
    request: Request
    head_len: int
    started: float
    request_id: str = ""
    key: str = ""
    host: str = ""
    match: Match | None = None
    found: Extracted | None = None
    api: str = "-"
    topic: str = "-"
    api_id: str = ""
    application_id: str = ""
    key_type: str = ""
    head: bytes = b""  # the request head's bytes
    cache_key: bytes = b""
    route_version: str = ""

    def tags(self) -> Tags:
        return Tags(
            self.request_id,
            self.api,
            self.api_id,
            self.topic,
            self.application_id,
            self.key_type,
            self.peer,
        )


def _tls_backend(match: Match) -> bool:
    """Whether the topic may send the upgrade to a wss backend (the core speaks plaintext)."""
    urls = (match.topic.production_url, match.topic.sandbox_url)
    return any(url.lower().startswith(("wss:", "https:")) for url in urls)


MEMO_SIZE = 1024  # credential sets remembered by CoreHandshakes._credentials
_KEY_LINE = b"\r\nSec-WebSocket-Key: "  # (as backend.build_request writes them)
_REQUEST_ID_LINE = b"\r\nX-Request-ID: "
_ACCEPT_LINE = b"\r\nSec-WebSocket-Accept: "  # (as http11.switching_protocols writes it)
MAX_PLANS = 4096  # plans the core holds at most (expired ones make room)


class CoreHandshakes:
    """The handshakes the core accepted (Core.listen): Python decides each one from the core's
    reports, the core does the I/O.

    A request head arrives as EV_HEAD. An upgrade whose allow is in the decision cache goes on
    in the core (Core.connect: backend upgrade; EV_UPSTREAM: its response head, checked here;
    Core.start: the 101 and the relay), with the same checks, answers, log line, metrics and
    analytics as Connection._upgrade. With ``native_fast_start`` Core.connect also carries the
    answer to a plain backend 101 (no extension, no subprotocol): the core checks such a 101
    itself, answers, relays and reports EV_STARTED (:meth:`_started`); other answers come as
    EV_UPSTREAM. Everything else (health, metrics, testkey, a cache miss,
    a wss backend, a backend name not resolved yet) goes back to asyncio as a Connection with
    the bytes already read (Core.handback), and runs exactly as if asyncio had accepted it.

    With ``native_plans``, a fast start decided from the decision cache leaves the core a plan
    (:meth:`_make_plan`): the same head again (but its key, from the same address) is connected,
    answered and relayed by the core alone and reported as EV_PLANNED (:meth:`_planned`), which
    does what Python would have done around it and then :meth:`_started`, :meth:`_upstream` or
    :meth:`_lost`. Plans go with their cache entry (:meth:`_forget`); the connection limit is
    shared with the core through an allowance (:meth:`_allow`).
    """

    def __init__(self, router: Router, hub: NativeHub) -> None:
        self.router = router
        self.hub = hub
        self.core = hub.core
        self.upgrades: dict[int, _CoreUpgrade] = {}
        self.checking: dict[int, asyncio.Task[None]] = {}  # misses awaiting the enforcer
        self.adopting: set[asyncio.Task[object]] = set()
        self.memo: dict[tuple[str, ...], tuple[Extracted, bytes]] = {}
        hub.on_handshake = self.report
        # Handshake plans (the core repeats a decided request alone): by id, and the ids of
        # each decision cache entry's; every entry forgotten, every route table applied drops
        # theirs in the core at once (_forget), and the connection limit is the core's room.
        config = router.config
        self.planning = config.native_plans and config.native_fast_start
        self.plans: dict[int, _Plan] = {}
        self.plan_keys: dict[bytes, set[int]] = {}
        self.seen = 0  # the core's planned handshakes reported to Python so far
        if self.planning:
            router.decisions.on_forget = self._forget
            router.routes.on_apply.append(lambda: self._forget(None))
            router.on_upgrade = self._allow
            hub.after_drain = self._allow

    def report(self, event: tuple[object, ...]) -> None:
        kind = event[0]
        if kind == native.EV_HEAD:
            self._head(cast(int, event[1]), cast(str, event[2]), cast(bytes, event[3]))
        elif kind == native.EV_UPSTREAM:
            self._upstream(
                cast(int, event[1]), cast(int, event[2]), cast(int, event[3]), cast(bytes, event[4])
            )
        elif kind == native.EV_STARTED:
            self._started(cast(int, event[1]), cast(int, event[2]))
        elif kind == native.EV_PLANNED:
            self._planned(event)
        elif kind == native.EV_HS_END:
            self._ended(cast(int, event[1]), cast(int, event[2]), cast(str, event[3]))

    # -- the request head ------------------------------------------------------------------

    def _hand_back(self, hid: int) -> None:
        got = self.core.handback(hid)
        if got is None:
            return  # the client went away meanwhile
        fd, data = got
        sock = socket.socket(fileno=fd)
        loop = asyncio.get_running_loop()
        router = self.router
        task = loop.create_task(
            loop.connect_accepted_socket(lambda: Connection(router, data), sock)
        )
        self.adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[object]) -> None:
        self.adopting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a connection given back by the core failed: %s", task.exception())

    def _head(self, hid: int, peer: str, data: bytes) -> None:
        try:
            got = HeadReader().feed(data)
            if got is None:
                self._hand_back(hid)
                return
            head = got[0]
            request = http11.parse_request_head(head)
        except HttpError as exc:
            self.core.reply(hid, http11.http_error_response(exc))
            return
        if request.path in ("/health", "/ready", "/metrics", "/testkey") or not (
            http11.is_upgrade(request)
        ):
            self._hand_back(hid)
            return
        self._upgrade(hid, peer, request, head)

    def _upgrade(self, hid: int, peer: str, request: Request, head: bytes) -> None:
        """Connection._upgrade with the core's I/O: synchronous for a cache hit; a miss awaits
        the enforcer in a task (:meth:`_check_first`) while the core holds the connection."""
        router = self.router
        h = _Head(hid, peer, request, len(head), time.monotonic(), head=head)
        h.request_id = safe_request_id(request.headers.get("x-request-id"))
        try:
            try:
                h.key = http11.validate_upgrade(request)
            except HttpError as exc:
                self.core.reply(hid, http11.http_error_response(exc))
                handshake_done(
                    router, h.tags(), request.path, exc.status, exc.description, h.started, "off"
                )
                return
            limit = router.config.max_connections
            if limit and router.connections() >= limit:
                raise Handshake(
                    503,
                    503,
                    "Service Unavailable",
                    f"The gateway is at its connection limit ({limit}); try again later.",
                )
            h.host = host_without_port(request.headers.get("host", ""))
            match = h.match = _match(router, h.host, request.path)
            h.api = f"{match.route.api_name}:{match.route.api_version}"
            h.topic, h.api_id = match.topic.path, match.route.api_id
            h.found, cache_key = self._credentials(request, match, peer)
            h.cache_key, h.route_version = cache_key, router.routes.version
            checked_at = time.monotonic()
            verdict = self._cached(cache_key)
            if verdict is None:
                if router.counters is not self.hub.store or _tls_backend(match):
                    self._hand_back(hid)  # Redis-shared counters or TLS: asyncio's path
                    return
                task = asyncio.get_running_loop().create_task(self._check_first(h))
                self.checking[hid] = task
                if self.planning:
                    self._allow()  # (counted from now: it is past the limit check)
                return
            if verdict.quotas and router.counters is not self.hub.store:
                self._hand_back(hid)  # Redis-shared counters: the Python relay
                return
            if not self._connect(h, verdict, checked_at, "hit", None, cache_key):
                self._hand_back(hid)  # TLS to the backend, or its name is not resolved yet
        except Handshake as exc:
            self._refuse(h, exc, "off")

    def _refuse(self, h: _Head, exc: Handshake, cache: str) -> None:
        self.core.reply(
            h.hid, http11.error_response(exc.status, exc.code, exc.message, exc.description)
        )
        reason = exc.description or exc.message
        handshake_done(self.router, h.tags(), h.request.path, exc.status, reason, h.started, cache)

    async def _check_first(self, h: _Head) -> None:
        """A cache miss: the enforcer's Check (and the backend's name), then :meth:`_connect`."""
        router = self.router
        router.upgrading += 1  # counted against the limit while checking, as on asyncio's path
        counted = True
        if router.on_upgrade is not None:
            router.on_upgrade()
        cache = "off"
        try:
            assert h.match is not None and h.found is not None
            checked_at = time.monotonic()
            verdict, cache = await check_handshake(
                router, h.request, h.request_id, h.host, h.match, h.found, h.peer
            )
            url, _ca_pem = Connection._endpoint(h.match, verdict.key_type)
            try:
                target = backend.parse_backend_url(url, h.found.query)
                addresses = await backend.RESOLVER.addresses(target.host, target.port)
            except ValueError as exc:
                raise Handshake(502, 101503, "Connection Failure", str(exc)) from None
            except OSError as exc:
                log.warning("backend %s for %s: %s", url, h.request_id, exc)
                raise Handshake(
                    502, 101503, "Connection Failure", f"cannot connect to the backend: {exc}"
                ) from None
            self.checking.pop(h.hid, None)  # from here the client leaving ends the upgrade
            router.upgrading -= 1
            counted = False
            if not self._connect(h, verdict, checked_at, cache, addresses, b""):
                raise Handshake(502, 101503, "Connection Failure", "The backend needs TLS.")
        except Handshake as exc:
            self._refuse(h, exc, cache)
        except asyncio.CancelledError:
            reason = "client closed the connection during the handshake"
            handshake_done(router, h.tags(), h.request.path, 499, reason, h.started, cache)
        except Exception:
            log.exception("handshake %s failed", h.request_id)
            self._refuse(
                h, Handshake(500, 500, "Internal Server Error", "Unexpected router error."), cache
            )
        finally:
            if counted:
                router.upgrading -= 1
            self.checking.pop(h.hid, None)

    def _connect(
        self,
        h: _Head,
        verdict: enforcer_pb2.HandshakeResponse,
        checked_at: float,
        cache: str,
        addresses: list[str] | None,
        cache_key: bytes,
    ) -> bool:
        """The backend upgrade by the core (Connection._connect_backend's request); False when
        it cannot do it (a wss backend, a name not resolved): the caller hands the socket back.

        Raises:
            Handshake: no endpoint for the key type, a bad backend URL.
        """
        router = self.router
        assert h.match is not None and h.found is not None
        url, _ca_pem = Connection._endpoint(h.match, verdict.key_type)
        try:
            target = backend.parse_backend_url(url, h.found.query)
        except ValueError as exc:
            raise Handshake(502, 101503, "Connection Failure", str(exc)) from None
        if addresses is None:
            addresses = None if target.secure else backend.RESOLVER.cached(target.host, target.port)
        if addresses is None or target.secure:
            return False
        if cache_key:
            router.decisions.get(cache_key, checked_at)  # counted as the hit it is
        h.application_id, h.key_type = verdict.application_id, verdict.key_type.upper()
        strip = strips_compression(
            h.match.route.compression, router.config.compression, verdict.quotas
        )
        headers = backend_headers(h.request, h.request_id, h.found, strip, h.peer)
        backend_key = backend.new_key()
        identity = Identity.of(verdict.token_id, h.application_id, h.api_id, h.key_type)
        live = router.live.begin(
            identity, checked_at, verdict.subscription_id, verdict.data_version
        )
        up = self.upgrades[h.hid] = _CoreUpgrade(
            h.started,
            h.request,
            h.tags(),
            h.key,
            backend_key,
            url,
            target,
            verdict,
            h.found,
            strip,
            live,
            cache,
        )
        router.upgrading += 1
        if router.on_upgrade is not None:
            router.on_upgrade()
        request_bytes = backend.build_request(target, backend_key, headers)
        config = router.config
        fast: tuple[object, ...] = ()
        if config.native_fast_start:
            # The core may finish alone (EV_STARTED) when the backend answers a plain 101: what
            # _upstream would then answer (no extensions: the protocol is the marker, if any)
            # and what _start would pass; the throttle is taken now (live.end releases it).
            throttle = (
                self.hub.throttle(verdict.quotas, time.monotonic()) if verdict.quotas else None
            )
            live.throttle = up.throttle = throttle
            up.throttle_taken = True
            answer = http11.switching_protocols(
                http11.accept_key(h.key), credentials.selected_subprotocol(h.found, "")
            )
            fast = (
                http11.accept_key(backend_key).encode("ascii"),
                answer,
                config.max_message,
                throttle.for_core() if throttle is not None else (),
            )
            if self.planning:  # what _make_plan needs should the core start it
                up.head, up.cache_key, up.route_version = h.head, h.cache_key, h.route_version
                up.address, up.request_bytes, up.answer = addresses[0], request_bytes, answer
        up.others = tuple(addresses[1:])
        up.connect_args = (
            target.port,
            request_bytes,
            h.head_len,
            config.backend_connect_timeout,
            *fast,
        )
        sent = self.core.connect(h.hid, addresses[0], *up.connect_args)
        if not sent:
            self._lost(h.hid)
        return True

    def _credentials(self, request: Request, match: Match, peer: str) -> tuple[Extracted, bytes]:
        """credentials.extract and the decision key, remembered by their inputs: a client
        reconnecting with the same token pays for neither again (both are pure)."""
        headers = request.headers
        get = headers.get
        inputs = (
            match.route.api_id,
            match.topic.path,
            request.query,
            get("authorization", ""),
            get("apikey", ""),
            get("sec-websocket-protocol", ""),
            get("origin", ""),
            get("referer", ""),
            peer,
        )
        memo = self.memo
        got = memo.get(inputs)
        if got is None:
            found = credentials.extract(headers, request.query)
            got = (found, request_decision_key(request, match, found, peer))
            if len(memo) >= MEMO_SIZE:
                memo.clear()  # (a bound, not an LRU: a miss costs what it did before)
            memo[inputs] = got
        return got

    def _cached(self, key: bytes) -> enforcer_pb2.HandshakeResponse | None:
        """The cached allow for ``key`` (None: a miss, or the cache is not usable)."""
        decisions = self.router.decisions
        if not decisions.usable:
            return None
        if self.router.routes.version != decisions.route_version:
            return None  # the asyncio path sets the new version
        return decisions.peek(key, time.monotonic())

    # -- the backend's answer ----------------------------------------------------------------

    def _upstream(self, hid: int, error: int, code: int, head: bytes) -> None:
        up = self.upgrades.pop(hid, None)
        if up is None:
            return
        if error == native.UP_CONNECT and up.others:
            address, up.others = up.others[0], up.others[1:]  # localhost: ::1, 127.0.0.1
            up.address = address  # (a plan, if made, connects where this one did)
            log.debug(
                "backend %s for %s: %s refused, trying %s",
                up.url,
                up.tags.request_id,
                os.strerror(code),
                address,
            )
            self.upgrades[hid] = up
            if not self.core.connect(hid, address, *up.connect_args):
                self._lost(hid)
            return
        router = self.router
        status, reason = 101, ""
        try:
            response = self._response(up, error, code, head)
            chosen = response.headers
            extensions = chosen.get("sec-websocket-extensions", "")
            if up.strip and DEFLATE in http11.extension_names(extensions):
                log.warning(
                    "backend %s for %s: negotiated %s unasked", up.url, up.tags.request_id, DEFLATE
                )
                raise Handshake(
                    502, 101503, "Connection Failure", f"The backend negotiated {DEFLATE} unasked."
                )
            protocol = credentials.selected_subprotocol(
                up.found, chosen.get("sec-websocket-protocol", "")
            )
            answer = http11.switching_protocols(http11.accept_key(up.key), protocol, extensions)
            if not self._start(hid, up, answer, bool(extensions)):
                status, reason = 499, "client closed the connection during the handshake"
        except Handshake as exc:
            status, reason = exc.status, exc.description or exc.message
            self.core.reply(
                hid, http11.error_response(exc.status, exc.code, exc.message, exc.description)
            )
        except Exception:
            status, reason = 500, "unexpected router error"
            log.exception("handshake %s failed", up.tags.request_id)
            self.core.reply(
                hid,
                http11.error_response(
                    500, 500, "Internal Server Error", "Unexpected router error."
                ),
            )
        finally:
            router.upgrading -= 1
            if up.live.relay is None:
                router.live.end(up.live)
            handshake_done(router, up.tags, up.request.path, status, reason, up.started, up.cache)

    def _response(self, up: _CoreUpgrade, error: int, code: int, head: bytes) -> http11.Response:
        """The backend's checked 101 (backend.connect's checks and answers), else Handshake."""
        description = ""
        status = 502
        if error == native.UP_TIMEOUT:
            status, description = 504, "the backend did not complete the handshake in time"
        elif error == native.UP_CONNECT:
            backend.RESOLVER.forget(up.target.host, up.target.port)
            description = f"cannot connect to the backend: {OSError(code, os.strerror(code))}"
        elif error == native.UP_CLOSED:
            description = "the backend closed the connection during the handshake"
        elif error == native.UP_TOO_LARGE:
            description = "invalid backend response: the response head is larger than 16 KiB"
        else:
            try:
                response = http11.parse_response_head(head)
                http11.check_backend_response(response, up.backend_key)
                return response
            except HttpError as exc:
                description = f"invalid backend response: {exc}"
            except ValueError as exc:
                description = str(exc)
        log.warning("backend %s for %s: %s", up.url, up.tags.request_id, description)
        message = "Gateway Timeout" if status == 504 else "Connection Failure"
        raise Handshake(status, 101503, message, description)

    def _start(self, hid: int, up: _CoreUpgrade, answer: bytes, allow_rsv: bool) -> bool:
        """Connection._start_native for a handshake the core did: False when the client left."""
        router, hub, verdict = self.router, self.hub, up.verdict
        throttle = up.throttle
        if not up.throttle_taken and verdict.quotas:
            throttle = hub.throttle(verdict.quotas, time.monotonic())
            up.live.throttle = throttle
        relay = self._relay(up, throttle)
        ident = self.core.start(
            hid,
            answer,
            router.config.max_message,
            allow_rsv,
            throttle.for_core() if throttle is not None else (),
        )
        if ident is None:
            return False  # (live.end releases the throttle's counters)
        self._adopt(up, relay, ident)
        return True

    def _relay(self, up: _CoreUpgrade, throttle: NativeThrottle | None) -> NativeRelay:
        """The router's handle on the relay the core runs (or is about to run) for ``up``."""
        tags, live, router = up.tags, up.live, self.router
        info = RelayInfo(
            tags.request_id,
            tags.api,
            tags.topic,
            tags.client_ip,
            tags.api_id,
            tags.application_id,
            tags.key_type,
        )
        return NativeRelay(
            self.hub, info, on_done=lambda done: router.relay_done(done, live), throttle=throttle
        )

    def _adopt(self, up: _CoreUpgrade, relay: NativeRelay, ident: int) -> None:
        """The relay runs in the core as ``ident``: the router's bookkeeping of it (a rule that
        selected it meanwhile is in live.doom: attach closes it now)."""
        router = self.router
        relay.adopt(ident)
        router.relays.add(relay)
        router.live.attach(up.live, relay, up.verdict.token_expires_at)

    def _started(self, hid: int, ident: int) -> None:
        """The core checked the backend's plain 101 and started relaying by itself (the fast
        start asked by :meth:`_connect`): what _upstream + _start do after Core.start."""
        up = self.upgrades.pop(hid, None)
        if up is None:  # (cannot happen: nothing else ends an upgrade the core still does)
            self.core.abort(ident, "")
            return
        router = self.router
        try:
            self._adopt(up, self._relay(up, up.throttle), ident)
        finally:
            router.upgrading -= 1
            if up.live.relay is None:  # (only an unexpected error: the relay is not ours)
                router.live.end(up.live)
                self.core.abort(ident, "")
            handshake_done(router, up.tags, up.request.path, 101, "", up.started, up.cache)
        if self.planning and not up.plan and up.live.relay is not None:
            self._make_plan(up)

    # -- handshake plans ---------------------------------------------------------------------

    def _make_plan(self, up: _CoreUpgrade) -> None:
        """The core started ``up`` alone, decided by the (still cached) allow: leave it a plan
        for the same request head from the same address, until that allow may end."""
        router = self.router
        decisions = router.decisions
        now = time.monotonic()
        request = up.request
        if (
            up.cache not in ("hit", "miss")
            or not up.cache_key
            or not up.answer
            or "x-request-id" in request.headers  # (a plan mints each request id)
            or up.route_version != router.routes.version
            or up.route_version != decisions.route_version
            or router.counters is not self.hub.store
        ):
            return
        entry = decisions.entry(up.cache_key, now)
        if entry is None or entry.verdict is not up.verdict:
            return  # forgotten (or replaced) meanwhile
        expires = min(entry.expires, backend.RESOLVER.fresh_until(up.target.host, up.target.port))
        if expires <= now or (len(self.plans) >= MAX_PLANS and not self._purge(now)):
            return
        # Where the core writes each new value: after these prefixes, in place of this one's.
        data, rid = up.request_bytes, up.tags.request_id.encode("ascii")
        key_at = data.find(_KEY_LINE + up.backend_key.encode("ascii") + b"\r\n")
        accept = http11.accept_key(up.key).encode("ascii")
        accept_at = up.answer.find(_ACCEPT_LINE + accept + b"\r\n")
        rid_tail = b"\r\n\r\n"
        if (
            key_at < 0
            or accept_at < 0
            or len(rid) != 32
            or not data.endswith(_REQUEST_ID_LINE + rid + rid_tail)
        ):
            return
        quotas = tuple(counted_quotas(up.verdict.quotas))
        tags = up.tags
        plan = _Plan(
            request,
            tags,
            up.url,
            up.target,
            up.verdict,
            up.found,
            up.strip,
            up.cache_key,
            up.live.identity,
            tuple((q.key, q.policy, q.stop_on_quota_reach) for q in quotas),
            expires,
        )
        config = router.config
        ident, replaced = self.core.plan_add(
            head=up.head,
            peer=tags.client_ip,
            host=up.address,
            port=up.target.port,
            timeout=config.backend_connect_timeout,
            request=data,
            request_key=key_at + len(_KEY_LINE),
            request_id=len(data) - len(rid_tail) - len(rid),
            answer=up.answer,
            answer_accept=accept_at + len(_ACCEPT_LINE),
            max_message=config.max_message,
            quotas=tuple(
                (q.key, q.message_count, q.window_seconds, q.stop_on_quota_reach) for q in quotas
            ),
            expires=expires,
            ctx=plan,
        )
        if replaced:
            self._unlist(replaced)
        if ident:
            plan.ident = ident
            self.plans[ident] = plan
            self.plan_keys.setdefault(up.cache_key, set()).add(ident)
            self._allow()

    def _planned(self, event: tuple[object, ...]) -> None:
        """A handshake the core did by a plan: what Python would have done around it
        (live.begin, the hit counted, the throttle), then _started, _upstream or _lost as for
        one it connected itself."""
        hid, outcome, plan = cast(int, event[1]), cast(int, event[2]), cast(_Plan, event[3])
        rid, bkey, ckey = cast(str, event[5]), cast(str, event[6]), cast(str, event[7])
        started, handles = cast(float, event[8]), cast(tuple[int, ...], event[9])
        self.seen += 1
        router, verdict = self.router, plan.verdict
        throttle = None
        if handles:
            limits = tuple(
                NativeLimit(key, policy, stop, handle)
                for (key, policy, stop), handle in zip(plan.limits, handles, strict=True)
            )
            throttle = NativeThrottle(self.core, limits)
        live = router.live.begin(
            plan.identity, started, verdict.subscription_id, verdict.data_version
        )
        live.throttle = throttle
        router.decisions.get(plan.cache_key, started)  # counted as the hit it is
        t = plan.tags
        tags = Tags(rid, t.api, t.api_id, t.topic, t.application_id, t.key_type, t.client_ip)
        self.upgrades[hid] = _CoreUpgrade(
            started,
            plan.request,
            tags,
            ckey,
            bkey,
            plan.url,
            plan.target,
            verdict,
            plan.found,
            plan.strip,
            live,
            "hit",
            throttle,
            True,
            plan=plan.ident,
        )
        router.upgrading += 1
        if outcome == native.PLANNED_STARTED:
            self._started(hid, cast(int, event[4]))
            return
        self._unlist(plan.ident)  # the core dropped it: the next such head goes to Python
        if outcome == native.PLANNED_UPSTREAM:
            self._upstream(hid, cast(int, event[10]), cast(int, event[11]), cast(bytes, event[12]))
        else:
            self._lost(hid)

    def unseen(self) -> int:
        """Handshakes the core started by a plan that Python has not heard of yet."""
        return int(self.core.plan_started()) - self.seen

    def _allow(self) -> None:
        """Tell the core how many planned handshakes it may start: config.max_connections
        less what Python counts (relays, upgrades, misses awaiting the enforcer) and one
        (Python's own check and count of a handshake are not atomic with the core's)."""
        if not self.plans:
            return
        router = self.router
        limit = router.config.max_connections
        if not limit:
            self.core.plan_allow(1 << 62)
            return
        free = limit - len(router.relays) - router.upgrading - len(self.checking) - 1
        self.core.plan_allow(self.seen + max(free, 0))

    def _forget(self, key: bytes | None) -> None:
        """The decision cache forgot ``key`` (None: every entry), or the routes changed: the
        plans made from it go from the core before anything else runs."""
        if key is None:
            self.plans.clear()
            self.plan_keys.clear()
            self.core.plan_clear()
            return
        for ident in self.plan_keys.pop(key, ()):
            self.plans.pop(ident, None)
            self.core.plan_drop(ident)

    def _unlist(self, ident: int) -> None:
        """Forget a plan the core no longer holds."""
        plan = self.plans.pop(ident, None)
        if plan is not None:
            idents = self.plan_keys.get(plan.cache_key)
            if idents is not None:
                idents.discard(ident)
                if not idents:
                    del self.plan_keys[plan.cache_key]

    def _purge(self, now: float) -> bool:
        """Drop the expired plans; whether there is room for another."""
        for ident, plan in list(self.plans.items()):
            if plan.expires <= now:
                self._unlist(ident)
                self.core.plan_drop(ident)
        return len(self.plans) < MAX_PLANS

    # -- the client went away, or its head did not come in time --------------------------------

    def _ended(self, hid: int, why: int, peer: str) -> None:
        if why == 1:
            log.info("handshake timeout from %s", peer)
            self.core.reply(
                hid,
                http11.error_response(
                    408, 408, "Request Timeout", "The request head was not received in time."
                ),
            )
            return
        self._lost(hid)

    def _lost(self, hid: int) -> None:
        task = self.checking.pop(hid, None)
        if task is not None:
            task.cancel()  # it logs the 499
            return
        up = self.upgrades.pop(hid, None)
        if up is None:
            return
        self.router.upgrading -= 1
        self.router.live.end(up.live)
        reason = "client closed the connection during the handshake"
        handshake_done(self.router, up.tags, up.request.path, 499, reason, up.started, up.cache)


def request_decision_key(request: Request, match: Match, found: Extracted, client_ip: str) -> bytes:
    """The decision cache's key for this upgrade request (one place for both handshake paths)."""
    headers = request.headers
    return decision_key(
        match.route.api_id,
        match.topic.path,
        [(c.kind, c.token) for c in found.credentials],
        headers.get("authorization", ""),
        headers.get("origin", ""),
        headers.get("referer", ""),
        client_ip,
    )


async def check_handshake(
    router: Router,
    request: Request,
    request_id: str,
    host: str,
    match: Match,
    found: Extracted,
    client_ip: str,
) -> tuple[enforcer_pb2.HandshakeResponse, str]:
    """The enforcer's verdict (raises Handshake when denied), and how the decision cache
    took part: "hit" (no Check sent), "miss" (asked, and an allow is now cached when it
    may be), or "off" (bypassed: disabled, or the rules stream is down)."""
    decisions = router.decisions
    key = b""
    if decisions.usable:
        if router.routes.version != decisions.route_version:
            decisions.set_route_version(router.routes.version)
        key = request_decision_key(request, match, found, client_ip)
        cached = decisions.get(key, time.monotonic())
        if cached is not None:
            return cached, "hit"
    check = enforcer_pb2.HandshakeRequest(
        request_id=request_id,
        api_id=match.route.api_id,
        topic=match.topic.path,
        path=request.path,
        host=host,
        authorization=request.headers.get("authorization", ""),
        client_ip=client_ip,
        headers=credentials.enforcer_headers(request.headers),
        credentials=[
            enforcer_pb2.Credential(kind=c.kind, source=c.source, token=c.token)
            for c in found.credentials
        ],
        origin=request.headers.get("origin", ""),
        referer=request.headers.get("referer", ""),
    )
    try:
        verdict = await router.enforcer.check(check)
    except EnforcerUnavailable as exc:
        log.warning("enforcer unavailable for %s: %s", request_id, exc)
        raise Handshake(
            503, 503, "Service Unavailable", "The gateway could not verify the request."
        ) from None
    if not verdict.allowed:
        status = verdict.http_status or 403
        raise Handshake(
            status,
            verdict.error_code or status,
            verdict.message or http11.HttpError(status, "").message,
            verdict.description,
        )
    if key:
        decisions.put(key, verdict, match.route.api_id, time.monotonic(), time.time())
        return verdict, "miss"
    return verdict, "off"


def _match(router: Router, host: str, path: str) -> Match:
    try:
        match = router.routes.table.match(host, path)
    except BadPath as exc:
        raise Handshake(400, 400, "Bad Request", f"Invalid request path: {exc}") from None
    if match is None:
        raise Handshake(404, 404, "Not Found", NO_MATCH)
    return match
