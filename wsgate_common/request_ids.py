"""``X-Request-ID``: taken from the client only in a safe shape, otherwise minted here, so that
nothing a client sends ends up as is in logs, analytics or the backend's headers."""

from __future__ import annotations

import os
import re
import threading
from typing import Any

SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RandomPool:
    """Random bytes from the OS, fetched 4 KiB at a time: a router mints an id and a
    WebSocket key per handshake, and one ``getrandom`` call each costs more than the rest."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._buffer = b""
        self._lock = threading.Lock()

    def take(self, count: int) -> bytes:
        with self._lock:
            if len(self._buffer) < count:
                self._buffer = os.urandom(max(self.size, count))
            taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken


RANDOM = RandomPool()


def new_request_id() -> str:
    """32 random hex digits (128 bits, as the uuid4 hex it replaces)."""
    return RANDOM.take(16).hex()


def safe_request_id(value: str | None) -> str:
    """``value`` when it is 1-64 of ``[A-Za-z0-9._-]``, else a new random id."""
    if value and SAFE_REQUEST_ID.fullmatch(value) and value.strip(".") != "":
        return value
    return new_request_id()


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
