"""The FastAPI application: ``create_app(settings)`` wires routers, errors, DB and the adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from control_plane import db
from control_plane.errors import install_error_handlers
from control_plane.push import AdapterClient, AdapterSync, BlockingGateway
from control_plane.routers import PUBLISHER_PREFIX, apis, lifecycle, revisions
from control_plane.services import deployments
from control_plane.settings import ControlPlaneSettings

log = logging.getLogger(__name__)


def create_app(settings: ControlPlaneSettings) -> FastAPI:
    """Build the app; the database is migrated and the adapter sync started in its lifespan.

    Raises:
        ValueError: ``cp_users`` is malformed.
    """
    engine = db.make_engine(settings.resolved_database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(db.migrate, engine)
        client = AdapterClient(settings.cp_adapter_address, settings.cp_adapter_timeout)
        sync = AdapterSync(
            client, deployments.loader(app.state.sessionmaker), settings.cp_sync_interval
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
        description="Publisher REST API (WSO2 API-M v4 style) for WebSocket APIs.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.users = settings.users
    app.state.sessionmaker = db.make_sessionmaker(engine)
    install_error_handlers(app)
    for router in (lifecycle.router, apis.router, revisions.router):
        app.include_router(router, prefix=PUBLISHER_PREFIX)

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
