"""``wsgate control-plane``: the publisher REST API over HTTPS, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import uvicorn
from pydantic import ValidationError

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from wsgate_common.args import Parser
from wsgate_common.logs import setup_logging
from wsgate_common.pki import ensure_pki
from wsgate_common.safety import default_user_problem

log = logging.getLogger("control_plane")

#: flag -> settings field; every flag is optional and overrides its WSGATE_* variable.
_FLAGS = {
    "host": "cp_host",
    "port": "cp_port",
    "database_url": "database_url",
    "adapter_address": "cp_adapter_address",
    "users": "cp_users",
    "roles": "cp_roles",
    "token_issuer": "cp_token_issuer",
    "data_dir": "data_dir",
    "log_level": "log_level",
    "log_format": "log_format",
    "insecure_dev": "insecure_dev",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="wsgate control-plane",
        description="Serve the publisher, admin and developer portal REST APIs "
        "(https://HOST:PORT/api/am/{publisher/v4,admin/v4,devportal/v3}, docs at /docs) and "
        "the OAuth2 token service (/oauth2/token); push deployed API revisions and the "
        "subscription data to the adapter over gRPC.",
    )
    parser.add_argument("--host", help="address to listen on (WSGATE_CP_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTPS port (WSGATE_CP_PORT, 9443)")
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (WSGATE_DATABASE_URL; "
        "default sqlite file <data-dir>/control-plane.db)",
    )
    parser.add_argument(
        "--adapter-address",
        help="adapter deployment gRPC host:port (WSGATE_CP_ADAPTER_ADDRESS, localhost:18001)",
    )
    parser.add_argument("--users", help="Basic auth users 'u:p,u2:p2' (WSGATE_CP_USERS)")
    parser.add_argument(
        "--roles",
        help="roles per user 'dev=subscriber;pub=publisher,subscriber' (WSGATE_CP_ROLES; "
        "unlisted: admin for 'admin', subscriber for others)",
    )
    parser.add_argument(
        "--token-issuer",
        help="iss of issued access tokens (WSGATE_CP_TOKEN_ISSUER, "
        "https://localhost:9443/oauth2/token)",
    )
    parser.add_argument("--data-dir", help="state and PKI directory (WSGATE_DATA_DIR, .wsgate)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (WSGATE_LOG_LEVEL)")
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log line format (WSGATE_LOG_FORMAT)"
    )
    parser.add_argument(
        "--insecure-dev",
        action="store_const",
        const=True,
        help="start even on a non-loopback address with the built-in admin:admin user "
        "(WSGATE_INSECURE_DEV; demos only)",
    )
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace) -> ControlPlaneSettings:
    overrides: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in _FLAGS.items()
        if getattr(args, flag) is not None
    }
    return ControlPlaneSettings(**overrides)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
        users = settings.users
        settings.roles  # noqa: B018 (validates WSGATE_CP_ROLES)
    except (ValidationError, ValueError) as exc:
        print(f"wsgate control-plane: invalid settings: {exc}", file=sys.stderr)
        return 2
    problem = default_user_problem(
        "control-plane",
        settings.cp_host,
        users,
        "WSGATE_CP_USERS",
        "WSGATE_CP_HOST",
        settings.insecure_dev,
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    setup_logging("control-plane", settings.log_level, settings.log_format)
    if not users:
        log.warning("no users configured (WSGATE_CP_USERS): every API call will be refused")
    pki = ensure_pki(settings.pki_dir)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.cp_host,
        port=settings.cp_port,
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.key),
        log_config=None,
        access_log=False,
        lifespan="on",
        # Idle keep-alive clients must not hold a SIGTERM up for long.
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; these handlers
    # absorb that, so a SIGTERM ends in a clean exit code 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    log.info(
        "starting on https://%s:%d (database %s)",
        settings.cp_host,
        settings.cp_port,
        settings.resolved_database_url.split("@")[-1],
    )
    try:
        asyncio.run(server.serve())
    except SystemExit as exc:
        # uvicorn exits this way when the port is taken or the lifespan (migration) fails.
        log.error("control plane stopped: startup failed (exit code %s)", exc.code)
        return 1
    except Exception:
        log.exception("control plane stopped by an unexpected error")
        return 1
    if not server.started:
        return 1
    log.info("control plane stopped")
    return 0
