"""`wsgate enforcer`: the handshake checker (gRPC) and test-key issuer (HTTP) in one process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import grpc
import uvloop
from pydantic import ValidationError

from enforcer.decide import Options
from enforcer.feeds import Feeds
from enforcer.http import bind, build_app, make_server
from enforcer.issuers import load_issuers_file
from enforcer.jwks import JwksRefresher, trust
from enforcer.keymanagers import IssuerBook
from enforcer.metrics import EnforcerMetrics
from enforcer.policies import PolicyStore
from enforcer.service import HandshakeService
from enforcer.settings import EnforcerSettings
from enforcer.subscriptions import SubscriptionStore
from enforcer.testkey import TestKeySigner, load_or_create_key
from enforcer.watch import ConnectionWatch
from wsgate_common import grpc_tls
from wsgate_common.args import Parser
from wsgate_common.backoff import Backoff
from wsgate_common.logs import setup_logging
from wsgate_common.safety import default_user_problem
from wsgate_common.settings import parse_users
from wsgate_common.xds_client import XdsClient
from wsgate_proto import enforcer_pb2_grpc

log = logging.getLogger("enforcer")

GRACE_SECONDS = 2.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="wsgate enforcer",
        description="Check WebSocket handshakes for the router (gRPC HandshakeService) and issue "
        "test keys (POST /testkey). API policies arrive over xDS from the adapter. Every flag "
        "overrides the WSGATE_* environment variable named after it.",
    )
    add = parser.add_argument
    add(
        "--host",
        dest="enforcer_host",
        metavar="HOST",
        help="address to listen on (WSGATE_ENFORCER_HOST)",
    )
    add(
        "--grpc-port",
        metavar="PORT",
        dest="enforcer_grpc_port",
        type=int,
        help="HandshakeService port (WSGATE_ENFORCER_GRPC_PORT, 8081)",
    )
    add(
        "--http-port",
        metavar="PORT",
        dest="enforcer_http_port",
        type=int,
        help="/testkey, /jwks, /health, /ready port (WSGATE_ENFORCER_HTTP_PORT, 8082)",
    )
    add(
        "--users",
        metavar="SPEC",
        dest="enforcer_users",
        help="'user:password,...' allowed to get test keys (WSGATE_ENFORCER_USERS)",
    )
    add(
        "--issuers-file",
        metavar="FILE",
        dest="enforcer_issuers_file",
        type=Path,
        help="YAML/JSON file of extra trusted token issuers (WSGATE_ENFORCER_ISSUERS_FILE)",
    )
    add("--label", help="gateway label, the xDS node id (WSGATE_LABEL, Default)")
    add("--xds-address", help="adapter xDS host:port (WSGATE_XDS_ADDRESS, localhost:18000)")
    add("--data-dir", type=Path, help="where the test-key signing key lives (WSGATE_DATA_DIR)")
    add("--log-level", help="DEBUG, INFO, WARNING, ... (WSGATE_LOG_LEVEL, INFO)")
    add("--log-format", choices=["text", "json"], help="(WSGATE_LOG_FORMAT, text)")
    add(
        "--insecure-dev",
        dest="insecure_dev",
        action="store_const",
        const=True,
        help="start even on a non-loopback address with the built-in admin:admin /testkey "
        "user (WSGATE_INSECURE_DEV; demos only)",
    )
    return parser.parse_args(argv)


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(settings: EnforcerSettings) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 when a port or key cannot be used."""
    try:
        signer = TestKeySigner(load_or_create_key(settings.testkey_path))
        issuers = [signer.as_issuer()] if settings.testkey_enabled else []
        if settings.enforcer_issuers_file is not None:
            issuers += load_issuers_file(settings.enforcer_issuers_file)
        book = IssuerBook(issuers)
        users = parse_users(settings.enforcer_users)
        refresher = JwksRefresher(book, verify=trust([settings.data_dir / "pki" / "ca.pem"]))
        tls = grpc_tls.for_settings(settings)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    if not settings.testkey_enabled:
        log.info("test keys are off (WSGATE_TESTKEY_ENABLED=false): /testkey answers 404")
    log.info(
        "trusting %d token issuer(s): %s (more arrive as key managers over xDS)",
        len(book.registry),
        ", ".join(i.name for i in book.registry),
    )

    policies = PolicyStore()
    subscriptions = SubscriptionStore()
    watch = ConnectionWatch()
    book.on_change = watch.keys_changed  # a new data version: routers forget cached decisions
    feeds = Feeds(policies, subscriptions, book, watch, refresher)
    metrics = EnforcerMetrics()
    grpc_server = grpc.aio.server(options=tls.server_options())
    enforcer_pb2_grpc.add_HandshakeServiceServicer_to_server(
        HandshakeService(
            policies,
            book,
            subscriptions,
            refresher=refresher,
            watch=watch,
            metrics=metrics,
            options=Options(
                allowed_origins=settings.allowed_origins,
                testkeys_on_control_plane=settings.testkey_control_plane_apis,
            ),
        ),
        grpc_server,
    )
    try:
        grpc_address = _grpc_address(settings.enforcer_host, settings.enforcer_grpc_port)
        if tls.add_port(grpc_server, grpc_address) == 0:
            raise OSError(f"cannot listen on {grpc_address}")
        http_socket = bind(settings.enforcer_host, settings.enforcer_http_port)
    except (OSError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 1

    app = build_app(
        signer,
        users,
        lambda: policies.applied_once,
        metrics=metrics.render,
        testkeys=settings.testkey_enabled,
        max_validity=settings.testkey_max_validity,
        backoff=Backoff(settings.backoff_policy),
    )
    http_server = make_server(app)
    xds = XdsClient(settings.xds_address, settings.label, feeds.handlers(), tls=tls)
    metrics.watch_state(
        nacks=lambda: xds.nacks,
        subscriptions=lambda: subscriptions.current,
        policies=policies,
        watch=watch,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await grpc_server.start()
    http_task = asyncio.create_task(http_server.serve(sockets=[http_socket]), name="http")
    xds_task = asyncio.create_task(xds.run(), name="xds")
    for issuer in book.static:  # file issuers that give only a jwks_url: fetch their keys now
        if issuer.jwks_url and not issuer.keys and issuer.default_key is None:
            refresher.start(issuer.name)
    log.info(
        "enforcer up: gRPC %s (%s), HTTP %s:%d, xDS %s as %r",
        grpc_address,
        grpc_tls.summary(tls),
        settings.enforcer_host,
        settings.enforcer_http_port,
        settings.xds_address,
        settings.label,
    )
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait(
        {stop_task, http_task, xds_task}, return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    if stop_task not in done:
        for task in done:
            log.error("%s stopped unexpectedly: %r", task.get_name(), task.exception())
        code = 1
    log.info("shutting down")
    xds_task.cancel()
    stop_task.cancel()
    http_server.should_exit = True
    await grpc_server.stop(GRACE_SECONDS)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(http_task, GRACE_SECONDS + 3)
    with contextlib.suppress(asyncio.CancelledError):
        await xds_task
    http_socket.close()
    return code


def startup_problem(settings: EnforcerSettings) -> str | None:
    """Why the enforcer must not start (the built-in /testkey user offered beyond loopback),
    or None. With test keys off the users grant nothing, so any address is fine.

    Raises:
        ValueError: ``enforcer_users`` is malformed.
    """
    users = parse_users(settings.enforcer_users)
    if not settings.testkey_enabled:
        return None
    return default_user_problem(
        "enforcer",
        settings.enforcer_host,
        users,
        "WSGATE_ENFORCER_USERS",
        "WSGATE_ENFORCER_HOST",
        settings.insecure_dev,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = EnforcerSettings(**overrides)
    except ValidationError as exc:
        print(f"wsgate enforcer: bad settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        problem = startup_problem(settings)
    except ValueError as exc:
        print(f"wsgate enforcer: bad settings: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(problem, file=sys.stderr)
        return 2
    setup_logging("enforcer", settings.log_level, settings.log_format)
    # uvloop: about 12% less CPU per Check than the default loop (bench/checks.py).
    return uvloop.run(serve(settings))
