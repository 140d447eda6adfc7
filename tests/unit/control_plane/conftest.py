"""An in-process control plane on a temporary SQLite file, and a fake adapter to push to."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from tests.procs import free_port
from tests.unit.control_plane.helpers import AUTH, FakeAdapter
from wsgate_proto import deploy_pb2_grpc


@pytest.fixture
def settings(tmp_path: Path) -> ControlPlaneSettings:
    """Settings whose adapter address has nobody listening."""
    return ControlPlaneSettings(
        data_dir=tmp_path,
        cp_adapter_address=f"127.0.0.1:{free_port()}",
        cp_sync_interval=0.05,
        cp_adapter_timeout=1.0,
    )


@pytest.fixture
def client(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        test_client.auth = AUTH
        yield test_client


@pytest.fixture
def fake_adapter() -> Iterator[tuple[FakeAdapter, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    adapter = FakeAdapter()
    deploy_pb2_grpc.add_DeploymentServiceServicer_to_server(adapter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield adapter, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def adapter_client(
    settings: ControlPlaneSettings, fake_adapter: tuple[FakeAdapter, str]
) -> Iterator[tuple[TestClient, FakeAdapter]]:
    adapter, address = fake_adapter
    settings = settings.model_copy(update={"cp_adapter_address": address})
    with TestClient(create_app(settings)) as test_client:
        test_client.auth = AUTH
        yield test_client, adapter
