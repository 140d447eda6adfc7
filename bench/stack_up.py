"""`wsgate up` for the benchmark: the default stack as `make run` starts it, with extra routers.

Runs `wsgate up`'s own code (wsgate/up.py: every component as a supervised child, default
logging, the sample API published and checked through the control plane). The only difference
from `make run`: the one router is replaced by several, each with its own ``WSGATE_*``
additions (e.g. ``WSGATE_RELAY=python``, ``WSGATE_ROUTER_DECISION_CACHE_TTL=0``), so that one
benchmark run can compare relay paths and cache settings side by side. The first router keeps
exactly the environment `make run` gives it. Once everything is ready, the children's pids are
written to the ``--ready-file`` as JSON; SIGTERM stops the stack like Ctrl-C stops `make run`.

    .venv/bin/python bench/stack_up.py CONFIG.json READY.json
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsgate import up
from wsgate.stack import Ports
from wsgate_common.logs import setup_logging


def replicas(config: dict[str, object], ports: Ports) -> list[up.Replica]:
    """One enforcer on the stack's ports, then the routers the config names, in order."""
    enforcer = up.Replica(
        "enforcer",
        "enforcer",
        "Default",
        ports.enforcer_grpc,
        ports.enforcer_http,
        {
            "WSGATE_ENFORCER_GRPC_PORT": str(ports.enforcer_grpc),
            "WSGATE_ENFORCER_HTTP_PORT": str(ports.enforcer_http),
        },
    )
    found = [enforcer]
    routers = config["routers"]
    assert isinstance(routers, list)
    for spec in routers:
        env = {
            "WSGATE_LABEL": "Default",
            "WSGATE_ROUTER_PORT": str(spec["port"]),
            "WSGATE_ROUTER_TLS_PORT": str(spec["tls_port"]),
            "WSGATE_ENFORCER_ADDRESS": f"localhost:{ports.enforcer_grpc}",
            "WSGATE_ENFORCER_HTTP_URL": f"http://localhost:{ports.enforcer_http}",
            **spec["env"],
        }
        found.append(
            up.Replica(spec["name"], "router", "Default", spec["port"], spec["tls_port"], env)
        )
    return found


async def serve(config: dict[str, object], ready_file: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ports_spec = config["ports"]
    assert isinstance(ports_spec, dict)
    ports = Ports(**ports_spec)
    settings = up.UpSettings().model_copy(update={"data_dir": Path(str(config["data_dir"]))})
    stack = up.Up(settings, ports, True, replicas(config, ports))
    status = 0
    try:
        await stack.start()
        pids = {name: child.proc.pid for name, child in stack.children.items() if child.proc}
        keys = stack.sample_keys
        ready: dict[str, object] = {"pids": pids, "supervisor": os.getpid()}
        if keys is not None:
            ready["sample_application"] = keys.application_id
        partial = ready_file.with_suffix(".partial")
        partial.write_text(json.dumps(ready))
        partial.rename(ready_file)  # whole or absent: the bench polls for it
        await stop.wait()
    except (TimeoutError, up.sample_api.SampleApiError, OSError, ValueError) as exc:
        logging.getLogger("wsgate.up").error("bench stack failed: %s", exc)
        status = 1
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
    return status


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    settings = up.UpSettings()
    setup_logging("up", settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as `wsgate up` does
    return asyncio.run(serve(config, Path(sys.argv[2])))


if __name__ == "__main__":
    raise SystemExit(main())
