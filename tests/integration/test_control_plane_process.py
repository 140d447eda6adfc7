"""A publisher creates, publishes and deploys an API on a real control-plane process, and it
is all still there after a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.control_plane_flow import (
    assert_still_there,
    closed_address,
    control_plane,
    publish_and_deploy,
)
from tests.procs import free_port, import_or_unavailable, unavailable

pytestmark = pytest.mark.integration

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_publisher_flow_survives_restart_without_adapter(tmp_path: Path) -> None:
    port, adapter = free_port(), closed_address()
    with control_plane(tmp_path, port, adapter) as (proc, client):
        api_id, revision_id = publish_and_deploy(client, "Echo", "/echo")
        duplicate = client.post(
            "/apis", json={"name": "Echo", "context": "/echo2", "version": "1.0"}
        )
        assert duplicate.status_code == 409
    assert proc.popen.returncode == 0, proc.log()
    assert (tmp_path / "control-plane.db").exists()
    assert "will be sent by the next sync" in proc.log()
    with control_plane(tmp_path, port, adapter) as (_, client):
        assert_still_there(client, api_id, revision_id)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A throw-away schema in the shared PostgreSQL database, dropped afterwards."""
    psycopg = import_or_unavailable("psycopg")
    schema = f"wsgate_cp_{uuid.uuid4().hex[:12]}"
    try:
        connection = psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/test", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    with connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema
        finally:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_publisher_flow_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    url = f"{PG_SERVER}?options=-csearch_path%3D{pg_schema}"
    port, adapter = free_port(), closed_address()
    with control_plane(tmp_path, port, adapter, WSGATE_DATABASE_URL=url) as (proc, client):
        api_id, revision_id = publish_and_deploy(client, "EchoPg", "/echo-pg")
    assert proc.popen.returncode == 0, proc.log()
    assert not (tmp_path / "control-plane.db").exists()
    with control_plane(tmp_path, port, adapter, WSGATE_DATABASE_URL=url) as (_, client):
        assert_still_there(client, api_id, revision_id)
