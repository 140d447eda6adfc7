"""The floor of a handshake's enforcer round trip: gRPC Check calls alone, no WebSocket.

Starts the wsgate stack of bench/run.py, then fires HandshakeService.Check from this process
(the router's EnforcerClient, 16 in flight) for a few seconds and prints calls/s and the CPU
microseconds per call on the calling side (what the router pays) and in the enforcer. The
request names no deployed API, so the enforcer answers after its first lookup: what is
measured is gRPC (grpc.aio on both ends) plus the service's fixed per-call work.

    .venv/bin/python bench/checks.py --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run

from router.enforcer_client import EnforcerClient
from wsgate_common import grpc_tls
from wsgate_proto import enforcer_pb2


async def fire(
    address: str, tls: grpc_tls.GrpcTls, seconds: float, workers: int
) -> tuple[int, float]:
    client = EnforcerClient(address, tls=tls)
    request = enforcer_pb2.HandshakeRequest(
        request_id="bench", api_id="no-such-api", topic="/echo", authorization="Bearer x"
    )
    await client.check(request)  # connect first
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await client.check(request)
            done += 1

    cpu0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    cpu = time.process_time() - cpu0
    await client.close()
    return done, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    stack = run.Stack(Path(tempfile.mkdtemp(prefix="wsgate-checks-")))
    try:
        target = run.start_wsgate(stack)
        enforcer = target.helpers["enforcer"]
        environ = Path(f"/proc/{target.pids[0]}/environ").read_bytes().decode().split("\0")
        env = dict(line.split("=", 1) for line in environ if "=" in line)
        address = env["WSGATE_ENFORCER_ADDRESS"]
        # The router's own gRPC transport settings (mTLS with the data dir's pki by default).
        pki = Path(env["WSGATE_DATA_DIR"]) / "pki"
        plain = env.get("WSGATE_GRPC_TLS") == "plaintext"
        tls = grpc_tls.PLAINTEXT if plain else grpc_tls.resolve("mtls", pki)
        e0 = run.cpu_seconds([enforcer])
        done, cpu = uvloop.run(fire(address, tls, args.seconds, args.workers))
        e_cpu = run.cpu_seconds([enforcer]) - e0
        print(
            f"Check: {done / args.seconds:.0f}/s; cpu per call: caller {cpu * 1e6 / done:.0f} us, "
            f"enforcer {e_cpu * 1e6 / done:.0f} us"
        )
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
