"""Alembic environment: migrates the engine the control plane hands over, or its settings' URL.

``control_plane.db.migrate`` passes its engine in ``config.attributes["engine"]``; run from the
command line (``alembic -c control_plane/alembic.ini upgrade head``) it reads the same
``WSGATE_*`` settings as the server.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from control_plane.db import make_engine
from control_plane.models import Base
from control_plane.settings import ControlPlaneSettings

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    given = config.attributes.get("engine")
    if isinstance(given, Engine):
        return given
    url = config.get_main_option("sqlalchemy.url") or ControlPlaneSettings().resolved_database_url
    return make_engine(url)


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or ControlPlaneSettings().resolved_database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
