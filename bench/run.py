"""Benchmark: nginx and the wsgate router in front of the same echo backend, in one run.

Targets alternate A B A B per case so drift on this shared machine hits both alike. Prints
msgs/s, p50/p99 round trip, proxy CPU-seconds, messages per proxy CPU-second, and the
wsgate/nginx ratios; idle-connection RSS and handshake rate have their own cases.

    .venv/bin/python bench/run.py                 # every case, 2 rounds of 6 s
    .venv/bin/python bench/run.py --cases 64x100 --seconds 4 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")
BACKEND_PORT = 19001


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def port_taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


@dataclass
class Target:
    name: str
    url: str
    pids: list[int]
    headers: dict[str, str]
    helpers: dict[str, int] = field(default_factory=dict)  # other processes a request costs


class Stack:
    """The processes of one benchmark run; stops them all on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> int:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            args, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc.pid

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_nginx(stack: Stack, big_buffers: bool) -> Target:
    port = free_port()
    tag = "nginx64k" if big_buffers else "nginx"
    conf_dir = stack.workdir / tag
    conf_dir.mkdir()
    extra = "proxy_buffer_size 64k; proxy_buffers 8 64k;" if big_buffers else ""
    conf = (
        (BENCH / "nginx.conf.tmpl")
        .read_text()
        .format(dir=conf_dir, port=port, backend_port=BACKEND_PORT, extra=extra)
    )
    (conf_dir / "nginx.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    master = stack.spawn(tag, [nginx, "-c", str(conf_dir / "nginx.conf"), "-p", str(conf_dir)])
    wait_port(port)
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return Target(tag, f"ws://127.0.0.1:{port}/bench/1.0.0/echo", [master, *map(int, children)], {})


def start_wsgate(stack: Stack) -> Target:
    ports = {k: free_port() for k in ("rest", "xds", "deploy", "egrpc", "ehttp", "ws", "wss")}
    env = {
        "WSGATE_DATA_DIR": str(stack.workdir / "wsgate"),
        "WSGATE_LOG_LEVEL": "WARNING",
        "WSGATE_ADAPTER_REST_PORT": str(ports["rest"]),
        "WSGATE_ADAPTER_XDS_PORT": str(ports["xds"]),
        "WSGATE_ADAPTER_DEPLOY_PORT": str(ports["deploy"]),
        "WSGATE_ENFORCER_GRPC_PORT": str(ports["egrpc"]),
        "WSGATE_ENFORCER_HTTP_PORT": str(ports["ehttp"]),
        "WSGATE_ROUTER_PORT": str(ports["ws"]),
        "WSGATE_ROUTER_TLS_PORT": str(ports["wss"]),
        "WSGATE_XDS_ADDRESS": f"127.0.0.1:{ports['xds']}",
        "WSGATE_ENFORCER_ADDRESS": f"127.0.0.1:{ports['egrpc']}",
        "WSGATE_ENFORCER_HTTP_URL": f"http://127.0.0.1:{ports['ehttp']}",
    }
    stack.spawn("adapter", [PY, "-m", "wsgate", "adapter"], env)
    wait_port(ports["rest"])
    enforcer = stack.spawn("enforcer", [PY, "-m", "wsgate", "enforcer"], env)
    router = stack.spawn("router", [PY, "-m", "wsgate", "router"], env)
    wait_port(ports["ws"])
    wait_port(ports["ehttp"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        root = BENCH / "project"
        for path in root.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    base = f"https://127.0.0.1:{ports['rest']}/api/mgw/adapter/0.1"
    resp = httpx.post(
        f"{base}/apis?override=true",
        files={"file": ("BenchWS.zip", buf.getvalue(), "application/zip")},
        auth=("admin", "admin"),
        verify=False,
    )
    resp.raise_for_status()
    token = httpx.post(
        f"http://127.0.0.1:{ports['ws']}/testkey", data={"scope": "bench"}, auth=("admin", "admin")
    ).text
    url = f"ws://127.0.0.1:{ports['ws']}/bench/1.0.0/echo"
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the route reached the router over xDS
        probe = loadgen(url, 1, 16, 0.2, headers, check=False)
        if probe is not None:
            break
        time.sleep(0.1)
    return Target("wsgate", url, [router], headers, {"enforcer": enforcer})


def loadgen(
    url: str, conns: int, size: int, seconds: float, headers: dict[str, str], check: bool = True
) -> dict[str, float] | None:
    args = [PY, str(BENCH / "loadgen.py"), url, "--conns", str(conns), "--size", str(size)]
    args += ["--seconds", str(seconds)]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        if check:
            raise RuntimeError(f"loadgen failed against {url}: {out.stderr[-2000:]}")
        return None
    result: dict[str, float] = json.loads(out.stdout)
    return result


def measure(target: Target, conns: int, size: int, seconds: float) -> dict[str, float]:
    cpu0 = cpu_seconds(target.pids)
    result = loadgen(target.url, conns, size, seconds, target.headers)
    assert result is not None
    cpu = cpu_seconds(target.pids) - cpu0
    result["proxy_cpu_s"] = cpu
    result["msgs_per_cpu_s"] = result["messages"] / cpu if cpu else float("inf")
    return result


async def _idle(url: str, headers: dict[str, str], count: int, hold: float) -> int:
    from picows import WSListener, ws_connect

    opened = []
    for _ in range(count):
        transport, _ = await ws_connect(WSListener, url, extra_headers=headers)
        opened.append(transport)
    await asyncio.sleep(hold)
    for transport in opened:
        transport.disconnect()
    return len(opened)


def idle_rss(target: Target, count: int) -> float:
    """RSS the proxy adds per idle connection (KiB), measured while ``count`` are held open."""
    before = rss_kb(target.pids)
    script = (
        f"import asyncio,sys;sys.path.insert(0,{str(BENCH)!r});import run;"
        f"print(asyncio.run(run._idle({target.url!r},{target.headers!r},{count:d},3.0)))"
    )
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    peak = before
    while proc.poll() is None:
        peak = max(peak, rss_kb(target.pids))
        time.sleep(0.2)
    return (peak - before) / count


async def _handshakes(url: str, headers: dict[str, str], seconds: float, workers: int) -> int:
    from picows import WSListener, ws_connect

    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            transport, _ = await ws_connect(WSListener, url, extra_headers=headers)
            transport.disconnect()
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


def handshake_rate(target: Target, seconds: float) -> tuple[float, dict[str, float]]:
    """Handshakes/s, and the CPU microseconds per handshake of the proxy and its helpers."""
    watched = {"proxy": target.pids, **{k: [v] for k, v in target.helpers.items()}}
    cpu0 = {k: cpu_seconds(v) for k, v in watched.items()}
    script = (
        f"import asyncio,sys;sys.path.insert(0,{str(BENCH)!r});import run;"
        f"print(asyncio.run(run._handshakes({target.url!r},{target.headers!r},{seconds:f},16)))"
    )
    out = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    done = int(out.stdout.strip())
    cost = {k: (cpu_seconds(v) - cpu0[k]) * 1e6 / max(done, 1) for k, v in watched.items()}
    return done / seconds, cost


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cases",
        default="64x1,64x100,4096x1,4096x100,idle,handshakes",
        help="comma list of SIZExCONNS, idle, handshakes",
    )
    parser.add_argument("--idle-conns", type=int, default=5000)
    parser.add_argument("--handshake-seconds", type=float, default=3.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    workdir = Path(tempfile.mkdtemp(prefix="wsgate-bench-"))
    stack = Stack(workdir)
    try:
        if port_taken(BACKEND_PORT):  # the bench API's endpoint is fixed: a stranger would skew it
            raise SystemExit(f"port {BACKEND_PORT} is taken; stop what listens there first")
        stack.spawn("backend", [PY, str(BENCH / "echo_server.py"), "--port", str(BACKEND_PORT)])
        wait_port(BACKEND_PORT)
        nginx, nginx64 = start_nginx(stack, False), start_nginx(stack, True)
        wsgate = start_wsgate(stack)
        stamp = time.strftime("%Y-%m-%d %H:%M")
        print(f"# {stamp} on {os.uname().nodename}, {os.cpu_count()} cores")
        header = f"{'case':<14}{'target':<10}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        print(header + f"{'cpu s':>8}{'msgs/cpu-s':>12}")
        for case in args.cases.split(","):
            if case == "idle":
                for t in (nginx, wsgate):
                    print(f"{'idle':<14}{t.name:<10} {idle_rss(t, args.idle_conns):.1f} KiB/conn")
                continue
            if case == "handshakes":
                for t in (nginx, wsgate):
                    rate, cost = handshake_rate(t, args.handshake_seconds)
                    per = ", ".join(f"{k} {v:.0f} us" for k, v in cost.items())
                    print(f"{'handshakes':<14}{t.name:<10} {rate:.0f}/s (cpu per handshake: {per})")
                continue
            size, conns = map(int, case.split("x"))
            ref = nginx64 if size >= 4096 else nginx
            runs: dict[str, list[dict[str, float]]] = {ref.name: [], "wsgate": []}
            for _ in range(args.rounds):
                for t in (ref, wsgate):
                    runs[t.name].append(measure(t, conns, size, args.seconds))
            med = {
                name: {k: median([r[k] for r in rs]) for k in rs[0]} for name, rs in runs.items()
            }
            for name, m in med.items():
                print(
                    f"{case:<14}{name:<10}{m['msgs_per_s']:>10.0f}{m['p50_ms']:>9.3f}"
                    f"{m['p99_ms']:>9.3f}{m['proxy_cpu_s']:>8.2f}{m['msgs_per_cpu_s']:>12.0f}"
                )
            w, n = med["wsgate"], med[ref.name]
            print(
                f"{case:<14}{'ratio':<10}{w['msgs_per_s'] / n['msgs_per_s']:>10.2f}"
                f"{w['p50_ms'] / n['p50_ms']:>9.2f}{w['p99_ms'] / n['p99_ms']:>9.2f}"
                f"{'':>8}{w['msgs_per_cpu_s'] / n['msgs_per_cpu_s']:>12.2f}"
            )
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
