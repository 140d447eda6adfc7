"""Engine, sessions and schema migrations (Alembic, applied at start)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from fastapi import Request
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

#: Located next to this file so that an editable install (or a wheel) finds it.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, busy_timeout: float = 30.0) -> Engine:
    """Create the engine; for SQLite, make the file's directory, turn foreign keys on, and let
    a writer wait ``busy_timeout`` seconds for another writer's lock instead of failing."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _owner_only(Path(path))
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout}
        )
        milliseconds = int(busy_timeout * 1000)

        def pragmas(dbapi_connection: Any, record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, record)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={milliseconds}")
            cursor.close()

        event.listen(engine, "connect", pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _owner_only(path: Path) -> None:
    """The database holds hashed secrets and every tenant's data: create it 0600 (SQLite
    gives its -wal and -shm files the same mode), and close up a file made before."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores ON DELETE CASCADE unless asked per connection; WAL lets /ready read while
    # a request writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config that needs no alembic.ini; ``engine`` is handed to env.py."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest revision (``alembic upgrade head``)."""
    command.upgrade(alembic_config(engine), "head")


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: one session per request, closed (and rolled back if open) after."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


def as_utc(value: datetime) -> datetime:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
