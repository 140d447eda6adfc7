"""`wsgate up` (what `make run` runs): every component as a child process, plus a sample API.

It starts the echo backend, the adapter, the enforcer, the router and the control plane; waits
until each is ready; publishes examples/chat-api.json through the control plane (once); checks
that a message really travels through the router; then prints the commands a user types next.
Ctrl-C or SIGTERM stops the children (SIGTERM, SIGKILL after 10 s) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic_settings import SettingsConfigDict

from wsgate import sample_api
from wsgate.stack import (
    LOOPBACK_HOSTS,
    Component,
    Ports,
    busy_ports,
    component_env,
    components,
    duplicate_ports,
    port_in_use,
)
from wsgate.supervise import STOP_GRACE, Child
from wsgate_common.args import Parser
from wsgate_common.logs import setup_logging
from wsgate_common.pki import ensure_pki
from wsgate_common.settings import CommonSettings, parse_users

log = logging.getLogger("wsgate.up")

REPO = Path(__file__).resolve().parent.parent
CHAT_API = REPO / "examples" / "chat-api.json"
READY_TIMEOUT = 60.0


class UpSettings(CommonSettings):
    """The same ``WSGATE_*`` port variables the components read; flags override them."""

    model_config = SettingsConfigDict(env_prefix="WSGATE_", extra="ignore")

    cp_port: int = 9443
    adapter_rest_port: int = 9843
    adapter_xds_port: int = 18000
    adapter_deploy_port: int = 18001
    enforcer_grpc_port: int = 8081
    enforcer_http_port: int = 8082
    router_port: int = 9090
    router_tls_port: int = 9095
    echo_port: int = 8765
    cp_users: str = "admin:admin"
    enforcer_users: str = "admin:admin"


PORT_FLAGS = {
    "cp": "--cp-port",
    "adapter_rest": "--adapter-port",
    "adapter_xds": "--xds-port",
    "adapter_deploy": "--deploy-port",
    "enforcer_grpc": "--enforcer-port",
    "enforcer_http": "--enforcer-http-port",
    "router": "--router-port",
    "router_tls": "--router-tls-port",
    "echo": "--echo-port",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="wsgate up",
        description="Start every wsgate component locally with a sample API (`make run`).",
    )
    parser.add_argument("--data-dir", type=Path, help="state directory (default .wsgate)")
    for field, flag in PORT_FLAGS.items():
        parser.add_argument(flag, type=int, dest=field, metavar="PORT")
    parser.add_argument(
        "--no-sample", action="store_true", help="do not publish examples/chat-api.json"
    )
    parser.add_argument(
        "--routers",
        type=int,
        default=1,
        metavar="N",
        help="routers to start; router i listens on --router-port + 10*i (and TLS likewise)",
    )
    parser.add_argument(
        "--enforcers",
        type=int,
        default=1,
        metavar="M",
        help="enforcers to start; enforcer j on --enforcer-port + 10*j (HTTP likewise)",
    )
    parser.add_argument(
        "--labels",
        default="",
        help="gateway labels 'a,b': routers and enforcers take them round-robin (default "
        "every one on Default); each router uses the enforcers of its label in turn",
    )
    args = parser.parse_args(argv)
    if args.routers < 1 or args.enforcers < 1:
        parser.error("--routers and --enforcers must be at least 1")
    return args


@dataclass(frozen=True)
class Replica:
    """One extra (or the first) router or enforcer: its name, label, ports and environment."""

    name: str
    kind: str  # "router" or "enforcer"
    label: str
    port: int
    second_port: int  # router: TLS port; enforcer: HTTP port
    env: dict[str, str]

    @property
    def ready_url(self) -> str:
        port = self.port if self.kind == "router" else self.second_port
        return f"http://127.0.0.1:{port}/ready"


def plan_replicas(ports: Ports, routers: int, enforcers: int, labels: list[str]) -> list[Replica]:
    """Enforcer j and router i on ports + 10*j / + 10*i, labels round-robin, each router wired
    to the enforcers of its label in turn (any enforcer when its label has none)."""
    labels = labels or ["Default"]
    found: list[Replica] = []
    for j in range(enforcers):
        label = labels[j % len(labels)]
        grpc_port, http_port = ports.enforcer_grpc + 10 * j, ports.enforcer_http + 10 * j
        env = {
            "WSGATE_LABEL": label,
            "WSGATE_ENFORCER_GRPC_PORT": str(grpc_port),
            "WSGATE_ENFORCER_HTTP_PORT": str(http_port),
        }
        found.append(Replica(f"enforcer-{j + 1}", "enforcer", label, grpc_port, http_port, env))
    taken: dict[str, int] = {}
    for i in range(routers):
        label = labels[i % len(labels)]
        enforcers_found = [e for e in found if e.kind == "enforcer"]
        mine = [e for e in enforcers_found if e.label == label] or enforcers_found
        enforcer = mine[taken.get(label, 0) % len(mine)]
        taken[label] = taken.get(label, 0) + 1
        port, tls = ports.router + 10 * i, ports.router_tls + 10 * i
        env = {
            "WSGATE_LABEL": label,
            "WSGATE_ROUTER_PORT": str(port),
            "WSGATE_ROUTER_TLS_PORT": str(tls),
            "WSGATE_ENFORCER_ADDRESS": f"localhost:{enforcer.port}",
            "WSGATE_ENFORCER_HTTP_URL": f"http://localhost:{enforcer.second_port}",
        }
        found.append(Replica(f"router-{i + 1}", "router", label, port, tls, env))
    return found


def resolve_ports(settings: UpSettings, args: argparse.Namespace) -> Ports:
    # Each Ports field has a `<field>_port` setting (WSGATE_<FIELD>_PORT).
    defaults = {name: getattr(settings, f"{name}_port") for name, _ in Ports().items()}
    chosen = {k: v for k, v in vars(args).items() if k in PORT_FLAGS and v is not None}
    return Ports(**{**defaults, **chosen})


def first_user(spec: str) -> tuple[str, str]:
    users = parse_users(spec)
    if not users:
        raise ValueError("no user configured")
    return next(iter(users.items()))


def app_token_command(ports: Ports, keys: sample_api.SampleKeys) -> str:
    """The shell line that puts an access token of the sample application in $APP_TOKEN."""
    return (
        f"APP_TOKEN=$(curl -sk -u {keys.consumer_key}:{keys.consumer_secret} "
        f"-d grant_type=client_credentials https://localhost:{ports.cp}/oauth2/token "
        """| python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"""
    )


def instructions(
    ports: Ports, sample: bool = True, keys: sample_api.SampleKeys | None = None
) -> str:
    """The commands a user types next, with this stack's real ports (and, for the sample
    control-plane API, the real client credentials of its sample application)."""
    adapter = f"https://localhost:{ports.adapter_rest}"
    testkey = (
        f"TOKEN=$(curl -sk -X POST https://localhost:{ports.router_tls}/testkey "
        f'-d "scope=read:notifications" -H "Authorization: Basic YWRtaW46YWRtaW4=")'
    )
    ws = f"ws://localhost:{ports.router}"
    wss = f"wss://localhost:{ports.router_tls}"
    bearer = '-H "Authorization:Bearer $TOKEN"'
    app_bearer = '-H "Authorization:Bearer $APP_TOKEN"'
    chat = [
        "  # the chat API is published through the control plane; its application "
        f"{sample_api.SAMPLE_APPLICATION}",
        "  # is subscribed and has keys (test keys are for CLI-deployed APIs only):",
        app_token_command(ports, keys)
        if keys is not None
        else f"APP_TOKEN=<an access token from https://localhost:{ports.cp}/oauth2/token>",
        f"npx wscat -c {ws}/chat/1.0.0/rooms/lobby {app_bearer}",
        f"npx wscat -n -c {wss}/chat/1.0.0/rooms/lobby {app_bearer}",
        "  # as a browser would send it (no header): on the URL, or as a subprotocol",
        f'npx wscat -c "{ws}/chat/1.0.0/rooms/lobby?access_token=$APP_TOKEN"',
        f"npx wscat -c {ws}/chat/1.0.0/rooms/lobby -s choreo-oauth2-key -s $APP_TOKEN",
        "",
    ]
    return "\n".join(
        [
            "",
            "wsgate is up. In another terminal (`source .venv/bin/activate` puts `wsgate` on",
            "PATH, or type .venv/bin/wsgate):",
            "",
            *(chat if sample else []),
            "  # deploy the EchoWebSocket project with the CLI (Choreo Connect standalone mode):",
            f"wsgate mg add env dev --adapter {adapter}",
            "wsgate mg login dev -u admin -p admin -k",
            "wsgate mg deploy api -f examples/EchoWebSocket-1.0.0 -e dev -k",
            "wsgate mg get apis -e dev -k",
            testkey,
            f"npx wscat -c {ws}/echowebsocket/1.0.0/notifications {bearer}",
            f"npx wscat -n -c {wss}/echowebsocket/1.0.0/notifications {bearer}",
            "",
            f"Publisher console: https://localhost:{ports.cp}/publisher"
            f" · Developer Portal: https://localhost:{ports.cp}/devportal",
            f"Publisher REST API docs: https://localhost:{ports.cp}/docs",
            "Ctrl-C stops everything.",
            "",
        ]
    )


async def wait_ready(component: Component, child: Child, limit: float = READY_TIMEOUT) -> None:
    """Poll the component's ready URL; a crash loop shows up as a timeout naming it."""
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(verify=False, timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(component.ready_url)).status_code == 200:
                    log.info("%s is ready (%s)", component.name, component.ready_url)
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(
        f"{component.name} not ready at {component.ready_url} after {limit:.0f} s "
        f"(restarted {child.restarts} times; see its output above)"
    )


def _health_check(url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with httpx.AsyncClient(verify=False, timeout=2) as http:
            return (await http.get(url)).status_code == 200

    return check


def _argv(command: str) -> list[str]:
    return [sys.executable, "-m", "wsgate", command]


class Up:
    """The running stack: children, their tasks, and the start-up sequence."""

    def __init__(
        self,
        settings: UpSettings,
        ports: Ports,
        sample: bool,
        replicas: list[Replica] | None = None,
    ) -> None:
        self.settings = settings
        self.ports = ports
        self.sample = sample
        self.data_dir = settings.data_dir.resolve()
        env = {**os.environ, **component_env(ports, self.data_dir)}
        # Loopback unless the user chose an address (then the components' own checks apply).
        env.update({name: os.environ[name] for name in LOOPBACK_HOSTS if name in os.environ})
        self.components = components(ports)
        envs = {c.name: env for c in self.components}
        if replicas:
            # N routers and M enforcers instead of one of each, after the adapter.
            base = [c for c in self.components if c.command not in ("router", "enforcer")]
            extra = [Component(r.name, r.kind, r.ready_url) for r in replicas]
            self.components = [*base[:-1], *extra, base[-1]]
            envs.update({r.name: {**env, **r.env} for r in replicas})
            for r in replicas:
                log.info(
                    "%s: label %s, port %d (%s %d)",
                    r.name,
                    r.label,
                    r.port,
                    "wss" if r.kind == "router" else "http",
                    r.second_port,
                )
        width = max(len(c.name) for c in self.components)
        self.children = {
            c.name: Child(
                c.name,
                _argv(c.command),
                envs[c.name],
                str(REPO),
                width,
                health=_health_check(c.ready_url.replace("/ready", "/health")),
            )
            for c in self.components
        }
        self.tasks: list[asyncio.Task[None]] = []
        self.sample_keys: sample_api.SampleKeys | None = None

    async def start(self) -> None:
        pki = ensure_pki(self.data_dir / "pki")
        by_name = {c.name: c for c in self.components}
        # Waves: the backend and the adapter first, then what connects to the adapter.
        later = tuple(c.name for c in self.components if c.name not in ("echo-backend", "adapter"))
        for wave in (("echo-backend", "adapter"), later):
            for name in wave:
                self.tasks.append(asyncio.create_task(self.children[name].run()))
            await asyncio.gather(*(wait_ready(by_name[n], self.children[n]) for n in wave))
        if self.sample:
            self.sample_keys = await self.publish_sample(pki.ca_cert)

    async def publish_sample(self, ca_cert: Path) -> sample_api.SampleKeys:
        """Publish the sample API, give it a subscribed application, and check that one of
        that application's access tokens carries a message through the router."""
        verify = ssl.create_default_context(cafile=str(ca_cert))
        cp_url = f"https://localhost:{self.ports.cp}"
        cp_auth = sample_api.basic_auth(*first_user(self.settings.cp_users))
        body = sample_api.load_body(CHAT_API, self.ports.echo)
        api_id, deployed = await sample_api.ensure_published(cp_url, cp_auth, body, verify)
        state = "deployed" if deployed else "already deployed"
        log.info("%s %s (id %s)", body["name"], state, api_id)
        tier = str((body.get("policies") or ["Unlimited"])[0])
        keys = await sample_api.ensure_application(cp_url, cp_auth, api_id, tier, verify)
        log.info(
            "application %s is subscribed to %s (id %s)",
            sample_api.SAMPLE_APPLICATION,
            body["name"],
            keys.application_id,
        )
        ws_url = (
            f"ws://127.0.0.1:{self.ports.router}{body['context']}/{body['version']}/rooms/lobby"
        )
        took = await sample_api.echo_with_token(
            ws_url, lambda: sample_api.application_token(cp_url, keys, verify)
        )
        log.info("echo through the router works (%s, checked in %.2f s)", ws_url, took)
        return keys

    async def stop(self) -> None:
        """Routers first (they stop accepting and close clients with 1001), then the rest."""
        routers = [c.name for c in self.components if c.command == "router"]
        await asyncio.gather(*(self.children[name].stop() for name in routers))
        rest = [child for name, child in self.children.items() if name not in routers]
        await asyncio.gather(*(child.stop() for child in reversed(rest)))
        for task in self.tasks:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, STOP_GRACE + 5)


async def run(
    settings: UpSettings, ports: Ports, sample: bool, replicas: list[Replica] | None = None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    up = Up(settings, ports, sample, replicas)
    starting = asyncio.create_task(up.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if starting.done():
        try:
            starting.result()
            print(instructions(ports, sample, up.sample_keys), flush=True)
            await stopping
        except (TimeoutError, sample_api.SampleApiError, OSError, ValueError) as exc:
            log.error("wsgate up failed: %s", exc)
            status = 1
    else:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    stopping.cancel()
    log.info("stopping children")
    await up.stop()
    log.info("all stopped")
    return status


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = UpSettings()
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    setup_logging("up", settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll is noise
    ports = resolve_ports(settings, args)
    shared = duplicate_ports(ports)
    if shared:
        print(f"Error: one port given to several listeners: {shared}", file=sys.stderr)
        return 1
    busy = busy_ports(ports)
    if busy:
        for name, port in busy:
            print(f"Error: port {port} ({name}) is already in use", file=sys.stderr)
        flags = ", ".join(PORT_FLAGS[name] for name, _ in busy)
        print(f"Stop whatever listens there, or choose other ports with {flags}.", file=sys.stderr)
        return 1
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    replicas = None
    if args.routers > 1 or args.enforcers > 1 or labels:
        replicas = plan_replicas(ports, args.routers, args.enforcers, labels)
        taken = [(r.name, p) for r in replicas for p in (r.port, r.second_port)]
        busy_extra = [(n, p) for n, p in taken if p not in dict(ports.items()).values()]
        for name, port in busy_extra:
            if port_in_use(port):
                print(f"Error: port {port} ({name}) is already in use", file=sys.stderr)
                return 1
    sample = not args.no_sample and (not labels or labels[0] == "Default")
    return asyncio.run(run(settings, ports, sample, replicas))
