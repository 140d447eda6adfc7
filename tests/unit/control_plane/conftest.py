"""An in-process control plane on a temporary SQLite file, and a fake adapter to push to."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient

from control_plane import signing
from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from tests.procs import free_port
from tests.unit.control_plane.helpers import AUTH, FakeAdapter
from wsgate_proto import deploy_pb2_grpc


@pytest.fixture(scope="session")
def signing_key_pem(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One RSA key for the whole session: generating one per test costs ~0.1 s each."""
    directory = tmp_path_factory.mktemp("signing")
    signing.load_or_create(directory)
    return (directory / signing.KEY_FILE).read_bytes()


@pytest.fixture(autouse=True)
def _no_stale_log_handlers() -> Iterator[None]:
    """Another test's ``setup_logging`` (e.g. ``wsgate up`` in tests/unit/cli) can leave the
    root logger writing to a stream pytest has closed since; the control plane's background
    sync would then print "--- Logging error ---". Drop such handlers, restore afterwards."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers[:] = [
        h
        for h in saved
        if not (isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False))
    ]
    yield
    root.handlers[:] = saved


@pytest.fixture
def settings(tmp_path: Path, signing_key_pem: bytes) -> ControlPlaneSettings:
    """Settings whose adapter address has nobody listening."""
    (tmp_path / "control-plane").mkdir()
    (tmp_path / "control-plane" / signing.KEY_FILE).write_bytes(signing_key_pem)
    return ControlPlaneSettings(
        data_dir=tmp_path,
        cp_adapter_address=f"127.0.0.1:{free_port()}",
        cp_sync_interval=0.05,
        cp_adapter_timeout=1.0,
        grpc_tls="plaintext",  # the fake adapter below listens without TLS
    )


@pytest.fixture
def client(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        test_client.auth = AUTH
        yield test_client


@pytest.fixture
def fake_adapter() -> Iterator[tuple[FakeAdapter, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a throw-away schema of the PostgreSQL at 127.0.0.1:5432 (db test, trust),
    dropped afterwards. It runs on every machine of this project: unreachable is a failure."""
    import psycopg

    server = "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"wsgate_cp_push_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield (
                "postgresql+psycopg://postgres@127.0.0.1:5432/test"
                f"?options=-csearch_path%3D{schema}"
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
