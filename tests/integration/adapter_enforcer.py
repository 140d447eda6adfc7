"""A real adapter and a real enforcer on free ports, wired together: for enforcer stories."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, http_ok, running
from wsgate_common.grpc_tls import GrpcTls, from_pki_dir


@dataclass(frozen=True)
class AdapterEnforcer:
    deploy_address: str
    enforcer_address: str
    enforcer_http: str
    tls: GrpcTls
    xds_address: str = ""


@contextlib.contextmanager
def adapter_and_enforcer(
    data_dir: Path, enforcer_settings: dict[str, str] | None = None
) -> Iterator[AdapterEnforcer]:
    """Start both on label Default (sharing ``data_dir`` and so its CA); stop both on exit.
    ``enforcer_settings`` adds WSGATE_* variables to the enforcer's environment."""
    rest, xds, deploy = free_port(), free_port(), free_port()
    grpc_port, http_port = free_port(), free_port()
    common = {"WSGATE_DATA_DIR": str(data_dir), "WSGATE_LABEL": "Default"}
    adapter_env = {
        **common,
        "WSGATE_ADAPTER_HOST": "127.0.0.1",
        "WSGATE_ADAPTER_REST_PORT": str(rest),
        "WSGATE_ADAPTER_XDS_PORT": str(xds),
        "WSGATE_ADAPTER_DEPLOY_PORT": str(deploy),
    }
    enforcer_env = {
        **common,
        "WSGATE_ENFORCER_HOST": "127.0.0.1",
        "WSGATE_ENFORCER_GRPC_PORT": str(grpc_port),
        "WSGATE_ENFORCER_HTTP_PORT": str(http_port),
        "WSGATE_XDS_ADDRESS": f"127.0.0.1:{xds}",
        **(enforcer_settings or {}),
    }
    with (
        running(
            "adapter",
            ["adapter"],
            adapter_env,
            data_dir,
            ready=lambda: http_ok(f"https://127.0.0.1:{rest}/health"),
        ),
        running(
            "enforcer",
            ["enforcer"],
            enforcer_env,
            data_dir,
            ready=lambda: http_ok(f"http://127.0.0.1:{http_port}/ready"),
        ),
    ):
        yield AdapterEnforcer(
            f"127.0.0.1:{deploy}",
            f"127.0.0.1:{grpc_port}",
            f"http://127.0.0.1:{http_port}",
            from_pki_dir(data_dir / "pki"),
            f"127.0.0.1:{xds}",
        )
