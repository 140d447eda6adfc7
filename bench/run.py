"""Benchmark: nginx and wsgate in front of the same echo backend, the issue-11 targets in one run.

wsgate is the default stack as `make run` starts it (`wsgate up`: every component supervised,
default logging, analytics on; bench/stack_up.py), with one router per setting compared: the
default one (relay "auto", decision cache as configured by default), one with
``WSGATE_ROUTER_DECISION_CACHE_TTL=0``, one with ``WSGATE_RELAY=python`` and, when
``router._core`` imports, one with ``WSGATE_RELAY=native``. The bench API is published through
the control plane (OAuth2 security, a subscription tier of 10^9 messages a minute, so the
quota is checked per message but never throttles) and a subscribed application's JWT is used.
nginx 1.22 (Debian, 1 worker; ``proxy_buffer_size 64k`` for 4 KiB) proxies without auth.

Targets alternate (nginx, wsgate python, wsgate native) per round so drift on this shared
machine hits all alike; medians of the rounds. "proxy cpu s" of wsgate = the router process
(all its threads) + the `wsgate up` supervisor (it relays the router's log and analytics
lines); nginx = master + worker, in a session of its own as the router is (start_nginx).
Every row names the relay path the router's /metrics reports (``wsgate_router_relay_info``;
"python" when the metric is absent). The summary prints each
issue-11 target with its ratio and PASS/FAIL.

    .venv/bin/python bench/run.py                 # everything, 5 rounds of 4 s (~4-7 min)
    .venv/bin/python bench/run.py --cases 64x100 --seconds 4 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsgate.stack import Ports
from wsgate_common.pki import ensure_pki

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")
BACKEND_PORT = 19001
RELAY_INFO = re.compile(
    r'^wsgate_router_relay_info\{[^}]*path="([^"]+)"[^}]*\}\s+([0-9.eE+-]+)\s*$', re.M
)
BENCH_TIER = "BenchBillionPerMin"  # a subscription quota checked per message, never reached
BENCH_API = {
    "name": "BenchWS",
    "description": "bench/run.py: the picows echo backend behind a token-checked API",
    "context": "/benchws",
    "version": "1.0.0",
    "provider": "admin",
    "type": "WS",
    "transport": ["ws", "wss"],
    "policies": [BENCH_TIER],
    "securityScheme": ["oauth2"],
    "visibility": "PUBLIC",
    "endpointConfig": {
        "endpoint_type": "ws",
        "production_endpoints": {"url": f"ws://127.0.0.1:{BACKEND_PORT}"},
        "sandbox_endpoints": {"url": f"ws://127.0.0.1:{BACKEND_PORT}"},
    },
    "scopes": [],
    "operations": [
        {"target": "/echo", "verb": "PUBLISH", "authType": "Any", "scopes": []},
        {"target": "/echo", "verb": "SUBSCRIBE", "authType": "Any", "scopes": []},
    ],
}


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
    relay: str = "-"  # the relay path the router reports (nginx: "-")
    port: int = 0


class Stack:
    """The processes of one benchmark run; stops them all on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        clean: bool = False,
        session: bool = False,
    ) -> int:
        """Start ``args`` with its output in ``<name>.log``; ``clean``: without the caller's
        ``WSGATE_*`` variables, so the process sees the defaults as `make run` does;
        ``session``: in a session of its own (see start_nginx)."""
        log = open(self.workdir / f"{name}.log", "wb")
        base = {k: v for k, v in os.environ.items() if not (clean and k.startswith("WSGATE_"))}
        proc = subprocess.Popen(
            args,
            env={**base, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=session,
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
    # A session of its own, as the router has (wsgate/supervise.py starts every component in a
    # new session): with the kernel's autogroup scheduling (sched_autogroup_enabled, on here)
    # each session is one scheduling group, and a proxy that shares the group of the load
    # generator and the backend (this script's session) sleeps and wakes less often per
    # message, which measured ~1.4x more nginx messages per CPU-second at 64 B x 100 than the
    # same nginx in a session of its own.
    master = stack.spawn(
        tag, [nginx, "-c", str(conf_dir / "nginx.conf"), "-p", str(conf_dir)], session=True
    )
    wait_port(port)
    children: list[str] = []
    deadline = time.monotonic() + 10
    while not children and time.monotonic() < deadline:  # the worker may not be forked yet
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        time.sleep(0.05)
    if not children:
        raise RuntimeError(f"{tag}: no worker process (see {stack.workdir / tag}.log)")
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


async def _idle(url: str, headers: dict[str, str], count: int, hold: float) -> int:
    from picows import WSListener, ws_connect

    opened: list[object] = []

    async def opener(n: int) -> None:
        for _ in range(n):
            transport, _ = await ws_connect(WSListener, url, extra_headers=headers)
            opened.append(transport)

    workers = 25  # a few handshakes in flight, so 5,000 open in seconds, not minutes
    shares = [count // workers + (i < count % workers) for i in range(workers)]
    await asyncio.gather(*(opener(n) for n in shares))
    await asyncio.sleep(hold)
    for transport in opened:
        transport.disconnect()  # type: ignore[attr-defined]
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


def native_status() -> tuple[bool, str]:
    """Whether the compiled relay core imports in this interpreter, and if not, why."""
    out = subprocess.run(
        [PY, "-c", "import router._core"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    if out.returncode == 0:
        return True, "built"
    lines = out.stderr.strip().splitlines()
    return False, lines[-1] if lines else f"exit status {out.returncode}"


def relay_of(port: int) -> str:
    """The relay path a router reports on /metrics (``wsgate_router_relay_info``), else python."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError as exc:
        return f"unknown ({type(exc).__name__})"
    for path, value in RELAY_INFO.findall(text):
        if float(value) > 0:
            return path
    return "python"


@dataclass
class UpStack:
    """The `wsgate up` stack of bench/stack_up.py: ports, pids and one port per router."""

    ports: Ports
    supervisor: int
    pids: dict[str, int]
    routers: dict[str, int]
    data_dir: Path


def start_default_stack(stack: Stack, routers: dict[str, dict[str, str]]) -> UpStack:
    """`wsgate up` on free ports with one router per entry (name -> extra ``WSGATE_*``); the
    first router gets the stack's router ports, as `make run`'s only router would."""
    names = [name for name, _ in Ports().items()]
    ports = Ports(**{name: free_port() for name in names})
    specs = []
    for i, (key, env) in enumerate(routers.items()):
        port, tls = (ports.router, ports.router_tls) if i == 0 else (free_port(), free_port())
        name = "router" if i == 0 else f"router-{key}"  # the first is `make run`'s "router"
        specs.append({"key": key, "name": name, "port": port, "tls_port": tls, "env": env})
    data_dir = stack.workdir / "wsgate-up"
    config_file, ready_file = stack.workdir / "stack.json", stack.workdir / "stack-ready.json"
    config_file.write_text(
        json.dumps({"ports": dict(ports.items()), "data_dir": str(data_dir), "routers": specs})
    )
    supervisor = stack.spawn(
        "wsgate-up",
        [PY, str(BENCH / "stack_up.py"), str(config_file), str(ready_file)],
        clean=True,
    )
    proc = stack.procs[-1]
    deadline = time.monotonic() + 180
    while not ready_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (stack.workdir / "wsgate-up.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"wsgate up did not become ready:\n{tail}")
        time.sleep(0.2)
    ready = json.loads(ready_file.read_text())
    return UpStack(
        ports,
        supervisor,
        {s["key"]: ready["pids"][s["name"]] for s in specs} | ready["pids"],
        {s["key"]: s["port"] for s in specs},
        data_dir,
    )


def provision(up: UpStack, tier: str = BENCH_TIER) -> str:
    """Through the control plane, as a publisher and a developer would: a subscription tier of
    10^9 messages a minute, the BenchWS API on the picows backend, the sample application
    subscribed to it; returns one of that application's access tokens (a JWT), once every
    router echoes with it."""
    from wsgate import sample_api

    async def go() -> str:
        verify = ssl.create_default_context(cafile=str(ensure_pki(up.data_dir / "pki").ca_cert))
        cp_url = f"https://localhost:{up.ports.cp}"
        auth = sample_api.basic_auth("admin", "admin")
        policy = {
            "policyName": BENCH_TIER,
            "description": "bench/run.py: checked per message, never reached",
            "defaultLimit": {"type": "EVENTCOUNTLIMIT", "eventCount": 10**9, "timeUnit": "min"},
            "stopOnQuotaReach": True,
        }
        async with httpx.AsyncClient(verify=verify, timeout=30) as http:
            made = await http.post(
                f"{cp_url}/api/am/admin/v4/throttling/policies/subscription",
                json=policy,
                headers={"Authorization": auth},
            )
            if made.status_code not in (201, 409):
                raise RuntimeError(f"policy: {made.status_code} {made.text[:300]}")
        body = {**BENCH_API, "policies": [tier]}
        api_id, _ = await sample_api.ensure_published(cp_url, auth, body, verify)
        keys = await sample_api.ensure_application(cp_url, auth, api_id, tier, verify)
        token = await sample_api.application_token(cp_url, keys, verify)

        async def same() -> str:
            return token

        for port in up.routers.values():
            url = f"ws://127.0.0.1:{port}/benchws/1.0.0/echo"
            await sample_api.echo_with_token(url, same, limit=60)
        return token

    return asyncio.run(go())


def wsgate_target(up: UpStack, router: str, token: str) -> Target:
    port = up.routers[router]
    return Target(
        f"wsgate-{router}",
        f"ws://127.0.0.1:{port}/benchws/1.0.0/echo",
        [up.pids[router]],
        {"Authorization": f"Bearer {token}"},
        {"supervisor": up.supervisor, "enforcer": up.pids["enforcer"]},
        relay=relay_of(port),
        port=port,
    )


def relay_cpu_pids(target: Target) -> list[int]:
    """What a relayed message costs: the proxy, plus (wsgate) the supervisor relaying its
    analytics and log lines."""
    extra = target.helpers.get("supervisor")
    return target.pids + ([extra] if extra else [])


def measure_msgs(target: Target, conns: int, size: int, seconds: float) -> dict[str, float]:
    extra = [p for p in relay_cpu_pids(target) if p not in target.pids]
    proxy0, extra0 = cpu_seconds(target.pids), cpu_seconds(extra)
    result = loadgen(target.url, conns, size, seconds, target.headers)
    assert result is not None
    proxy, helper = cpu_seconds(target.pids) - proxy0, cpu_seconds(extra) - extra0
    cpu = proxy + helper
    result["proxy_cpu_s"] = cpu
    result["supervisor_cpu_s"] = helper
    result["msgs_per_cpu_s"] = result["messages"] / cpu if cpu else float("inf")
    return result


def measure_handshakes(target: Target, seconds: float, workers: int) -> dict[str, float]:
    """Handshakes/s and connect latency (loadgen --handshakes), and the CPU microseconds per
    handshake of the proxy and of each helper (enforcer, supervisor)."""
    watched = {"proxy": target.pids, **{k: [v] for k, v in target.helpers.items()}}
    cpu0 = {k: cpu_seconds(v) for k, v in watched.items()}
    args = [PY, str(BENCH / "loadgen.py"), target.url, "--handshakes", "--workers", str(workers)]
    args += ["--seconds", str(seconds)]
    for name, value in target.headers.items():
        args += ["--header", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"handshake loadgen failed against {target.url}: {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    done = max(int(result["handshakes"]), 1)
    for k, v in watched.items():
        result[f"{k}_us"] = (cpu_seconds(v) - cpu0[k]) * 1e6 / done
    kinds = result.pop("error_kinds")
    if kinds:
        print(f"    {target.name}: {result['errors']} failed handshakes: {kinds}", flush=True)
    return dict(result)


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: median([r[k] for r in runs]) for k in runs[0]}


@dataclass
class Goal:
    """One issue-11 target: a figure of wsgate, its nginx counterpart, and the bound."""

    name: str
    relay: str
    wsgate: float
    nginx: float
    unit: str
    ratio_bound: float  # ratio must be >= (higher is better) or <= (lower is better)
    higher_is_better: bool = True
    absolute: float | None = None  # and wsgate itself must be >= (or <=) this
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.wsgate / self.nginx if self.nginx else float("nan")

    def passed(self) -> bool:
        if self.higher_is_better:
            ok = self.ratio >= self.ratio_bound if self.ratio_bound else True
            return ok and (self.absolute is None or self.wsgate >= self.absolute)
        ok = self.ratio <= self.ratio_bound if self.ratio_bound else True
        return ok and (self.absolute is None or self.wsgate <= self.absolute)

    def goal_text(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        parts = [f"{op} {self.ratio_bound:g}x"] if self.ratio_bound else []
        if self.absolute is not None:
            parts.append(f"{op} {self.absolute:,g}{'' if self.unit == '/s' else ' '}{self.unit}")
        return " and ".join(parts)


def fmt(value: float, unit: str) -> str:
    if unit in ("/s", ""):
        return f"{value:,.0f}{unit}"
    return f"{value:,.3g} {unit}".strip()


def print_goals(goals: list[Goal]) -> None:
    print("\n== issue-11 targets (wsgate / nginx, medians) ==")
    print(f"{'target':<52}{'relay':<9}{'wsgate':>12}{'nginx':>12}{'ratio':>7}  {'goal':<25}result")
    for g in goals:
        ratio = f"{g.ratio:.2f}" if g.nginx else "-"
        print(
            f"{g.name:<52}{g.relay:<9}{fmt(g.wsgate, g.unit):>12}{fmt(g.nginx, g.unit):>12}"
            f"{ratio:>7}  {g.goal_text():<25}{'PASS' if g.passed() else 'FAIL'}"
            + (f"  ({g.note})" if g.note else "")
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="per msgs round (4)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (5)")
    parser.add_argument(
        "--cases",
        default="64x1,64x100,4096x100,handshakes,idle",
        help="comma list of SIZExCONNS, handshakes, idle",
    )
    parser.add_argument("--idle-conns", type=int, default=5000)
    parser.add_argument("--handshake-seconds", type=float, default=4.0)
    parser.add_argument("--handshake-workers", type=int, default=50)
    parser.add_argument(
        "--tier",
        default=BENCH_TIER,
        help=f"subscription tier of the bench API ({BENCH_TIER}: 10^9 messages a minute, "
        "checked per message; AsyncUnlimited: no quota at all, to see what the quota costs)",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    began, load_before = time.monotonic(), os.getloadavg()[0]  # before our own stack starts
    cases = args.cases.split(",")

    workdir = Path(tempfile.mkdtemp(prefix="wsgate-bench-"))
    stack = Stack(workdir)
    goals: list[Goal] = []
    try:
        if port_taken(BACKEND_PORT):  # the bench API's endpoint is fixed: a stranger would skew it
            raise SystemExit(f"port {BACKEND_PORT} is taken; stop what listens there first")
        stack.spawn("backend", [PY, str(BENCH / "echo_server.py"), "--port", str(BACKEND_PORT)])
        wait_port(BACKEND_PORT)
        nginx, nginx64 = start_nginx(stack, False), start_nginx(stack, True)
        native, why = native_status()
        routers: dict[str, dict[str, str]] = {
            "default": {},  # exactly what `make run` gives its router
            "nocache": {"WSGATE_ROUTER_DECISION_CACHE_TTL": "0"},
            "python": {"WSGATE_RELAY": "python"},
        }
        if native:
            routers["native"] = {"WSGATE_RELAY": "native"}
        up = start_default_stack(stack, routers)
        token = provision(up, args.tier)
        targets = {name: wsgate_target(up, name, token) for name in routers}
        relays = [targets["python"]] + ([targets["native"]] if native else [])
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"# {stamp} on {os.uname().nodename}, {os.cpu_count()} cores, load {load}")
        print(f"# workdir {workdir} (every process's log)")
        if load_before > 1.0:
            print(
                f"# WARNING: load average {load_before:.2f} before the stack started: other work "
                "shares this machine, ratios are noisy"
            )
        if native:
            print("# native relay: built (router._core imports); msgs rows for both paths")
        else:
            print(f"# native relay: NOT BUILT ({why}); msgs rows for the python path only")
        for t in targets.values():
            print(f"# router {t.name}: port {t.port}, relay path reported: {t.relay}")
        print(f"# bench API subscription tier: {args.tier}")
        print(f"# {args.rounds} interleaved rounds of {args.seconds:g} s, medians", flush=True)

        for case in cases:
            if case in ("handshakes", "idle"):
                continue
            size, conns = map(int, case.split("x"))
            ref = nginx64 if size >= 4096 else nginx
            order = [ref, *relays]
            runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in order}
            for _ in range(args.rounds):
                for t in order:
                    runs[t.name].append(measure_msgs(t, conns, size, args.seconds))
            med = {name: medians(rs) for name, rs in runs.items()}
            print(
                f"\n{case:<10}{'target':<16}{'relay':<9}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
                f"{'cpu s':>8}{'msgs/cpu-s':>12}{'(supervisor cpu s)':>20}"
            )
            for t in order:
                m = med[t.name]
                print(
                    f"{'':<10}{t.name:<16}{t.relay:<9}{m['msgs_per_s']:>10,.0f}{m['p50_ms']:>9.3f}"
                    f"{m['p99_ms']:>9.3f}{m['proxy_cpu_s']:>8.2f}{m['msgs_per_cpu_s']:>12,.0f}"
                    + (f"{m['supervisor_cpu_s']:>20.2f}" if t.helpers else "")
                )
            n = med[ref.name]
            for t in relays:
                w = med[t.name]
                print(
                    f"{'':<10}{'ratio ' + t.name[7:]:<16}{t.relay:<9}"
                    f"{w['msgs_per_s'] / n['msgs_per_s']:>10.2f}{w['p50_ms'] / n['p50_ms']:>9.2f}"
                    f"{w['p99_ms'] / n['p99_ms']:>9.2f}{'':>8}"
                    f"{w['msgs_per_cpu_s'] / n['msgs_per_cpu_s']:>12.2f}"
                )
                label = f"{size} B" if size < 1024 else f"{size // 1024} KiB"
                vs = " (nginx 64k)" if ref is nginx64 else ""
                if conns >= 100:
                    goals.append(
                        Goal(
                            f"msgs per proxy cpu-s, {label} x{conns}{vs}",
                            t.relay,
                            w["msgs_per_cpu_s"],
                            n["msgs_per_cpu_s"],
                            "",
                            1.15,
                        )
                    )
                    goals.append(
                        Goal(
                            f"msgs/s, {label} x{conns}{vs}",
                            t.relay,
                            w["msgs_per_s"],
                            n["msgs_per_s"],
                            "/s",
                            1.0,
                        )
                    )
                if conns == 1:
                    goals.append(
                        Goal(
                            f"p99 round trip at 1 connection, {label}",
                            t.relay,
                            w["p99_ms"],
                            n["p99_ms"],
                            "ms",
                            1.0,
                            higher_is_better=False,
                        )
                    )
            sys.stdout.flush()

        if "handshakes" in cases:
            default, nocache = targets["default"], targets["nocache"]
            order = [nginx, default, nocache]
            hs: dict[str, list[dict[str, float]]] = {t.name: [] for t in order}
            for _ in range(args.rounds):
                for t in order:
                    hs[t.name].append(
                        measure_handshakes(t, args.handshake_seconds, args.handshake_workers)
                    )
            hmed = {name: medians(rs) for name, rs in hs.items()}
            print(
                f"\nhandshakes ({args.handshake_workers} workers: connect -> one echo -> close; "
                "nginx no auth, wsgate JWT + subscription; default `wsgate up` stack)"
            )
            print(
                f"{'target':<16}{'relay':<9}{'/s':>8}{'conn p50':>10}{'conn p99':>10}{'errors':>8}"
                "  cpu us per handshake"
            )
            for t in order:
                m = hmed[t.name]
                cost = ", ".join(
                    f"{k} {m[k + '_us']:.0f}" for k in ("proxy", *t.helpers) if k + "_us" in m
                )
                print(
                    f"{t.name:<16}{t.relay:<9}{m['handshakes_per_s']:>8,.0f}"
                    f"{m['connect_p50_ms']:>8.1f}ms{m['connect_p99_ms']:>8.1f}ms"
                    f"{m['errors']:>8.0f}  {cost}"
                )
            n = hmed[nginx.name]
            for t, label in ((default, "cache on (default)"), (nocache, "cache off (TTL=0)")):
                w = hmed[t.name]
                goals.append(
                    Goal(
                        f"handshakes/s JWT + subscription, {label}",
                        t.relay,
                        w["handshakes_per_s"],
                        n["handshakes_per_s"],
                        "/s",
                        0.9,
                        absolute=3000,
                    )
                )
                goals.append(
                    Goal(
                        f"connect p99, {label}",
                        t.relay,
                        w["connect_p99_ms"],
                        n["connect_p99_ms"],
                        "ms",
                        2.0,
                        higher_is_better=False,
                    )
                )
            sys.stdout.flush()

        if "idle" in cases:
            default = targets["default"]
            kib = {t.name: idle_rss(t, args.idle_conns) for t in (nginx, default)}
            print(f"\nidle: RSS per idle connection, {args.idle_conns:,} held open at once")
            for t in (nginx, default):
                print(f"{t.name:<16}{t.relay:<9}{kib[t.name]:>8.1f} KiB/conn")
            goals.append(
                Goal(
                    f"RSS per idle connection at {args.idle_conns:,}",
                    default.relay,
                    kib[default.name],
                    kib[nginx.name],
                    "KiB",
                    0,
                    higher_is_better=False,
                    absolute=8,
                )
            )
        if not native:
            print(f"\nnative relay not built ({why}): msgs rows ran the python path only")
        print_goals(goals)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\n# took {time.monotonic() - began:.0f} s; load at the end {load}")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
