"""A websockets server on its own thread and event loop: the test backend that integration
tests inspect (what it received, what it negotiated) while real router processes talk to it."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection, serve


@dataclass
class ThreadedBackend:
    """Subclasses implement :meth:`handle`; ``start()`` listens on a free port of 127.0.0.1,
    ``close()`` stops the server and its thread."""

    #: websockets' max_size for incoming messages (None: any size).
    MAX_SIZE: ClassVar[int | None] = None

    port: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    ready: threading.Event = field(default_factory=threading.Event)
    stop: asyncio.Event | None = None
    thread: threading.Thread | None = None

    async def handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def main(self) -> None:
        self.stop = asyncio.Event()
        options: dict[str, Any] = {"max_size": self.MAX_SIZE}
        async with serve(self.handle, "127.0.0.1", 0, **options) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self.stop.wait()

    def run(self) -> None:
        self.loop.run_until_complete(self.main())

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the test backend did not start"

    def close(self) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        if self.thread is not None:
            self.thread.join(10)
