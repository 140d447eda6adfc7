"""The FastAPI application: ``create_app(settings)`` wires routers, errors, DB and the adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from control_plane import apikeys, db, signing
from control_plane.errors import install_error_handlers
from control_plane.metrics import MeteredAdapterClient
from control_plane.metrics import install as install_metrics
from control_plane.push import AdapterSync, BlockingGateway
from control_plane.routers import (
    PUBLISHER_PREFIX,
    admin,
    apis,
    devportal,
    lifecycle,
    oauth,
    revisions,
    scopes,
    subscriptions,
    transfer,
)
from control_plane.services import deployments, gateway_data
from control_plane.services.oauth import TokenIssuer
from control_plane.settings import ControlPlaneSettings
from control_plane.web import install as install_consoles
from wsgate_common import api_docs, grpc_tls
from wsgate_common.backoff import Backoff
from wsgate_common.body_limit import BodyLimitMiddleware
from wsgate_common.request_ids import RequestIdMiddleware

log = logging.getLogger(__name__)


def create_app(settings: ControlPlaneSettings) -> FastAPI:
    """Build the app; the database is migrated and the adapter sync started in its lifespan.

    Raises:
        ValueError: ``cp_users`` or ``cp_roles`` is malformed, or the signing key file is not
            an RSA key.
    """
    engine = db.make_engine(settings.resolved_database_url, settings.database_busy_timeout)
    tls = grpc_tls.for_settings(settings)  # gRPC to the adapter
    roles = settings.roles
    issuer = TokenIssuer(
        key=signing.load_or_create(settings.state_dir),
        issuer=settings.cp_token_issuer,
        default_validity=settings.cp_token_validity,
        roles=roles,
        api_key_issuer=apikeys.api_key_issuer(settings.cp_token_issuer, settings.cp_api_key_issuer),
        api_key_max_validity=settings.cp_api_key_max_validity,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(db.migrate, engine)
        client = MeteredAdapterClient(
            settings.cp_adapter_address, settings.cp_adapter_timeout, tls, metrics=metrics
        )
        sync = AdapterSync(
            client,
            deployments.loader(app.state.sessionmaker),
            settings.cp_sync_interval,
            load_subscriptions=gateway_data.loader(app.state.sessionmaker, issuer),
            load_api=deployments.api_loader(app.state.sessionmaker),
            max_backoff=settings.cp_sync_max_backoff,
        )
        app.state.sync = sync
        app.state.gateway = BlockingGateway(client, sync, asyncio.get_running_loop())
        task = asyncio.create_task(sync.run(), name="adapter-sync")
        log.info("control plane ready; adapter at %s", settings.cp_adapter_address)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()
            engine.dispose()

    app = FastAPI(
        title="wsgate control plane",
        description="WSO2 API-M style REST APIs for WebSocket APIs: publisher "
        "(/api/am/publisher/v4), admin (/api/am/admin/v4), developer portal "
        "(/api/am/devportal/v3) and the OAuth2 token service (/oauth2).",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by api_docs without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.users = settings.users
    app.state.auth_backoff = Backoff(settings.backoff_policy)
    app.state.roles = roles
    app.state.token_issuer = issuer
    app.state.sessionmaker = db.make_sessionmaker(engine)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.cp_max_request_bytes,
        setting="WSGATE_CP_MAX_REQUEST_BYTES",
    )
    app.add_middleware(RequestIdMiddleware)  # X-Request-ID: the client's if safe, else new
    metrics = install_metrics(app)  # /metrics; requests and adapter pushes
    # transfer and lifecycle first: /apis/export and /apis/change-lifecycle must not be taken
    # for an /apis/{apiId}.
    for router in (
        transfer.router,
        lifecycle.router,
        apis.router,
        revisions.router,
        scopes.router,
        subscriptions.router,
    ):
        app.include_router(router, prefix=PUBLISHER_PREFIX)
    app.include_router(admin.router, prefix=admin.ADMIN_PREFIX)
    app.include_router(devportal.router, prefix=devportal.DEVPORTAL_PREFIX)
    app.include_router(oauth.router)
    install_consoles(app, settings)  # /publisher and /devportal pages (control_plane/web)
    api_docs.install(app)  # /docs with Swagger UI's files from this process

    @app.get("/health", tags=["Health"])
    def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/ready", tags=["Health"])
    def ready(request: Request) -> JSONResponse:
        """200 once the database answers; also says whether the adapter is reachable."""
        sync: AdapterSync | None = getattr(request.app.state, "sync", None)
        adapter = {None: "unknown", True: "reachable", False: "unreachable"}[
            sync.reachable if sync else None
        ]
        try:
            db.ping(engine)
        except Exception as exc:
            log.warning("not ready: database unreachable: %s", exc)
            body = {"status": "not ready", "database": "unreachable", "adapter": adapter}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "database": "ok", "adapter": adapter})

    return app
