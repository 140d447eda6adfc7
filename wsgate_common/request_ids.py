"""``X-Request-ID``: taken from the client only in a safe shape, otherwise minted here, so that
nothing a client sends ends up as is in logs, analytics or the backend's headers."""

from __future__ import annotations

import re
import uuid
from typing import Any

SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def safe_request_id(value: str | None) -> str:
    """``value`` when it is 1-64 of ``[A-Za-z0-9._-]``, else a new random id."""
    if value and SAFE_REQUEST_ID.fullmatch(value) and value.strip(".") != "":
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """ASGI middleware: every HTTP answer carries ``X-Request-ID`` (the client's when safe, a
    new one otherwise); the handlers find it in ``scope["state"]["request_id"]``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers") or []:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = safe_request_id(given)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers") or [] if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
