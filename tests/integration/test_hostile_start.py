"""Issue 12 item 8 on real processes: a malformed WSGATE_CP_USERS stops the control plane at
start naming the format (never a password); its SQLite file is created 0600; X-Request-ID
comes back only in a safe shape."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.control_plane_flow import closed_address, control_plane
from tests.procs import REPO, free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("component", ["control-plane", "adapter"])
def test_semicolon_separated_users_refuse_to_start(tmp_path: Path, component: str) -> None:
    variable = "WSGATE_CP_USERS" if component == "control-plane" else "WSGATE_ADAPTER_USERS"
    env = {**os.environ, "WSGATE_DATA_DIR": str(tmp_path), variable: "alice:pw1;bob:pw2"}
    done = subprocess.run(
        [sys.executable, "-m", "wsgate", component, "--port", str(free_port())],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "name:password,name:password" in output
    assert "pw2" not in output


def test_sqlite_mode_and_request_ids(tmp_path: Path) -> None:
    with control_plane(tmp_path, free_port(), closed_address()) as (_, client):
        evil = client.get("/apis", headers={"X-Request-ID": "../../evil<script>"})
        assert evil.status_code == 200
        assert evil.headers["x-request-id"] != "../../evil<script>"
        fine = client.get("/apis", headers={"X-Request-ID": "trace-42"})
        assert fine.headers["x-request-id"] == "trace-42"
        huge = client.get("/apis", params={"offset": "99999999999999999999"})
        assert huge.status_code == 400, huge.text
    database = tmp_path / "control-plane.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
