"""`wsgate echo-backend`: the sample WebSocket backend the example APIs point at.

It echoes every text and binary message at any path, so a user can see a message travel
client -> router -> backend -> router -> client. A close frame is answered with the same code
(the websockets library echoes the peer's close frame, as RFC 6455 section 5.5.1 suggests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from http import HTTPStatus

from pydantic_settings import SettingsConfigDict
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from wsgate_common.args import Parser
from wsgate_common.logs import setup_logging
from wsgate_common.settings import CommonSettings

log = logging.getLogger("wsgate.echo")


class EchoSettings(CommonSettings):
    """``WSGATE_ECHO_HOST`` / ``WSGATE_ECHO_PORT``; flags override them."""

    model_config = SettingsConfigDict(env_prefix="WSGATE_", extra="ignore")

    echo_host: str = "0.0.0.0"
    echo_port: int = 8765


def _is_upgrade(request: Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


def health(connection: ServerConnection, request: Request) -> Response | None:
    """Answer plain GET /health and /ready so supervisors can probe the backend over HTTP."""
    if not _is_upgrade(request) and request.path.split("?")[0] in ("/health", "/ready"):
        response = connection.respond(HTTPStatus.OK, '{"status":"healthy"}\n')
        response.headers["Content-Type"] = "application/json"
        return response
    return None


async def echo(ws: ServerConnection) -> None:
    """Send every message back unchanged until the client goes away."""
    peer = ws.remote_address
    path = ws.request.path if ws.request else "?"
    log.info("connected %s %s", peer, path)
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass
    log.info("closed %s %s code=%s", peer, path, ws.close_code)


async def serve_forever(host: str, port: int, stop: asyncio.Future[None]) -> None:
    """Serve until ``stop`` resolves, then close every connection (code 1001)."""
    async with serve(echo, host, port, process_request=health, compression=None) as server:
        log.info("echo backend listening on ws://%s:%d (any path)", host, port)
        await stop
        server.close()
        await server.wait_closed()
    log.info("echo backend stopped")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="wsgate echo-backend",
        description="Sample WebSocket backend: echoes text and binary messages at any path.",
    )
    parser.add_argument("--host", help="interface to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8765)")
    return parser.parse_args(argv)


async def _run(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    await serve_forever(host, port, stop)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = EchoSettings()
    setup_logging("echo-backend", settings.log_level, settings.log_format)
    # The library logs every health probe (two lines each, every few seconds under `wsgate up`);
    # this module logs the connections that matter itself.
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    host = args.host or settings.echo_host
    port = args.port if args.port is not None else settings.echo_port
    try:
        asyncio.run(_run(host, port))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    with contextlib.suppress(Exception):
        logging.shutdown()
    return 0
