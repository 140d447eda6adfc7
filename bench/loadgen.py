"""Ping-pong load generator: N connections, one message in flight each, for D seconds.

Prints one JSON object: messages/s, round-trip percentiles, errors. picows + uvloop, so that
on this 2-core machine the generator costs far less CPU than the proxy it measures.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = uvloop.run(run(args.url, args.conns, args.size, args.seconds, headers))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
