"""An ASGI middleware that refuses request bodies over a size, before the app reads them.

A ``Content-Length`` over the limit is answered 413 at once; a body without one (chunked) is
counted as it arrives and cut off with the same 413. The answer is the shared error body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int, setting: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.setting = setting

    def _description(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (the limit, {self.setting})"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._description())
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"code": 413, "message": "Content Too Large", "description": self._description()}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
