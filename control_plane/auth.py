"""HTTP Basic authentication against ``WSGATE_CP_USERS`` and role checks per API.

The publisher API needs the ``publisher`` role, the developer portal ``subscriber``, the admin
API ``admin`` (which implies the other two); see ``roles.py``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from control_plane.errors import ApiError
from control_plane.roles import ADMIN, PUBLISHER, SUBSCRIBER
from wsgate_common.backoff import (
    Backoff,
    keys_for,
    log_failure,
    retry_header,
    too_many_description,
)

log = logging.getLogger(__name__)

_basic = HTTPBasic(auto_error=False, realm="wsgate")


def current_user(
    request: Request, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> str:
    """The authenticated user's name; 401 with a Basic challenge otherwise."""
    users: dict[str, str] = request.app.state.users
    if credentials is not None:
        backoff: Backoff = request.app.state.auth_backoff
        address = request.client.host if request.client else ""
        keys = keys_for(credentials.username, address)
        wait = backoff.retry_after(keys)
        if wait > 0:
            raise ApiError(
                429, too_many_description(wait), headers={"Retry-After": retry_header(wait)}
            )
        expected = users.get(credentials.username)
        # compare_digest even for unknown users, so timing does not reveal who exists.
        given = credentials.password.encode()
        if secrets.compare_digest(given, (expected or "\0").encode()) and expected is not None:
            backoff.succeeded(keys[:1])
            return credentials.username
        log_failure(log, credentials.username, address, backoff.failed(keys))
        description = "Wrong user name or password for a control-plane user"
    else:
        description = "Authentication required: send HTTP Basic credentials of a control-plane user"
    raise ApiError(401, description, headers={"WWW-Authenticate": 'Basic realm="wsgate"'})


def user_roles(request: Request, user: str) -> frozenset[str]:
    roles: dict[str, frozenset[str]] = request.app.state.roles
    return roles.get(user, frozenset())


def is_admin(request: Request, user: str) -> bool:
    return ADMIN in user_roles(request, user)


def _requiring(role: str, api: str) -> Callable[[Request, str], str]:
    def check(request: Request, user: Annotated[str, Depends(current_user)]) -> str:
        if role not in user_roles(request, user):
            raise ApiError(403, f"user {user!r} lacks the {role!r} role that the {api} requires")
        return user

    return check


User = Annotated[str, Depends(current_user)]
Publisher = Annotated[str, Depends(_requiring(PUBLISHER, "publisher API"))]
Subscriber = Annotated[str, Depends(_requiring(SUBSCRIBER, "developer portal API"))]
Admin = Annotated[str, Depends(_requiring(ADMIN, "admin API"))]
