"""The Publisher and Developer Portal web consoles (server-rendered HTML over the same service
layer as the REST APIs). See README.md in this directory for how to add a page."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from control_plane.settings import ControlPlaneSettings
from control_plane.web import auth_pages, core, devportal, devportal_apps, devportal_keys, publisher
from control_plane.web.session import SessionCodec, load_or_create_secret


def install(app: FastAPI, settings: ControlPlaneSettings) -> None:
    """Mount the consoles on ``app``: call after the REST routers and error handlers."""
    codec = SessionCodec(load_or_create_secret(settings.state_dir))
    core.install_session_middleware(app, codec)
    core.install_error_pages(app)
    app.mount(core.STATIC_PREFIX, StaticFiles(directory=core.STATIC_DIR), name="console-static")
    app.state.console_failed_sign_ins = auth_pages.FailedSignIns()
    app.include_router(auth_pages.router)
    app.include_router(publisher.router)
    app.include_router(devportal.router)
    app.include_router(devportal_apps.router)
    app.include_router(devportal_keys.router)
