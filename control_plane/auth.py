"""HTTP Basic authentication against the users in ``WSGATE_CP_USERS``."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from control_plane.errors import ApiError

_basic = HTTPBasic(auto_error=False, realm="wsgate")


def current_user(
    request: Request, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> str:
    """The authenticated user's name; 401 with a Basic challenge otherwise."""
    users: dict[str, str] = request.app.state.users
    if credentials is not None:
        expected = users.get(credentials.username)
        # compare_digest even for unknown users, so timing does not reveal who exists.
        given = credentials.password.encode()
        if secrets.compare_digest(given, (expected or "\0").encode()) and expected is not None:
            return credentials.username
    raise ApiError(
        401,
        "Authentication required: send HTTP Basic credentials of a control-plane user",
        headers={"WWW-Authenticate": 'Basic realm="wsgate"'},
    )


User = Annotated[str, Depends(current_user)]
