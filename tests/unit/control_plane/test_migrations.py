"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from control_plane.db import make_engine, migrate
from control_plane.models import Base


def test_upgrade_head_matches_models_and_is_repeatable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/nested/cp.db")
    migrate(engine)
    migrate(engine)  # a second start finds nothing to do
    assert {"apis", "api_revisions", "revision_deployments"} <= set(
        inspect(engine).get_table_names()
    )
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
