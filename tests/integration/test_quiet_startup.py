"""Issue 13 item 7: a normal start-up (a client started before its server, a port probe on a
TLS gRPC port) logs expected waits on one line at INFO/DEBUG, and every line a component writes
is in that component's log format: no multi-line gRPC error reprs, no C-core log lines."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from pathlib import Path

import pytest

from tests.integration.conftest import distinct_free_ports
from tests.integration.control_plane_flow import control_plane
from tests.integration.test_control_plane_adapter import adapter, cp_sees_adapter
from tests.procs import Proc, free_port, port_open, running, wait_for
from wsgate.stack import component_env
from wsgate_common.pki import ensure_pki

pytestmark = pytest.mark.integration

LINE = r"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} {component} (DEBUG|INFO|WARNING|ERROR) [\w.]+: "


def foreign_lines(proc: Proc, component: str) -> list[str]:
    """Lines of ``proc``'s output that are not in ``component``'s text log format."""
    pattern = re.compile(LINE.format(component=re.escape(component)))
    return [line for line in proc.log().splitlines() if line and not pattern.match(line)]


def probe(port: int) -> None:
    """Open and close a TCP connection, as a port check does (a failed TLS handshake)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"hello?\r\n\r\n")
        time.sleep(0.1)


def test_control_plane_and_adapter_start_in_either_order_quietly(tmp_path: Path) -> None:
    rest, xds, deploy, cp_port = free_port(), free_port(), free_port(), free_port()
    # The control plane first: the adapter it pushes to is not up yet (the ordering race).
    with control_plane(tmp_path / "cp", cp_port, f"127.0.0.1:{deploy}") as (cp, _client):
        time.sleep(1.5)  # a few sync ticks against the closed port
        with adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki") as ad:
            wait_for(lambda: cp_sees_adapter(cp_port), 10, "the control plane to see the adapter")
            for port in (deploy, xds):  # mTLS gRPC ports: C-core would log the handshake
                probe(port)
            time.sleep(0.5)
            adapter_foreign = foreign_lines(ad, "adapter")
            adapter_log = ad.log()
            cp_foreign = foreign_lines(cp, "control-plane")
            cp_log = cp.log()  # before the adapter stops (that is worth a WARNING)
    assert adapter_foreign == [], adapter_log
    assert cp_foreign == [], cp_log
    waits = [line for line in cp_log.splitlines() if "not reachable yet" in line]
    assert len(waits) == 1, cp_log
    assert " INFO " in waits[0]
    assert waits[0].endswith(
        f"adapter at 127.0.0.1:{deploy} not reachable yet (UNAVAILABLE); retrying"
    )
    assert "AioRpcError" not in cp_log
    assert "WARNING" not in cp_log, cp_log


def test_router_started_before_its_enforcer_waits_quietly(tmp_path: Path) -> None:
    ports = distinct_free_ports()
    data = tmp_path / "data"
    data.mkdir()
    ensure_pki(data / "pki")
    env = {**component_env(ports, data), "WSGATE_LOG_LEVEL": "INFO"}
    with contextlib.ExitStack() as stack:
        ad = stack.enter_context(
            running("adapter", ["adapter"], env, tmp_path, lambda: port_open(ports.adapter_xds))
        )
        rt = stack.enter_context(
            running("router", ["router"], env, tmp_path, lambda: port_open(ports.router))
        )
        time.sleep(1.5)  # the router's rules stream meets a closed enforcer port
        en = stack.enter_context(
            running("enforcer", ["enforcer"], env, tmp_path, lambda: port_open(ports.enforcer_grpc))
        )
        wait_for(lambda: "rules stream to enforcer" in rt.log(), 20, "the rules stream")
        for port in (ports.enforcer_grpc, ports.adapter_xds):
            probe(port)
        time.sleep(0.5)
        procs = {"router": rt, "enforcer": en, "adapter": ad}
        logs = {name: proc.log() for name, proc in procs.items()}
        foreign = {name: foreign_lines(proc, name) for name, proc in procs.items()}
    for name, lines in foreign.items():
        assert lines == [], f"{name}:\n{logs[name]}"
    waits = [line for line in logs["router"].splitlines() if "not reachable yet" in line]
    assert len(waits) == 1, logs["router"]
    assert " INFO " in waits[0]
    assert waits[0].endswith(
        f"enforcer localhost:{ports.enforcer_grpc} not reachable yet (UNAVAILABLE); retrying"
    )
    assert "AioRpcError" not in logs["router"]
