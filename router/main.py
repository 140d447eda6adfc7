"""`wsgate router`: the data plane process (plain :9090 and TLS :9095 listeners + xDS client)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket

import uvloop

from router.analytics import JsonLinesFile, JsonLinesLog, Sink
from router.config import RouteStore
from router.enforcer_client import EnforcerClient
from router.native import NativeUnavailable
from router.oslimits import raise_nofile_limit
from router.redis_store import RedisCounterStore, build_store
from router.rules import RuleWatcher
from router.server import Router, RouterConfig, server_ssl_context
from router.settings import RouterSettings
from wsgate_common import grpc_tls
from wsgate_common.args import Parser
from wsgate_common.logs import setup_logging
from wsgate_common.pki import ensure_pki
from wsgate_common.resources import ROUTE_TYPE_URL
from wsgate_common.xds_client import XdsClient

log = logging.getLogger("router")


def parse_args(argv: list[str]) -> RouterSettings:
    """Flags override ``WSGATE_*`` environment variables, which override the defaults."""
    parser = Parser(
        prog="wsgate router",
        description="The wsgate data plane: checks WebSocket handshakes with the enforcer, "
        "then relays frames to the backend. Routes arrive over xDS from the adapter.",
    )
    parser.add_argument("--host", help="listen address (WSGATE_ROUTER_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="plain ws:// port (WSGATE_ROUTER_PORT, 9090)")
    parser.add_argument(
        "--tls-port", type=int, help="wss:// port (WSGATE_ROUTER_TLS_PORT, 9095); 0 disables"
    )
    parser.add_argument("--label", help="gateway label = xDS node id (WSGATE_LABEL, Default)")
    parser.add_argument("--xds-address", help="adapter ADS host:port (WSGATE_XDS_ADDRESS)")
    parser.add_argument(
        "--enforcer-address", help="enforcer gRPC host:port (WSGATE_ENFORCER_ADDRESS)"
    )
    parser.add_argument(
        "--enforcer-http-url", help="enforcer HTTP base URL for /testkey (WSGATE_ENFORCER_HTTP_URL)"
    )
    parser.add_argument(
        "--max-message", type=int, help="largest WebSocket message in bytes (1 MiB)"
    )
    parser.add_argument("--data-dir", help="where the local PKI lives (WSGATE_DATA_DIR)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ... (WSGATE_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="(WSGATE_LOG_FORMAT)")
    args = parser.parse_args(argv)
    overrides = {
        "router_host": args.host,
        "router_port": args.port,
        "router_tls_port": args.tls_port,
        "label": args.label,
        "xds_address": args.xds_address,
        "enforcer_address": args.enforcer_address,
        "enforcer_http_url": args.enforcer_http_url,
        "router_max_message": args.max_message,
        "data_dir": args.data_dir,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return RouterSettings(**{k: v for k, v in overrides.items() if v is not None})


def analytics_sink(settings: RouterSettings) -> Sink:
    path = settings.analytics_path
    return JsonLinesLog() if path is None else JsonLinesFile(path)


def redis_counter_store(settings: RouterSettings) -> RedisCounterStore | None:
    """The Redis-backed quota counters when ``WSGATE_RATELIMIT_REDIS_URL`` is set."""
    if not settings.ratelimit_redis_url:
        return None
    if importlib.util.find_spec("redis") is None:
        log.error("WSGATE_RATELIMIT_REDIS_URL needs the redis package: pip install 'wsgate[redis]'")
        raise SystemExit(2)
    return build_store(
        settings.ratelimit_redis_url,
        prefix=settings.ratelimit_redis_prefix,
        failure_mode=settings.ratelimit_redis_failure_mode,
        expected_routers=settings.ratelimit_expected_routers,
        sub_windows=settings.ratelimit_redis_sub_windows,
        max_lease=settings.ratelimit_redis_max_lease,
        timeout=settings.ratelimit_redis_timeout,
    )


async def serve(settings: RouterSettings) -> None:
    """Run until SIGTERM/SIGINT, then close relays with 1001 and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tls = grpc_tls.for_settings(settings)  # to the enforcer and the adapter's xDS
    store = RouteStore()
    enforcer = EnforcerClient(settings.enforcer_address, settings.router_enforcer_timeout, tls)
    config = RouterConfig(
        enforcer_http_url=settings.enforcer_http_url,
        max_message=settings.router_max_message,
        compression=settings.router_compression,
        handshake_timeout=settings.router_handshake_timeout,
        backend_connect_timeout=settings.router_backend_connect_timeout,
        idle_timeout=settings.router_idle_timeout,
        max_connections=settings.router_max_connections,
        analytics_interval=settings.router_analytics_interval,
        analytics_queue=settings.router_analytics_queue,
        decision_cache_ttl=settings.router_decision_cache_ttl,
        decision_cache_size=settings.router_decision_cache_size,
        relay=settings.relay,
        native_handshake=settings.router_native_handshake,
        native_fast_start=settings.router_native_fast_start,
        native_plans=settings.router_native_plans,
        relay_sched=settings.router_relay_sched,
    )
    raise_nofile_limit()
    counters = redis_counter_store(settings)
    router = Router(config, store, enforcer, counters=counters, sinks=[analytics_sink(settings)])
    if counters is not None:
        counters.register_metrics(router.metrics.registry, router.native_holds)
        await counters.check()
    await router.listen(settings.router_host, settings.router_port)
    if settings.router_tls_port:
        pki = ensure_pki(settings.pki_dir)
        ctx = server_ssl_context(str(pki.cert), str(pki.key))
        await router.listen(settings.router_host, settings.router_tls_port, ctx)
    log.info(
        "router listening on %s:%d (ws, %s relay) and :%d (wss, python relay), label %s, "
        "xDS %s, enforcer %s; relay path: %s%s",
        settings.router_host,
        settings.router_port,
        router.relay_path,
        settings.router_tls_port,
        settings.label,
        settings.xds_address,
        settings.enforcer_address,
        router.relay_path,
        f" (relay thread scheduling: {settings.router_relay_sched})" if router.native else "",
    )
    log.info("gRPC to the enforcer and xDS: %s", grpc_tls.summary(tls))
    xds = XdsClient(settings.xds_address, settings.label, {ROUTE_TYPE_URL: store.apply}, tls=tls)
    xds_task = loop.create_task(xds.run())
    router_id = f"{settings.label}/{socket.gethostname()}:{settings.router_port}"
    rules = RuleWatcher(
        settings.enforcer_address,
        router.apply_rule,
        router_id,
        tls=tls,
        live=router.live,
        on_stream=router.rules_stream,
    )
    rules_task = loop.create_task(rules.run())
    try:
        await stop.wait()
    finally:
        log.info("router shutting down")
        for task in (xds_task, rules_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await router.shutdown(settings.router_drain_seconds)
        if counters is not None:
            await counters.close()


def main(argv: list[str]) -> int:
    try:
        settings = parse_args(argv)
    except ValueError as exc:  # pydantic validation of env values
        print(f"wsgate router: invalid settings: {exc}")
        return 2
    setup_logging("router", settings.log_level, settings.log_format)
    try:
        uvloop.run(serve(settings))
    except (OSError, ValueError, NativeUnavailable) as exc:  # ValueError: unusable gRPC certs
        log.error("cannot start: %s", exc)
        return 1
    return 0
