"""The Alembic migrations build exactly the schema the models describe (SQLite and
PostgreSQL), seed the default tiers and environment, and keep data across restarts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from control_plane.db import make_engine, make_sessionmaker, migrate
from control_plane.models import Base, Environment, ThrottlingPolicy
from tests.procs import import_or_unavailable, unavailable

TABLES = {
    "apis",
    "api_revisions",
    "revision_deployments",
    "throttling_policies",
    "environments",
    "applications",
    "subscriptions",
    "key_mappings",
    "revoked_tokens",
    "api_keys",
    "subscription_blocks",
    "shared_scopes",
}
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def check_schema(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)  # a second start finds nothing to do (and seeds nothing twice)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    with make_sessionmaker(engine)() as session:
        policies = session.scalars(select(ThrottlingPolicy)).all()
        assert len(policies) == 16
        gold = next(p for p in policies if p.name == "AsyncGold")
        assert (gold.kind, gold.count, gold.time_unit) == ("subscription", 5000, "min")
        [default] = session.scalars(select(Environment)).all()
        assert default.name == "Default" and default.vhosts[0]["host"] == "localhost"


def test_upgrade_head_matches_models_and_is_repeatable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/nested/cp.db")
    check_schema(engine)
    engine.dispose()


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    psycopg = import_or_unavailable("psycopg")
    schema = f"wsgate_cp_unit_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        engine = make_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        )
        try:
            yield engine
        finally:
            engine.dispose()
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_upgrade_on_postgresql(pg_engine: Engine) -> None:
    check_schema(pg_engine)
    columns = {c["name"]: c for c in inspect(pg_engine).get_columns("applications")}
    assert "JSONB" in str(columns["attributes"]["type"]).upper()


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    from alembic import command

    from control_plane.db import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path}/cp.db")
    migrate(engine)
    command.downgrade(alembic_config(engine), "0001_initial")
    assert "applications" not in inspect(engine).get_table_names()
    assert "apis" in inspect(engine).get_table_names()
    check_schema(engine)
    engine.dispose()


def test_api_keys_migration_downgrades_alone_and_keeps_applications(tmp_path: Path) -> None:
    """0003_i8_api_keys and 0004_i12_hostile only add tables: going back to 0002 keeps every
    other row."""
    from alembic import command
    from sqlalchemy import text

    from control_plane.db import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path}/cp.db")
    migrate(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "0004_i12_hostile"
        )
        connection.execute(
            text(
                "INSERT INTO applications (id, name, owner, throttling_policy, description,"
                " attributes, created_at) VALUES ('0123456789abcdef0123456789abcdef', 'A', 'o',"
                " 'Unlimited', '', '{}', '2026-12-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO api_keys (jti, application_id, key_type, issued_at, expires_at,"
                " revoked) VALUES ('j1', '0123456789abcdef0123456789abcdef', 'PRODUCTION',"
                " '2026-12-01 00:00:00', NULL, 0)"
            )
        )
    command.downgrade(alembic_config(engine), "0002_api_manager")
    assert "api_keys" not in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM applications")).scalar() == 1
    check_schema(engine)
    engine.dispose()
