"""SQLite for several local processes: WAL journal, NORMAL sync, a busy timeout.

In WAL mode readers never block the writer and a commit costs no fsync, so two workers and a
`sweep status` can share one file without "database is locked" errors, and each trial's dozens
of small commits get cheaper. A crash of a process loses nothing; a power cut may lose the last
commits. Only writers switch a file to WAL (it is a persistent property of the file): read-only
commands leave the file as they found it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_MS = 60_000
_installed = False


def tune_connections() -> None:
    """Give every SQLite connection SQLAlchemy opens in this process (Optuna's, MLflow's) a busy
    timeout, and NORMAL sync when its file is in WAL mode."""
    global _installed
    if _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_conn: Any, record: Any) -> None:
        if not isinstance(dbapi_conn, sqlite3.Connection):
            return
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    _installed = True


def use_wal(path: str | Path) -> None:
    """Switch a SQLite file (created if missing) to WAL mode; a no-op if it already is."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
