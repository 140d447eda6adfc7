"""The enforcer's HTTP side (plain HTTP, internal): /testkey, /jwks, /health, /ready, /metrics.

The router forwards ``/testkey`` on :9090/:9095 here, so
``curl -X POST https://localhost:9095/testkey -d scope=read -u admin:admin`` yields a raw JWT.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Mapping

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from enforcer.denials import Denial
from enforcer.testkey import DEFAULT_VALIDITY, TestKeySigner, basic_auth_user, parse_request
from wsgate_common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

TESTKEY_DISABLED = (
    "Test keys are disabled on this gateway (WSGATE_TESTKEY_ENABLED=false); "
    "use an access token from a key manager"
)


def error_response(denial: Denial, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"code": denial.code, "message": denial.message, "description": denial.description},
        status_code=denial.http_status,
        headers=dict(headers or {}),
    )


def build_app(
    signer: TestKeySigner,
    users: Mapping[str, str],
    is_ready: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    *,
    metrics: Callable[[], bytes] | None = None,
    testkeys: bool = True,
    max_validity: int = DEFAULT_VALIDITY,
) -> FastAPI:
    app = FastAPI(title="wsgate enforcer", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(Denial(exc.status_code, exc.status_code, str(exc.detail)))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/ready")
    async def ready() -> Response:
        if is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "not ready", "description": "no API policy snapshot applied yet"},
            status_code=503,
        )

    if metrics is not None:
        render = metrics

        @app.get("/metrics")
        async def metrics_endpoint() -> Response:
            return Response(render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/jwks")
    async def jwks() -> dict[str, list[dict[str, str]]]:
        return signer.jwks()

    @app.post("/testkey")
    async def testkey(request: Request) -> Response:
        """Issue a test key for the Basic-auth user; the body is the raw JWT."""
        if not testkeys:
            return error_response(Denial(404, 404, "Not Found", TESTKEY_DISABLED))
        try:
            user = basic_auth_user(request.headers.get("authorization"), users)
        except Denial as denial:
            return error_response(denial, {"WWW-Authenticate": 'Basic realm="wsgate"'})
        try:
            form = await request.form()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            scopes, validity, key_type = parse_request(fields, max_validity)
        except Denial as denial:
            return error_response(denial)
        except Exception:  # an unparsable body is the client's fault, not a crash
            return error_response(Denial(400, 400, "Bad Request", "Send a form-encoded body"))
        token = signer.issue(user, scopes, int(clock()), validity, key_type)
        return PlainTextResponse(token)

    return app


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process's own loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a busy port fails at start, not inside uvicorn.

    Raises:
        OSError: the address is taken or invalid.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app: FastAPI) -> EmbeddedServer:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return EmbeddedServer(config)
