"""Issue 13 item 2, with real processes: `wsgate mg` cannot undeploy or replace an API the
control plane deployed; the adapter answers 409 naming the owner and the publisher's
`undeploy-revision`, and `mg get apis` shows who owns each API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.control_plane_flow import (
    assert_still_there,
    control_plane,
    publish_and_deploy,
)
from tests.integration.test_control_plane_adapter import adapter, adapter_api_ids, cp_sees_adapter
from tests.procs import REPO, free_port, wait_for

pytestmark = pytest.mark.integration


def project(target: Path, name: str, context: str, version: str) -> Path:
    shutil.copytree(REPO / "examples" / "EchoWebSocket-1.0.0", target)
    api = yaml.safe_load((target / "api.yaml").read_text())
    api["data"].update(name=name, context=context, version=version)
    (target / "api.yaml").write_text(yaml.safe_dump(api, sort_keys=False))
    return target


def test_the_cli_leaves_control_plane_apis_alone(tmp_path: Path) -> None:
    rest, xds, deploy, cp_port = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "WSGATE_CLI_HOME": str(tmp_path / "cli"), "PYTHONPATH": str(REPO)}

    def mg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsgate", "mg", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    with control_plane(tmp_path / "cp", cp_port, f"127.0.0.1:{deploy}") as (_cp, client):
        with adapter(tmp_path / "adapter", rest, xds, deploy, tmp_path / "cp" / "pki"):
            wait_for(lambda: cp_sees_adapter(cp_port), 10, "the control plane to see the adapter")
            api_id, revision = publish_and_deploy(client, "Chat", "/chat")
            assert mg("add", "env", "dev", "--adapter", f"https://127.0.0.1:{rest}").returncode == 0
            assert mg("login", "dev", "-u", "admin", "-p", "admin", "-k").returncode == 0

            listing = mg("get", "apis", "-e", "dev", "-k")
            assert listing.returncode == 0, listing.stderr
            header, row = listing.stdout.strip().splitlines()
            assert header.split() == ["NAME", "VERSION", "TYPE", "CONTEXT", "GATEWAY_ENVS", "OWNER"]
            assert row.split() == ["Chat", "1.0", "WS", "/chat/1.0", "Default", "control-plane"]

            undeploy = mg("undeploy", "api", "-n", "Chat", "-v", "1.0", "-e", "dev", "-k")
            assert undeploy.returncode == 1
            [line] = undeploy.stderr.strip().splitlines()
            assert line.startswith("Error: API owned by the control plane (API Chat 1.0")
            assert f"/apis/{api_id}/undeploy-revision?revisionId={revision}" in line

            other = project(tmp_path / "Other-1.0", "Other", "/chat", "1.0")
            for flags in ((), ("-o",)):
                deployed = mg("deploy", "api", "-f", str(other), "-e", "dev", "-k", *flags)
                assert deployed.returncode == 1, deployed.stdout
                [line] = deployed.stderr.strip().splitlines()
                assert line.startswith("Error: API owned by the control plane (API Chat 1.0")
                assert "undeploy-revision" in line

            # Nothing moved: the adapter still serves the control plane's API, and the
            # publisher still shows its revision deployed.
            assert adapter_api_ids(rest) == {api_id}
            assert_still_there(client, api_id, revision)
            # A CLI API elsewhere is still the CLI's to deploy and undeploy.
            mine = project(tmp_path / "Mine-1.0", "Mine", "/mine", "1.0")
            assert mg("deploy", "api", "-f", str(mine), "-e", "dev", "-k").returncode == 0
            gone = mg("undeploy", "api", "-n", "Mine", "-v", "1.0", "-e", "dev", "-k")
            assert gone.returncode == 0, gone.stderr
