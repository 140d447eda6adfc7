"""The local stack as data: which components, on which ports, with which environment.

`wsgate up` and the integration tests both start the stack from this description, so the
environment variables a component reads are spelled in exactly one place outside it.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    """Every port the local stack listens on; the defaults are the documented ones."""

    cp: int = 9443
    adapter_rest: int = 9843
    adapter_xds: int = 18000
    adapter_deploy: int = 18001
    enforcer_grpc: int = 8081
    enforcer_http: int = 8082
    router: int = 9090
    router_tls: int = 9095
    echo: int = 8765

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@dataclass(frozen=True)
class Component:
    """One process: its `wsgate` sub-command and the URL that says it can serve."""

    name: str
    command: str
    ready_url: str


#: Where the local stack listens: this machine only, so the built-in admin:admin users (and
#: the test keys they can mint) are not offered to the network (wsgate_common/safety.py).
LOOPBACK_HOSTS = {
    "WSGATE_CP_HOST": "127.0.0.1",
    "WSGATE_ADAPTER_HOST": "127.0.0.1",
    "WSGATE_ENFORCER_HOST": "127.0.0.1",
    "WSGATE_ROUTER_HOST": "127.0.0.1",
}


def component_env(ports: Ports, data_dir: Path) -> dict[str, str]:
    """The ``WSGATE_*`` variables that wire the components to each other on ``ports``."""
    return {
        **LOOPBACK_HOSTS,
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_CP_PORT": str(ports.cp),
        "WSGATE_CP_ADAPTER_ADDRESS": f"localhost:{ports.adapter_deploy}",
        "WSGATE_ADAPTER_REST_PORT": str(ports.adapter_rest),
        "WSGATE_ADAPTER_XDS_PORT": str(ports.adapter_xds),
        "WSGATE_ADAPTER_DEPLOY_PORT": str(ports.adapter_deploy),
        "WSGATE_ENFORCER_GRPC_PORT": str(ports.enforcer_grpc),
        "WSGATE_ENFORCER_HTTP_PORT": str(ports.enforcer_http),
        "WSGATE_XDS_ADDRESS": f"localhost:{ports.adapter_xds}",
        "WSGATE_ROUTER_PORT": str(ports.router),
        "WSGATE_ROUTER_TLS_PORT": str(ports.router_tls),
        # the consoles' WebSocket URLs and CSP connect-src name the router's ports
        "WSGATE_CP_ROUTER_WS_PORT": str(ports.router),
        "WSGATE_CP_ROUTER_WSS_PORT": str(ports.router_tls),
        "WSGATE_ENFORCER_ADDRESS": f"localhost:{ports.enforcer_grpc}",
        "WSGATE_ENFORCER_HTTP_URL": f"http://localhost:{ports.enforcer_http}",
        "WSGATE_ECHO_PORT": str(ports.echo),
        "PYTHONUNBUFFERED": "1",
    }


def components(ports: Ports) -> list[Component]:
    """In start order: the adapter before those that stream from it, the backend first."""
    return [
        Component("echo-backend", "echo-backend", f"http://127.0.0.1:{ports.echo}/health"),
        Component("adapter", "adapter", f"https://127.0.0.1:{ports.adapter_rest}/health"),
        Component("enforcer", "enforcer", f"http://127.0.0.1:{ports.enforcer_http}/ready"),
        Component("router", "router", f"http://127.0.0.1:{ports.router}/ready"),
        Component("control-plane", "control-plane", f"https://127.0.0.1:{ports.cp}/health"),
    ]


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    """True when something listens on ``port`` (a TIME_WAIT leftover does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def busy_ports(ports: Ports) -> list[tuple[str, int]]:
    return [(name, port) for name, port in ports.items() if port_in_use(port)]


def duplicate_ports(ports: Ports) -> dict[int, list[str]]:
    """Ports named more than once (two listeners cannot share one)."""
    names: dict[int, list[str]] = {}
    for name, port in ports.items():
        names.setdefault(port, []).append(name)
    return {port: listed for port, listed in names.items() if len(listed) > 1}
