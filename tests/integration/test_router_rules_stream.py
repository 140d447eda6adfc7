"""User story: the router keeps its rules stream (WatchConnections) to a real enforcer process
open across enforcer restarts, logging one line per disconnect and nothing per retry.

What the rules do to live connections is shown in-process (tests/unit/router/test_live.py) and
end to end through the control plane (tests/integration/test_e2e_apim*.py).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.integration.test_router_process import router_env
from tests.procs import Proc, free_port, http_ok, port_open, running, wait_for

pytestmark = pytest.mark.integration

OPEN = "rules stream to enforcer"


def test_rules_stream_survives_an_enforcer_restart(tmp_path: Path, relay_path: str) -> None:
    data_dir = tmp_path / "data"
    grpc_port, http_port, xds_port = free_port(), free_port(), free_port()
    enforcer_env = {
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_XDS_ADDRESS": f"127.0.0.1:{xds_port}",  # nobody listens: no policies needed
        "PYTHONUNBUFFERED": "1",
    }
    enforcer_args = ["enforcer", "--host", "127.0.0.1", "--grpc-port", str(grpc_port)]
    enforcer_args += ["--http-port", str(http_port)]
    env, port, _ = router_env(data_dir, xds_port, relay_path)
    env["WSGATE_ENFORCER_ADDRESS"] = f"127.0.0.1:{grpc_port}"

    def enforcer(log_dir: Path) -> AbstractContextManager[Proc]:
        log_dir.mkdir(exist_ok=True)
        return running(
            "enforcer",
            enforcer_args,
            enforcer_env,
            log_dir,
            lambda: http_ok(f"http://127.0.0.1:{http_port}/health") and port_open(grpc_port),
        )

    def opened(router_log: str) -> int:
        return router_log.count(f"{OPEN} 127.0.0.1:{grpc_port} open")

    with running("router", ["router"], env, tmp_path, lambda: port_open(port)) as router:
        with enforcer(tmp_path / "first"):
            wait_for(lambda: opened(router.log()) == 1, 20, "the rules stream to open")

        # The enforcer is gone: one warning, then quiet retries (0.1 s doubling to 1 s).
        def lost_since_open() -> int:
            after_open = router.log().split(f"{grpc_port} open", 1)[1]
            return after_open.count(f"{OPEN} 127.0.0.1:{grpc_port} lost")

        wait_for(lambda: lost_since_open() == 1, 10, "the disconnect to be logged")
        time.sleep(2.0)  # several failed retries meanwhile: none may log another warning
        assert lost_since_open() == 1, router.log()
        with enforcer(tmp_path / "second"):
            wait_for(lambda: opened(router.log()) == 2, 20, "the rules stream to reopen")
            assert router.alive()
        assert router.stop() == 0
