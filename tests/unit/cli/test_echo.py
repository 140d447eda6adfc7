"""The sample echo backend: text, binary, close codes, the HTTP health probe, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx
from websockets.asyncio.client import connect

from tests.procs import REPO, free_port, port_open, wait_for
from wsgate.echo import serve_forever


async def test_echoes_text_and_binary_at_any_path_and_mirrors_close_code() -> None:
    port = free_port()
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve_forever("127.0.0.1", port, stop))
    for _ in range(100):
        if port_open(port):
            break
        await asyncio.sleep(0.02)
    try:
        async with connect(f"ws://127.0.0.1:{port}/any/path?x=1") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
            await ws.close(4001, "bye")
        assert ws.close_code == 4001
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/health")
        assert answer.status_code == 200
        assert answer.json() == {"status": "healthy"}
    finally:
        stop.set_result(None)
        await asyncio.wait_for(server, 5)


def test_echo_backend_process_exits_zero_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsgate", "echo-backend", "--host", "127.0.0.1", f"--port={port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), 15, "echo backend to listen")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
