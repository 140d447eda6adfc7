"""Sign in and out of both consoles: ``/publisher/login``, ``/devportal/login``, ``.../logout``.

Users and passwords are the control plane's (``WSGATE_CP_USERS``); the role a console needs is
checked on every page (``core.PublisherPage`` / ``core.DevportalPage``), not here, so a user
without it gets a readable 403 page after signing in.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from control_plane.web.core import CONSOLES, TEMPLATES, Csrf, base_context, get_session, safe_next
from control_plane.web.session import MAX_AGE, SignedOut

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


def password_ok(users: dict[str, str], name: str, password: str) -> bool:
    """Constant-time compare, also for unknown users (timing does not reveal who exists)."""
    expected = users.get(name)
    matches = secrets.compare_digest(password.encode(), (expected or "\0").encode())
    return matches and expected is not None


class FailedSignIns:
    """Backoff per user name after failed sign-ins: ``FREE`` failures are free, then each
    further one doubles the wait (1 s, 2 s, 4 s ... up to ``LONGEST``) before that name may try
    again; a success clears it. Pure but for the clock passed in; in memory, per process.

    (The REST APIs' HTTP Basic auth has its own; the lead may merge the two.)
    """

    FREE = 5
    LONGEST = 300.0
    #: Failures older than this are forgotten.
    WINDOW = 900.0

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (count, last failure)

    def wait(self, name: str, now: float) -> float:
        """Seconds before ``name`` may try again (0 when it may now)."""
        count, last = self._failures.get(name, (0, 0.0))
        if count < self.FREE or now - last > self.WINDOW:
            return 0.0
        delay = min(self.LONGEST, 2.0 ** (count - self.FREE))
        return max(0.0, last + delay - now)

    def failed(self, name: str, now: float) -> None:
        count, last = self._failures.get(name, (0, 0.0))
        if now - last > self.WINDOW:
            count = 0
        self._failures[name] = (count + 1, now)
        if len(self._failures) > 10_000:  # many made-up names: forget the oldest half
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:5_000]:
                self._failures.pop(key, None)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)


def _login_page(
    request: Request,
    console: str,
    next_path: str,
    username: str = "",
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> HTMLResponse:
    session = get_session(request)
    context = base_context(request, console, session.user) | {
        "next": next_path,
        "username": username,
        "errors": errors or {},
    }
    return TEMPLATES.TemplateResponse(request, "login.html", context, status_code=status)


def _routes(console: str) -> None:
    prefix = CONSOLES[console][0]

    def show(request: Request, next: str = "") -> Response:
        return _login_page(request, console, safe_next(console, next))

    def submit(
        request: Request,
        username: Annotated[str, Form(max_length=255)] = "",
        password: Annotated[str, Form(max_length=1024)] = "",
        next: Annotated[str, Form(max_length=2048)] = "",
    ) -> Response:
        target = safe_next(console, next)
        errors: dict[str, list[str]] = {}
        if not username.strip():
            errors["username"] = ["Enter your username."]
        if not password:
            errors["password"] = ["Enter your password."]
        name = username.strip()
        failures: FailedSignIns = request.app.state.console_failed_sign_ins
        now = time.monotonic()
        wait = failures.wait(name, now) if not errors else 0.0
        if wait:
            errors["__all__"] = [
                f"Too many failed sign-ins for this user: try again in {math.ceil(wait)} s."
            ]
            return _login_page(request, console, target, username, errors, status=429)
        if not errors and not password_ok(request.app.state.users, name, password):
            log.info("console sign-in failed for user %r", name[:64])
            failures.failed(name, now)
            errors["__all__"] = ["Wrong username or password."]
        if errors:
            return _login_page(request, console, target, username, errors, status=400)
        failures.succeeded(name)
        get_session(request).sign_in(name)
        return RedirectResponse(target, status_code=303)

    def logout(request: Request) -> Response:
        session = get_session(request)
        sid = session.sign_out()
        if sid:
            signed_out: SignedOut = request.app.state.console_signed_out
            now = time.time()
            signed_out.prune(now)
            signed_out.add(sid, now + MAX_AGE)
        session.flash("You have signed out.")
        return RedirectResponse(prefix + "/login", status_code=303)

    handlers: list[tuple[str, str, Callable[..., Response], list[object]]] = [
        ("GET", "/login", show, []),
        ("POST", "/login", submit, [Csrf]),
        ("POST", "/logout", logout, [Csrf]),
    ]
    for method, path, endpoint, dependencies in handlers:
        router.add_api_route(
            prefix + path,
            endpoint,
            methods=[method],
            response_class=HTMLResponse,
            dependencies=dependencies,  # type: ignore[arg-type]
            name=f"{console}-{path.strip('/')}-{method.lower()}",
        )


for _console in CONSOLES:
    _routes(_console)
