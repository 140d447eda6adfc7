"""`wsgate adapter`: REST (HTTPS) for the CLI, gRPC for the control plane, ADS for the gateway.

All three servers share one asyncio loop and one registry, so a deploy from either door is
compiled once and streamed to every router and enforcer of the labels it touches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import uuid
from collections.abc import Generator

import uvicorn

from adapter.auth import Authenticator, load_secret
from adapter.cache import SnapshotCache
from adapter.deploy_service import DeploymentService, start_deploy_server
from adapter.deployments import Registry
from adapter.metrics import AdapterMetrics
from adapter.rest import AdapterState, create_app
from adapter.settings import AdapterSettings
from adapter.xds import AdsServicer, XdsStatus, start_xds_server
from wsgate_common import grpc_tls
from wsgate_common.args import Parser
from wsgate_common.backoff import Backoff
from wsgate_common.logs import setup_logging
from wsgate_common.pki import ensure_pki
from wsgate_common.safety import default_user_problem
from wsgate_common.settings import parse_users

log = logging.getLogger("adapter")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="wsgate adapter",
        description=(
            "Compile API definitions and serve them over xDS. REST API for the CLI on "
            "--rest-port (HTTPS), DeploymentService gRPC for the control plane on "
            "--deploy-port, ADS for routers and enforcers on --xds-port. Every flag "
            "overrides its WSGATE_* environment variable; users come from "
            "WSGATE_ADAPTER_USERS ('name:password,...')."
        ),
    )
    parser.add_argument("--host", help="bind address (WSGATE_ADAPTER_HOST, default 0.0.0.0)")
    parser.add_argument(
        "--rest-port", "--port", type=int, help="HTTPS REST port (WSGATE_ADAPTER_REST_PORT, 9843)"
    )
    parser.add_argument(
        "--xds-port", type=int, help="xDS ADS port (WSGATE_ADAPTER_XDS_PORT, 18000)"
    )
    parser.add_argument(
        "--deploy-port", type=int, help="deploy gRPC port (WSGATE_ADAPTER_DEPLOY_PORT, 18001)"
    )
    parser.add_argument("--data-dir", help="state directory (WSGATE_DATA_DIR, default .wsgate)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (WSGATE_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="(WSGATE_LOG_FORMAT)")
    parser.add_argument(
        "--insecure-dev",
        action="store_const",
        const=True,
        help="start even on a non-loopback address with the built-in admin:admin user "
        "(WSGATE_INSECURE_DEV; demos only)",
    )
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace) -> AdapterSettings:
    overrides = {
        "adapter_host": args.host,
        "adapter_rest_port": args.rest_port,
        "adapter_xds_port": args.xds_port,
        "adapter_deploy_port": args.deploy_port,
        "data_dir": args.data_dir,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "insecure_dev": args.insecure_dev,
    }
    return AdapterSettings(**{k: v for k, v in overrides.items() if v is not None})


class _Uvicorn(uvicorn.Server):
    """uvicorn inside our loop: we own SIGTERM/SIGINT, so uvicorn must not capture them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(settings: AdapterSettings, stop: asyncio.Event) -> None:
    """Run every server until ``stop`` is set, then shut them down in order."""
    pki = ensure_pki(settings.pki_dir)
    tls = grpc_tls.for_settings(settings)  # before any listener: bad cert files stop the start
    log.info("gRPC (xDS, deploy): %s", grpc_tls.summary(tls))
    boot_id = str(uuid.uuid4())
    cache = SnapshotCache(epoch=boot_id[:8])
    registry = Registry(cache, settings.apis_dir)
    loaded = registry.load()
    if loaded:
        log.info("restored %d CLI-deployed APIs from %s", loaded, settings.apis_dir)
    xds_status = XdsStatus()
    auth = Authenticator(parse_users(settings.adapter_users), load_secret(settings.adapter_dir))
    metrics = AdapterMetrics(registry, xds_status)
    state = AdapterState(
        registry,
        auth,
        xds_status,
        boot_id,
        metrics=metrics,
        budget=settings.document_budget,
        backoff=Backoff(settings.backoff_policy),
    )

    host = settings.adapter_host
    # Bind the REST socket ourselves: a taken port is then a clean OSError, not uvicorn's exit.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rest_socket = socket.create_server((host, settings.adapter_rest_port), family=family)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(rest_socket.close)
        xds_server, xds_port = await start_xds_server(
            AdsServicer(cache, xds_status), host, settings.adapter_xds_port, tls
        )
        stack.push_async_callback(xds_server.stop, 1)
        deploy_server, deploy_port = await start_deploy_server(
            DeploymentService(registry, boot_id, metrics), host, settings.adapter_deploy_port, tls
        )
        stack.push_async_callback(deploy_server.stop, 1)
        config = uvicorn.Config(
            create_app(state),
            ssl_certfile=str(pki.cert),
            ssl_keyfile=str(pki.key),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        rest = _Uvicorn(config)
        rest_task = asyncio.create_task(rest.serve(sockets=[rest_socket]))
        stack.push_async_callback(_stop_rest, rest, rest_task)
        while not rest.started:
            if rest_task.done():
                raise OSError(f"REST server on port {settings.adapter_rest_port} did not start")
            await asyncio.sleep(0.05)
        state.ready = True
        log.info(
            "adapter up (boot %s): REST https://%s:%d/api/mgw/adapter/0.1, xDS :%d, deploy :%d",
            boot_id,
            host,
            settings.adapter_rest_port,
            xds_port,
            deploy_port,
        )
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_task, rest_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        state.ready = False
    log.info("adapter stopped")


async def _stop_rest(rest: uvicorn.Server, task: asyncio.Task[None]) -> None:
    rest.should_exit = True
    try:
        await asyncio.wait_for(task, 5)
    except (Exception, SystemExit, asyncio.CancelledError) as exc:
        log.debug("REST server ended with %r", exc)


async def _main(settings: AdapterSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(settings, stop)
    except (OSError, ValueError) as exc:  # ValueError: unusable gRPC certificate files
        log.error("cannot start: %s", exc)
        return 1
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        settings = build_settings(args)
        users = parse_users(settings.adapter_users)
    except ValueError as exc:
        print(f"wsgate adapter: invalid settings: {exc}")
        return 2
    problem = default_user_problem(
        "adapter",
        settings.adapter_host,
        users,
        "WSGATE_ADAPTER_USERS",
        "WSGATE_ADAPTER_HOST",
        settings.insecure_dev,
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    setup_logging("adapter", settings.log_level, settings.log_format)
    # Plain asyncio: the adapter is not on the data path, and grpc.aio is at home here.
    return asyncio.run(_main(settings))
