"""Engine settings: SQLite waits for another writer's lock instead of failing at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from control_plane.db import make_engine


def test_sqlite_busy_timeout_is_set_and_a_writer_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cp.db"
    default = make_engine(url)  # 30 s unless WSGATE_DATABASE_BUSY_TIMEOUT says otherwise
    with default.connect() as connection:
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    default.dispose()
    engine = make_engine(url, busy_timeout=2.5)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 2500
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
        connection.commit()
    holder = sqlite3.connect(tmp_path / "cp.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 0.5 s
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    waited = time.monotonic() - started
    print(f"\nwrite waited {waited:.2f} s for the other writer")
    assert waited >= 0.4
    holder.close()
    engine.dispose()
