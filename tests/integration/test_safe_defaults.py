"""A real control plane refuses to listen on every interface with the built-in admin:admin
user, and starts when told to with ``--insecure-dev`` (or WSGATE_INSECURE_DEV=true)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.control_plane_flow import closed_address
from tests.procs import REPO, free_port, http_ok, running

pytestmark = pytest.mark.integration


def env(data_dir: Path, **more: str) -> dict[str, str]:
    return {
        "WSGATE_DATA_DIR": str(data_dir),
        "WSGATE_CP_ADAPTER_ADDRESS": closed_address(),
        "WSGATE_CP_USERS": "admin:admin",
        "WSGATE_INSECURE_DEV": "false",
        "PYTHONUNBUFFERED": "1",
        **more,
    }


def test_refuses_all_interfaces_with_the_built_in_user(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "wsgate", "control-plane", "--host", "0.0.0.0", "--port", str(port)],
        env=env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wsgate control-plane: refusing to listen on 0.0.0.0")
    assert "WSGATE_CP_USERS" in lines[0]
    assert not (tmp_path / "pki").exists()  # stopped before doing anything


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--insecure-dev"], {}),
        ([], {"WSGATE_INSECURE_DEV": "true"}),
        ([], {"WSGATE_CP_USERS": "ops:a-long-secret"}),
    ],
    ids=["flag", "env", "own-users"],
)
def test_starts_with_the_override_or_own_users(
    tmp_path: Path, args: list[str], extra: dict[str, str]
) -> None:
    port = free_port()
    argv = ["control-plane", "--host", "0.0.0.0", "--port", str(port), *args]
    with running(
        "control-plane",
        argv,
        env(tmp_path, **extra),
        tmp_path,
        lambda: http_ok(f"https://127.0.0.1:{port}/ready"),
    ) as proc:
        assert proc.alive()
    assert proc.popen.returncode == 0, proc.log()
