"""What every console page shares: the session middleware, security headers, sign-in and role
dependencies, CSRF, rendering and HTML error pages.

A page route looks like::

    @router.get("/apis")
    def list_apis(page: PublisherPage, session: DbSession) -> HTMLResponse:
        return render(page, "publisher/apis.html", {...})

    @router.post("/apis", dependencies=[Csrf])
    def create(page: PublisherPage, ...) -> Response: ...
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.errors import ApiError, describe_validation
from control_plane.roles import PUBLISHER, SUBSCRIBER
from control_plane.settings import ControlPlaneSettings
from control_plane.web.session import COOKIE, Session, SessionCodec, SignedOut

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/console/static"

#: console -> (URL prefix, role it needs, title shown in the header)
CONSOLES: dict[str, tuple[str, str, str]] = {
    "publisher": ("/publisher", PUBLISHER, "Publisher"),
    "devportal": ("/devportal", SUBSCRIBER, "Developer Portal"),
}
PAGE_PREFIXES = (*(prefix for prefix, _, _ in CONSOLES.values()), STATIC_PREFIX)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def is_page(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PAGE_PREFIXES)


def console_of(path: str) -> str:
    for name, (prefix, _, _) in CONSOLES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return name
    return "publisher"


# --- security headers ---------------------------------------------------------------------


def router_origins(settings: ControlPlaneSettings, request_host: str) -> list[str]:
    """The ws and wss origins of the router as a browser on this page reaches them: the host
    it used for the console (or ``cp_router_host``) with the router's ports."""
    host = settings.cp_router_host or request_host or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return [
        f"wss://{host}:{settings.cp_router_wss_port}",
        f"ws://{host}:{settings.cp_router_ws_port}",
    ]


def content_security_policy(connect: list[str]) -> str:
    """Everything from this origin only; scripts and styles from files, never inline."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src " + " ".join(["'self'", *connect]),
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(settings: ControlPlaneSettings, request_host: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(router_origins(settings, request_host)),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


# --- the middleware -----------------------------------------------------------------------


def install_session_middleware(app: FastAPI, codec: SessionCodec) -> None:
    """For console paths only: load the session into ``request.state.session``, write it
    back when changed, and add the security headers. The REST APIs are untouched."""
    settings: ControlPlaneSettings = app.state.settings
    signed_out = SignedOut()
    app.state.console_signed_out = signed_out

    @app.middleware("http")
    async def console_session(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not is_page(request.url.path):
            return await call_next(request)
        started = time.perf_counter()
        raw = request.cookies.get(COOKIE)
        data = codec.loads(raw) if raw else None
        if data is not None and data.get("sid") in signed_out:
            data = None  # signed out: this copy of the cookie is worth nothing now
        session = Session(data)
        request.state.session = session
        response = await call_next(request)
        if session.modified:
            response.set_cookie(
                COOKIE,
                codec.dumps(session.data),
                max_age=codec.max_age,
                path="/",
                secure=True,
                httponly=True,
                samesite="lax",
            )
        headers = security_headers(settings, request.url.hostname or "")
        if request.url.path.startswith(STATIC_PREFIX):
            headers["Cache-Control"] = "public, max-age=300"
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        elapsed = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
        return response


# --- who is signed in ---------------------------------------------------------------------


class LoginRequired(Exception):
    def __init__(self, console: str, next_path: str) -> None:
        super().__init__(console)
        self.console = console
        self.next_path = next_path


class PageError(Exception):
    """An HTML error page (403 missing role, 403 CSRF, 404, ...)."""

    def __init__(self, status: int, message: str, title: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or HTTPStatus(status).phrase


@dataclass
class Page:
    """The signed-in user of a console page, with the request and its session."""

    request: Request
    session: Session
    console: str
    user: str
    roles: frozenset[str]

    @property
    def prefix(self) -> str:
        return CONSOLES[self.console][0]

    def url(self, path: str = "") -> str:
        return self.prefix + path

    def redirect(self, path: str, flash: str = "", kind: str = "info") -> RedirectResponse:
        """303 to a page of this console (POST-redirect-GET), with an optional flash."""
        if flash:
            self.session.flash(flash, kind)
        return RedirectResponse(self.url(path), status_code=303)


def get_session(request: Request) -> Session:
    session: Session | None = getattr(request.state, "session", None)
    if session is None:  # a page route outside the middleware's paths: a programming error
        raise RuntimeError(f"{request.url.path} is not under a console prefix")
    return session


def _page_for(console: str) -> Callable[[Request], Page]:
    _, role, _ = CONSOLES[console]

    def dependency(request: Request) -> Page:
        session = get_session(request)
        user = session.user
        users: dict[str, str] = request.app.state.users
        if user is None or user not in users:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(console, target)
        all_roles: dict[str, frozenset[str]] = request.app.state.roles
        roles = all_roles.get(user, frozenset())
        if role not in roles:
            raise PageError(
                403,
                f"You are signed in as {user}, who lacks the '{role}' role the "
                f"{CONSOLES[console][2]} needs. Sign out and sign in as another user, or ask "
                "an administrator to grant the role (WSGATE_CP_ROLES).",
                "Access denied",
            )
        return Page(request, session, console, user, roles)

    return dependency


PublisherPage = Annotated[Page, Depends(_page_for("publisher"))]
DevportalPage = Annotated[Page, Depends(_page_for("devportal"))]


async def check_csrf(request: Request) -> None:
    """The form's ``csrf_token`` (or an ``X-CSRF-Token`` header, for htmx/fetch) must be the
    session's; 403 page otherwise."""
    session = get_session(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # starlette caches it for the route's Form() params
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    if not session.csrf_ok(given):
        raise PageError(
            403,
            "The form was missing its security token or it did not match your session (it "
            "may have expired, or you signed in again in another tab). Go back, reload the "
            "page and submit again.",
            "Request refused",
        )


Csrf = Depends(check_csrf)


# --- rendering ----------------------------------------------------------------------------


def base_context(request: Request, console: str, user: str | None) -> dict[str, Any]:
    session = get_session(request)
    prefix, _, title = CONSOLES[console]
    return {
        "request": request,
        "console": console,
        "console_prefix": prefix,
        "console_title": title,
        "user": user,
        "csrf_field": CSRF_FIELD,
        "csrf_token": session.csrf,
        "flashes": session.pop_flashes(),
        "static": STATIC_PREFIX,
    }


def render(
    page: Page, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    merged = base_context(page.request, page.console, page.user) | {"page": page}
    return TEMPLATES.TemplateResponse(
        page.request, template, merged | (context or {}), status_code=status
    )


def render_error(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    console = console_of(request.url.path)
    session: Session | None = getattr(request.state, "session", None)
    if session is None:
        session = Session(None)
        request.state.session = session
    context = base_context(request, console, session.user) | {
        "status": status,
        "title": title,
        "message": message,
    }
    return TEMPLATES.TemplateResponse(request, "error.html", context, status_code=status)


def safe_next(console: str, value: str | None) -> str:
    """Only a path inside the same console may follow a sign-in (no open redirect)."""
    prefix = CONSOLES[console][0]
    if not value:
        return prefix
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//") or "\\" in value:
        return prefix
    if not (parts.path == prefix or parts.path.startswith(prefix + "/")):
        return prefix
    return value


def install_error_pages(app: FastAPI) -> None:
    """Console paths get HTML error pages; every other path keeps its JSON errors."""
    json_handlers = dict(app.exception_handlers)

    def delegate(kind: type[Exception]) -> Callable[[Request, Exception], Awaitable[Response]]:
        original = json_handlers[kind]

        async def handler(request: Request, exc: Exception) -> Response:
            if not is_page(request.url.path):
                response: Response = await original(request, exc)
                return response
            if isinstance(exc, ApiError):
                status, message = exc.status, exc.description
            elif isinstance(exc, StarletteHTTPException):
                status = exc.status_code
                message = exc.detail if isinstance(exc.detail, str) else ""
                if status == 404:
                    message = "There is no such page."
            elif isinstance(exc, RequestValidationError):
                status, message = 400, "The form was not accepted: " + describe_validation(exc)
            else:
                status, message = 400, "The request was not understood."
            return render_error(request, status, HTTPStatus(status).phrase, message)

        return handler

    for kind in (ApiError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(kind, delegate(kind))

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        login = CONSOLES[exc.console][0] + "/login?next=" + quote(exc.next_path, safe="/")
        return RedirectResponse(login, status_code=303)

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return render_error(request, exc.status, exc.title, exc.message)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(PageError, page_error)
