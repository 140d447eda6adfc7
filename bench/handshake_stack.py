"""Handshakes on the default `wsgate up` stack, as a user runs it (issue 11).

Starts `wsgate up` (every component, default logging, the supervisor relaying the children's
output) on free ports, takes an access token of the sample application the way the printed
instructions do, then drives ``--workers`` picows clients, each doing connect -> one echo ->
close in a loop, from a separate process. Prints handshakes/s, connect latency percentiles and
the CPU each process used per handshake (µs), for ``--rounds`` rounds.

    .venv/bin/python bench/handshake_stack.py --seconds 6 --rounds 2
    .venv/bin/python bench/handshake_stack.py --env WSGATE_ROUTER_DECISION_CACHE_TTL=0

``--profile router`` (or enforcer) runs that child under pyinstrument (via a sitecustomize on
PYTHONPATH) and writes the profile's text to ``--profile-out`` when the stack stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
READY_MARK = "wsgate is up"
TICK = os.sysconf("SC_CLK_TCK")

PROFILE_HOOK = """
import atexit, os, sys
_want = os.environ.get("WSGATE_BENCH_PROFILE", "")
if _want and os.environ.get("WSGATE_BENCH_PROFILER") == "cprofile" and _want in sys.argv[1:4]:
    import cProfile, pstats, io
    _c = cProfile.Profile()
    _c.enable()
    def _cdump():
        _c.disable()
        out = io.StringIO()
        _order = os.environ.get("WSGATE_BENCH_SORT", "tottime")
        _top = int(os.environ.get("WSGATE_BENCH_TOP", "70"))
        pstats.Stats(_c, stream=out).sort_stats(_order).print_stats(_top)
        with open(os.environ["WSGATE_BENCH_PROFILE_OUT"], "w") as f:
            f.write(out.getvalue())
    atexit.register(_cdump)
elif _want and _want in sys.argv[1:4]:
    from pyinstrument import Profiler
    _p = Profiler(interval=0.0005, async_mode="disabled")
    _p.start()
    def _dump():
        _p.stop()
        with open(os.environ["WSGATE_BENCH_PROFILE_OUT"], "w") as f:
            f.write(_p.output_text(unicode=True, color=False, show_all=False))
    atexit.register(_dump)
"""


def free_ports() -> dict[str, int]:
    import socket

    names = ["cp", "adapter", "xds", "deploy", "enforcer", "enforcer-http"]
    names += ["router", "router-tls", "echo"]
    socks, picked = [], {}
    for name in names:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        picked[name] = sock.getsockname()[1]
    for sock in socks:
        sock.close()
    return picked


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(parent: int) -> dict[str, int]:
    """The `wsgate <command>` children of ``parent``, by command."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent and b"wsgate" in cmd:
            found[cmd[-2].decode() if not cmd[-1] else cmd[-1].decode()] = int(proc.name)
    return found


class Stack:
    def __init__(
        self, env: dict[str, str], data_dir: Path, profile: str, profile_out: str, profiler: str
    ):
        self.ports = free_ports()
        self.data_dir = data_dir
        argv = [PY, "-m", "wsgate", "up", "--data-dir", str(data_dir)]
        for name, flag in [
            ("cp", "--cp-port"),
            ("adapter", "--adapter-port"),
            ("xds", "--xds-port"),
            ("deploy", "--deploy-port"),
            ("enforcer", "--enforcer-port"),
            ("enforcer-http", "--enforcer-http-port"),
            ("router", "--router-port"),
            ("router-tls", "--router-tls-port"),
            ("echo", "--echo-port"),
        ]:
            argv += [flag, str(self.ports[name])]
        full_env = {**os.environ, **env}
        if profile:
            hook = Path(tempfile.mkdtemp(prefix="wsgate-prof-"))
            (hook / "sitecustomize.py").write_text(PROFILE_HOOK)
            full_env["PYTHONPATH"] = f"{hook}:{full_env.get('PYTHONPATH', '')}"
            full_env["WSGATE_BENCH_PROFILE"] = profile
            full_env["WSGATE_BENCH_PROFILE_OUT"] = profile_out
            full_env["WSGATE_BENCH_PROFILER"] = profiler
        # stdout goes to a file the way a terminal takes it: the supervisor writes to it
        self.out_path = data_dir / "up.out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_up(self, limit: float = 180.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if READY_MARK in self.text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit("wsgate up did not start:\n" + self.text()[-4000:])

    def token(self) -> str:
        line = [t for t in self.text().splitlines() if t.startswith("APP_TOKEN=$(curl")][-1]
        out = subprocess.run(
            ["bash", "-c", f'{line}\nprintf %s "$APP_TOKEN"'], capture_output=True, text=True
        )
        return out.stdout.strip()

    def picows_api(self, port: int) -> tuple[str, str]:
        """Publish a copy of the chat API on the picows backend at ``port`` through the control
        plane, subscribe the sample application to it; returns its URL path and a token."""
        import ssl

        from wsgate import sample_api
        from wsgate.up import CHAT_API

        cp = f"https://localhost:{self.ports['cp']}"
        auth = sample_api.basic_auth("admin", "admin")
        verify = ssl.create_default_context(cafile=str(self.data_dir / "pki" / "ca.pem"))
        body = sample_api.load_body(CHAT_API, port)
        body.update(name="BenchChatWebSocket", context="/benchchat")

        async def publish() -> str:
            api_id, _ = await sample_api.ensure_published(cp, auth, body, verify)
            keys = await sample_api.ensure_application(cp, auth, api_id, "AsyncUnlimited", verify)
            url = f"ws://127.0.0.1:{self.ports['router']}/benchchat/1.0.0/rooms/lobby"
            await sample_api.echo_with_token(
                url, lambda: sample_api.application_token(cp, keys, verify)
            )
            return await sample_api.application_token(cp, keys, verify)

        return "/benchchat/1.0.0/rooms/lobby", asyncio.run(publish())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.out.close()


async def drive(url: str, token: str, seconds: float, workers: int) -> dict[str, float]:
    """connect -> one echo -> close, ``workers`` at a time; latencies of the connects."""
    import uvloop  # noqa: F401 - the policy is set by the caller
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    done = errors = 0
    connects: list[float] = []
    deadline = time.perf_counter() + seconds

    class Once(WSListener):
        def __init__(self) -> None:
            self.echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT and not self.echo.done():
                self.echo.set_result(None)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not self.echo.done():
                self.echo.set_exception(ConnectionError("closed before the echo"))

    headers = {"Authorization": f"Bearer {token}"}

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                transport, listener = await ws_connect(Once, url, extra_headers=headers)
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            connects.append(time.perf_counter() - t0)
            transport.send(WSMsgType.TEXT, b"hello")
            try:
                await asyncio.wait_for(listener.echo, 5)
            except Exception:
                errors += 1
            transport.send_close()
            transport.disconnect()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    took = time.perf_counter() - started
    connects.sort()

    def pct(p: float) -> float:
        return connects[min(len(connects) - 1, int(p * len(connects)))] * 1000 if connects else 0

    return {
        "done": done,
        "errors": errors,
        "rate": done / took,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def run_load(url: str, token: str, seconds: float, workers: int) -> dict[str, float]:
    script = (
        f"import asyncio,json,sys,uvloop;sys.path.insert(0,{str(REPO / 'bench')!r});"
        "import handshake_stack as h;"
        f"print(json.dumps(uvloop.run(h.drive({url!r},{token!r},{seconds},{workers}))))"
    )
    proc = subprocess.Popen(
        [PY, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    cpu = 0.0
    while proc.poll() is None:
        cpu = max(cpu, cpu_seconds(proc.pid))
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(stderr[-3000:])
    result: dict[str, float] = json.loads(stdout.strip().splitlines()[-1])
    result["loadgen_cpu"] = cpu
    return result


def start_nginx(workdir: Path, backend_port: int) -> tuple[subprocess.Popen[bytes], int, list[int]]:
    """nginx (bench/nginx.conf.tmpl, no auth) in front of the same picows backend."""
    import shutil
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf_dir = workdir / "nginx"
    conf_dir.mkdir()
    conf = (REPO / "bench" / "nginx.conf.tmpl").read_text()
    conf = conf.format(dir=conf_dir, port=port, backend_port=backend_port, extra="")
    (conf_dir / "nginx.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        [nginx, "-c", str(conf_dir / "nginx.conf"), "-p", str(conf_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        time.sleep(0.05)
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                break
        except OSError:
            continue
    kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return proc, port, [proc.pid, *map(int, kids)]


def report(name: str, result: dict[str, float], cost: dict[str, float], lines: float) -> None:
    print(
        f"{name}: {result['rate']:.0f} handshakes/s "
        f"(done {result['done']:.0f}, errors {result['errors']:.0f}), "
        f"connect p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms"
        + (f", {lines:.1f} output lines per handshake" if lines >= 0 else "")
    )
    print(
        "  cpu µs/handshake: "
        + ", ".join(f"{k} {v:.0f}" for k, v in cost.items() if v >= 1)
        + " (cpu %: "
        + ", ".join(f"{k} {v * result['rate'] / 1e4:.0f}" for k, v in cost.items() if v >= 1)
        + ")",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the stack")
    parser.add_argument(
        "--profile", default="", help="router or enforcer: run it under pyinstrument"
    )
    parser.add_argument("--profile-out", default="/tmp/wsgate-profile.txt")
    parser.add_argument("--profiler", choices=["pyinstrument", "cprofile"], default="pyinstrument")
    parser.add_argument(
        "--backend",
        choices=["picows", "wsgate-echo"],
        default="picows",
        help="picows: an API copy on bench/echo_server.py (as the nginx comparison uses); "
        "wsgate-echo: the sample chat API on `wsgate up`'s own echo backend",
    )
    parser.add_argument(
        "--nginx",
        action="store_true",
        help="also nginx (no auth) with the same client, interleaved",
    )
    parser.add_argument("--tail", type=int, default=0, help="print the stack's last N lines")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="wsgate-hs-") as tmp:
        stack = Stack(env, Path(tmp), args.profile, args.profile_out, args.profiler)
        try:
            stack.wait_up()
            pids = {"supervisor": stack.proc.pid, **children(stack.proc.pid)}
            if args.backend == "picows":
                port = free_ports()["echo"]
                echo = subprocess.Popen(
                    [PY, str(REPO / "bench" / "echo_server.py"), "--port", str(port)]
                )
                pids["picows-echo"] = echo.pid
                time.sleep(0.5)
                path, token = stack.picows_api(port)
            else:
                path, token = "/chat/1.0.0/rooms/lobby", stack.token()
            url = f"ws://127.0.0.1:{stack.ports['router']}{path}"
            print(f"stack up, measuring {url}", flush=True)
            nginx_port, nginx_pids = 0, []
            if args.nginx and args.backend == "picows":
                nginx, nginx_port, nginx_pids = start_nginx(Path(tmp), port)
            for n in range(args.rounds):
                before = {k: cpu_seconds(p) for k, p in pids.items()}
                lines0 = stack.text().count("\n")
                result = run_load(url, token, args.seconds, args.workers)
                cost = {
                    k: (cpu_seconds(p) - before[k]) * 1e6 / max(result["done"], 1)
                    for k, p in pids.items()
                }
                cost["loadgen"] = result["loadgen_cpu"] * 1e6 / max(result["done"], 1)
                lines = (stack.text().count("\n") - lines0) / max(result["done"], 1)
                report(f"round {n + 1} wsgate", result, cost, lines)
                if nginx_port:
                    watched = {"nginx": nginx_pids, "picows-echo": [pids["picows-echo"]]}
                    before = {k: sum(map(cpu_seconds, v)) for k, v in watched.items()}
                    ref = f"ws://127.0.0.1:{nginx_port}{path}"
                    result = run_load(ref, token, args.seconds, args.workers)
                    cost = {
                        k: (sum(map(cpu_seconds, v)) - before[k]) * 1e6 / max(result["done"], 1)
                        for k, v in watched.items()
                    }
                    cost["loadgen"] = result["loadgen_cpu"] * 1e6 / max(result["done"], 1)
                    report(f"round {n + 1} nginx ", result, cost, -1)
        finally:
            if args.tail:
                print("\n".join(stack.text().splitlines()[-args.tail :]))
            stack.stop()
            if args.backend == "picows":
                echo.terminate()
            if nginx_port:
                nginx.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
