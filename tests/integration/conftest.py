"""The whole stack as real processes on free ports, and the helpers a user story needs.

``stack`` (module scope) starts the echo backend, adapter, enforcer, router and control plane
with a temporary data dir and CLI home; when a test that used it fails, the tail of every
component's log is attached to the report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.procs import REPO, WSCAT, Proc, http_ok, running, wait_for
from tests.relay_paths import check_router, relay_env
from wsgate.stack import Ports, component_env, components
from wsgate_common.pki import ensure_pki

ADMIN_BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()
EXAMPLE = REPO / "examples" / "EchoWebSocket-1.0.0"
LOG_TAIL = 60


@dataclass
class Handshake:
    """How an upgrade attempt ended: 101 with an echo, or an HTTP status with a body."""

    status: int
    body: bytes = b""
    echoed: object = None
    closed: tuple[int, str] | None = None  # a 101 the router then closed: (code, reason)


@dataclass
class Stack:
    ports: Ports
    data_dir: Path
    cli_home: Path
    work: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    log_dir: Path | None = None
    exit_stack: contextlib.ExitStack | None = None

    @property
    def cp_url(self) -> str:
        """The control plane's root (publisher, admin, devportal, /oauth2) over HTTPS."""
        return f"https://127.0.0.1:{self.ports.cp}"

    @property
    def adapter_url(self) -> str:
        return f"https://localhost:{self.ports.adapter_rest}"

    @property
    def adapter_api(self) -> str:
        return f"{self.adapter_url}/api/mgw/adapter/0.1"

    @property
    def cp_api(self) -> str:
        return f"https://localhost:{self.ports.cp}/api/am/publisher/v4"

    @property
    def ws(self) -> str:
        return f"ws://localhost:{self.ports.router}"

    @property
    def wss(self) -> str:
        return f"wss://localhost:{self.ports.router_tls}"

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "pki" / "ca.pem"

    def tls(self) -> ssl.SSLContext:
        """Trust exactly the stack's local CA, as a careful client would."""
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def logs(self, tail: int = LOG_TAIL) -> str:
        parts = []
        for name, proc in self.procs.items():
            lines = proc.log().splitlines()[-tail:]
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"----- {name} ({state}) -----\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self, name: str) -> None:
        """Stop one component (SIGTERM, then SIGKILL after 10 s)."""
        self.procs[name].stop()

    def start(self, name: str, timeout: float = 60) -> Proc:
        """Start one component again with the same ports, data dir and environment, and wait
        until it is ready; its previous log is kept as ``<name>.<n>.log``."""
        assert self.log_dir is not None and self.exit_stack is not None, "not a fixture stack"
        component = next(c for c in components(self.ports) if c.name == name)
        old = self.procs.get(name)
        if old is not None:
            assert not old.alive(), f"{name} is still running: stop it first"
            generation = len(list(self.log_dir.glob(f"{name}.*.log"))) + 1
            old.log_path.rename(self.log_dir / f"{name}.{generation}.log")
            old.log_path = self.log_dir / f"{name}.{generation}.log"
        url = component.ready_url
        proc = self.exit_stack.enter_context(
            running(
                name,
                [component.command],
                self.env,
                self.log_dir,
                lambda: http_ok(url),
                timeout=timeout,
            )
        )
        self.procs[name] = proc
        return proc

    def restart(self, name: str) -> Proc:
        self.stop(name)
        return self.start(name)

    def wsgate(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``python -m wsgate <args>`` as the user would, in the repository folder."""
        return subprocess.run(
            [sys.executable, "-m", "wsgate", *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def mg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.wsgate("mg", *args)

    def mg_ok(self, *args: str) -> str:
        result = self.mg(*args)
        assert result.returncode == 0, (
            f"wsgate mg {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
        return result.stdout

    def login(self, env: str = "dev") -> None:
        """``mg add env`` + ``mg login`` (idempotent)."""
        self.mg_ok("add", "env", env, "--adapter", self.adapter_url)
        self.mg_ok("login", env, "-u", "admin", "-p", "admin", "-k")

    def testkey(self, scope: str = "", via: str = "https") -> str:
        """A test key from the router's /testkey, fetched with curl like the docs say."""
        port = self.ports.router_tls if via == "https" else self.ports.router
        url = f"{via}://localhost:{port}/testkey"
        auth = f"Authorization: {ADMIN_BASIC}"
        if shutil.which("curl"):
            out = subprocess.run(
                ["curl", "-sk", "-X", "POST", url, "-d", f"scope={scope}", "-H", auth],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        else:
            answer = httpx.post(
                url, data={"scope": scope}, headers={"Authorization": ADMIN_BASIC}, verify=False
            )
            out = answer.text
        token = out.strip()
        assert token.count(".") == 2, f"/testkey did not answer a JWT: {out[:300]!r}"
        return token

    def project_copy(
        self,
        name: str = "EchoWebSocket",
        context: str = "/echowebsocket",
        endpoint: str | None = None,
    ) -> Path:
        """The EchoWebSocket example, pointed at this stack's echo backend (only the endpoint,
        and optionally name and context, differ from examples/)."""
        target = self.work / "projects" / f"{name}-1.0.0"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(EXAMPLE, target)
        url = endpoint or f"ws://localhost:{self.ports.echo}"
        api = yaml.safe_load((target / "api.yaml").read_text())
        api["data"]["name"] = name
        api["data"]["context"] = context
        api["data"]["endpointConfig"]["production_endpoints"]["url"] = url
        api["data"]["endpointConfig"]["sandbox_endpoints"]["url"] = url
        (target / "api.yaml").write_text(yaml.safe_dump(api, sort_keys=False))
        doc = yaml.safe_load((target / "Definitions" / "asyncapi.yaml").read_text())
        doc["info"]["title"] = name
        doc["servers"]["production"]["url"] = url
        (target / "Definitions" / "asyncapi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return target

    def adapter_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.adapter_api,
            headers={"Authorization": ADMIN_BASIC},
            verify=self.tls(),
            timeout=30,
        )

    def cp_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.cp_api,
            headers={"Authorization": ADMIN_BASIC},
            verify=self.tls(),
            timeout=30,
        )


async def try_handshake(
    url: str, token: str | None = None, message: str | bytes = "hello", ca: Path | None = None
) -> Handshake:
    """Open ``url`` (with a Bearer token), send ``message`` and return what came back."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = None
    if url.startswith("wss:"):
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    try:
        async with connect(url, additional_headers=headers, open_timeout=10, ssl=context) as ws:
            await ws.send(message)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            return Handshake(101, echoed=echoed)
    except InvalidStatus as exc:
        return Handshake(exc.response.status_code, bytes(exc.response.body or b""))
    except ConnectionClosed as exc:
        # Allowed, then closed by a rule that reached the router a moment later (a revocation
        # or block is pushed on another stream than the Check answer).
        if exc.rcvd is None:
            raise
        return Handshake(101, closed=(exc.rcvd.code, exc.rcvd.reason))


def handshake(
    url: str, token: str | None = None, message: str | bytes = "hello", ca: Path | None = None
) -> Handshake:
    return asyncio.run(try_handshake(url, token, message, ca))


def wscat_or_skip() -> Path:
    """The locally installed wscat; in CI its absence is a failure, not a skip."""
    if WSCAT.exists():
        return WSCAT
    if os.environ.get("CI") == "true":
        pytest.fail(f"{WSCAT} is missing: run `npm ci` (make test does)")
    pytest.skip(f"{WSCAT} is missing: run `npm ci`")


def run_wscat(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run wscat with stdin held open: it quits at once on stdin EOF, before its ``-w`` wait."""
    proc = subprocess.Popen(
        [str(wscat_or_skip()), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        proc.stdin.close()
    out, err = proc.stdout.read(), proc.stderr.read()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def distinct_free_ports() -> Ports:
    """Free ports, all different: each socket stays bound until every port has been picked."""
    with contextlib.ExitStack() as held:
        picked = {}
        for name, _ in Ports().items():
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            picked[name] = int(sock.getsockname()[1])
    return Ports(**picked)


# Started together, wave after wave: each wave's components only stream from earlier waves'
# (a component started early waits for the others quietly, but with a retry backoff).
WAVES = (("echo-backend", "adapter"), ("enforcer",), ("router", "control-plane"))


def _start(stack: Stack, log_dir: Path, exit_stack: contextlib.ExitStack) -> None:
    by_name = {component.name: component for component in components(stack.ports)}
    assert sorted(by_name) == sorted(name for wave in WAVES for name in wave)
    for wave in WAVES:
        for name in wave:
            proc = Proc(name, [by_name[name].command], stack.env, log_dir)
            exit_stack.callback(proc.stop)
            stack.procs[name] = proc
        for name in wave:
            proc, url = stack.procs[name], by_name[name].ready_url
            try:
                wait_for(
                    lambda proc=proc, url=url: proc.alive() and http_ok(url),  # type: ignore[misc]
                    60,
                    f"{name} to be ready",
                )
            except TimeoutError:
                raise RuntimeError(f"{name} did not become ready; log:\n{proc.log()}") from None
    # On exit, this runs first: every component is told to stop at once, then each is waited
    # for (one after the other they took 3 s per stack).
    exit_stack.callback(lambda: [proc.terminate() for proc in stack.procs.values()])


@contextlib.contextmanager
def start_stack(base: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """The five processes on free ports under ``base``; ``extra_env`` overrides settings."""
    ports = distinct_free_ports()
    data_dir, cli_home, work = base / "data", base / "cli-home", base / "work"
    for folder in (data_dir, cli_home, work, base / "logs"):
        folder.mkdir()
    # The user's view: run from the repository, with examples/ at hand.
    (work / "examples").symlink_to(REPO / "examples")
    ensure_pki(data_dir / "pki")
    env = {
        **os.environ,
        **component_env(ports, data_dir),
        "WSGATE_CLI_HOME": str(cli_home),
        "WSGATE_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO),
        **(extra_env or {}),
    }
    result = Stack(ports, data_dir, cli_home, work, env)
    with contextlib.ExitStack() as exit_stack:
        result.log_dir, result.exit_stack = base / "logs", exit_stack
        try:
            _start(result, base / "logs", exit_stack)
        except RuntimeError as exc:
            pytest.fail(f"stack did not start: {exc}\n\nother logs:\n{result.logs()}")
        yield result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("stack")) as result:
        yield result


@pytest.fixture(scope="module")
def relay_stack(tmp_path_factory: pytest.TempPathFactory, relay_path: str) -> Iterator[Stack]:
    """The whole stack with its router on ``relay_path`` (a module whose tests exercise the
    relay overrides ``stack`` with this one, so they run on both paths)."""
    with start_stack(
        tmp_path_factory.mktemp(f"stack-{relay_path}"), relay_env(relay_path)
    ) as result:
        check_router(result.ports.router, relay_path)
        yield result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        found = getattr(item, "funcargs", {}).get("stack")
        if isinstance(found, Stack):
            report.sections.append(("component logs (tail)", found.logs()))
