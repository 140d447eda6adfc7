"""Ping-pong load generator: N connections, one message in flight each, for D seconds.

Prints one JSON object: messages/s, round-trip percentiles, errors. picows + uvloop, so that
on this 2-core machine the generator costs far less CPU than the proxy it measures.

``--handshakes``: instead, N workers each connect -> send one message -> read the echo ->
close, again and again; prints handshakes/s and the connect latency percentiles (time from
opening the TCP connection to the 101).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class PingPong(WSListener):
    def __init__(self, payload: bytes, samples: list[float], deadline: float) -> None:
        self.payload = payload
        self.samples = samples
        self.deadline = deadline
        self.sent_at = 0.0
        self.count = 0
        self.done = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.send(WSMsgType.BINARY, self.payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.BINARY:
            return
        now = time.perf_counter()
        self.count += 1
        if self.count % 8 == 0:  # sampling keeps the list small and the loop fast
            self.samples.append(now - self.sent_at)
        if now >= self.deadline:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent_at = now
        transport.send(WSMsgType.BINARY, self.payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run(url: str, conns: int, size: int, seconds: float, headers: dict[str, str]) -> dict:
    payload = os.urandom(size)
    samples: list[float] = []
    deadline = time.perf_counter() + 3600
    listeners: list[PingPong] = []
    for _ in range(conns):
        _, listener = await ws_connect(
            lambda: PingPong(payload, samples, deadline), url, extra_headers=headers
        )
        listeners.append(listener)  # type: ignore[arg-type]
    start = time.perf_counter()
    for lst in listeners:
        lst.deadline = start + seconds
        lst.start()
    await asyncio.wait_for(asyncio.gather(*(lst.done for lst in listeners)), seconds + 30)
    elapsed = time.perf_counter() - start
    total = sum(lst.count for lst in listeners)
    for lst in listeners:
        lst.transport.send_close()
        lst.transport.disconnect()
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000 if samples else 0.0

    return {
        "messages": total,
        "seconds": elapsed,
        "msgs_per_s": total / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


class OneEcho(WSListener):
    """Resolves ``echoed`` when the first data message comes back."""

    def __init__(self) -> None:
        self.echoed = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT) and not self.echoed.done():
            self.echoed.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.echoed.done():
            self.echoed.set_exception(ConnectionError("closed before the echo"))


async def handshakes(url: str, workers: int, seconds: float, headers: dict[str, str]) -> dict:
    payload = b"x" * 64
    connect_times: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                transport, listener = await ws_connect(OneEcho, url, extra_headers=headers)
                connect_times.append(time.perf_counter() - started)
                transport.send(WSMsgType.BINARY, payload)
                await asyncio.wait_for(listener.echoed, 10)  # type: ignore[attr-defined]
                transport.send_close()
                transport.disconnect()
                done += 1
            except Exception as exc:  # counted and shown: a refused handshake is a result too
                name = type(exc).__name__ + ": " + str(exc)[:80]
                errors[name] = errors.get(name, 0) + 1
                await asyncio.sleep(0.01)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    connect_times.sort()

    def pct(p: float) -> float:
        if not connect_times:
            return 0.0
        return connect_times[min(len(connect_times) - 1, int(p * len(connect_times)))] * 1000

    return {
        "handshakes": done,
        "seconds": elapsed,
        "handshakes_per_s": done / elapsed,
        "connect_p50_ms": pct(0.50),
        "connect_p99_ms": pct(0.99),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--handshakes", action="store_true", help="connect/echo/close loop")
    parser.add_argument("--workers", type=int, default=50, help="with --handshakes")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.handshakes:
        result = uvloop.run(handshakes(args.url, args.workers, args.seconds, headers))
    else:
        result = uvloop.run(run(args.url, args.conns, args.size, args.seconds, headers))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
