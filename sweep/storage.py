"""Optuna storage from a URL: parse and check it, serialize first-time creation across processes
(:func:`creation_lock`, a file lock or a PostgreSQL advisory lock), open it with heartbeats and
retries (:func:`open_storage`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import optuna
from filelock import FileLock

from sweep import dbpool, sqlite
from sweep.errors import StorageError, StudyError, TrackingError
from sweep.preflight import check_writable_sqlite
from sweep.redact import mask_url, redact
from sweep.storage_retry import RetryingRDBStorage

# A worker's heartbeat every HEARTBEAT_INTERVAL s; a trial without one for GRACE_PERIOD s is
# failed and retried with the same parameters. The environment overrides both (tests use ~1 s).
HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 60


def check_url(url: str) -> None:
    """Raise StorageError if ``url`` is not a usable database URL (no connection is made).

    For SQLite it also checks that the database's folder exists.
    """
    _parse_url(url)  # raises on a malformed URL
    path = sqlite_path(url)
    if path is not None and not path.parent.exists():
        raise StorageError(
            f"storage {mask_url(url)}: folder {path.parent} does not exist; create it first"
        )


def _parse_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not a database URL; use e.g. sqlite:///sweep.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from None
    if parsed.drivername == "postgresql" or parsed.drivername == "postgres":
        # Bare postgresql:// means psycopg2 to SQLAlchemy; we ship psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(
            f"storage URL {mask_url(url)!r}: unsupported database '{parsed.get_backend_name()}'; "
            "use sqlite:///FILE or postgresql+psycopg://..."
        )
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or in-memory SQLite)."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _heartbeat_settings() -> tuple[int, int]:
    def read(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise StorageError(f"{name}={raw!r}: must be a whole number of seconds >= 1")
        return value

    interval = read("SWEEP_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL)
    grace = read("SWEEP_GRACE_PERIOD", GRACE_PERIOD)
    if grace <= interval:
        raise StorageError(
            f"SWEEP_GRACE_PERIOD ({grace}) must be longer than SWEEP_HEARTBEAT_INTERVAL ({interval}), "
            "or live trials would be reaped"
        )
    return interval, grace


@contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialize first-time creation (tables, study) across processes sharing ``url``.

    Optuna 5.0 crashes when several processes create its tables or one study at once ("table
    already exists", unique violations). PostgreSQL: a transaction-level advisory lock, held by a
    transaction left open for the block: it cannot outlive its holder, also behind pgbouncer in
    transaction mode (a session-level lock would stay on a pooled server connection). Waiters poll
    with ``pg_try_advisory_xact_lock`` and end their transaction between tries: a blocked waiter
    would hold one of pgbouncer's server connections, and as many waiters as the pool has
    connections would starve the holder until pgbouncer's query_wait_timeout (120 s; seen with a
    small pool). Optuna's storage set-up needs 2 more connections beside the lock's: give pgbouncer
    a pool of at least 3 per database. SQLite: a file lock in the temp
    folder (all SQLite users of one file are on one machine); other databases: none.
    """
    parsed = _parse_url(url)
    key = int(hashlib.sha256(b"lstm-sweep:create").hexdigest()[:15], 16)
    if parsed.get_backend_name() == "postgresql":
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(parsed, poolclass=NullPool, connect_args=dbpool.connect_args())
        try:
            with engine.connect() as conn:
                pause = 0.02
                while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar():
                    conn.rollback()
                    time.sleep(pause * (0.5 + random.random()))  # jittered, so waiters do not poll in step
                    pause = min(pause * 1.5, 0.5)
                try:
                    yield
                finally:
                    conn.rollback()  # ends the transaction: releases the lock
        finally:
            engine.dispose()
        return
    path = sqlite_path(url)
    if path is None:
        yield
        return
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"lstm-sweep-{digest}.lock"):
        yield


def _schema_is_complete(parsed: Any) -> bool:
    """Whether Optuna's tables on a server database are fully set up (its last step, the alembic
    stamp, is done), so opening the storage writes nothing and needs no creation lock."""
    if parsed.get_backend_name() not in ("postgresql", "mysql"):
        return False
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    connect_args = dbpool.connect_args() if parsed.get_backend_name() == "postgresql" else {}
    engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM alembic_version LIMIT 1")).first() is not None
    except Exception:  # noqa: BLE001 - no table yet (or no server: open_storage reports that)
        return False
    finally:
        engine.dispose()


def open_storage(url: str, *, must_exist: bool = False, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``, with heartbeats so a dead worker's trial is reaped.

    Args:
        url: any SQLAlchemy URL Optuna accepts.
        must_exist: for read-only commands: refuse to create a new SQLite file.
        heartbeat: enable trial heartbeats (for workers; readers don't need them).

    Raises:
        StorageError: malformed URL, missing SQLite folder/file, or an unreachable database.
    """
    parsed = _parse_url(url)
    masked = mask_url(parsed.render_as_string(hide_password=False))
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            if must_exist and not path.exists():
                raise StudyError(
                    f"no studies yet: {masked} does not exist; start one with `sweep run DATA` "
                    "or point --storage at an existing database"
                )
            check_url(url)
        engine_kwargs["connect_args"] = {"timeout": 60}
        sqlite.tune_connections()
        if path is not None and not must_exist:
            try:
                check_writable_sqlite(path, what="storage", shown=masked, fix="point --storage at another file")
            except TrackingError as exc:
                raise StorageError(str(exc)) from None
            from sweep.faults import check_writable

            problem = check_writable(path, "storage")  # a full disk, before the first write
            if problem is not None:
                raise StorageError(problem)
            try:
                sqlite.use_wal(path)
            except sqlite3.Error as exc:
                from sweep.faults import describe_fault

                raise StorageError(f"storage {masked}: {describe_fault(exc) or exc}; check the file, or point --storage "
                                   "at another one") from None
    elif parsed.get_backend_name() == "postgresql":
        engine_kwargs = dbpool.engine_kwargs()  # pool sizes, no server-side prepared statements (pgbouncer)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        interval, grace = _heartbeat_settings()
        kwargs = dict(
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    plain_url = parsed.render_as_string(hide_password=False)
    try:
        # The lock serializes first-time creation only: 60 workers starting at once on a made
        # database would otherwise queue for it one storage set-up (~0.1-5 s) at a time.
        with contextlib.nullcontext() if _schema_is_complete(parsed) else creation_lock(plain_url):
            # Lost connections and locked files are retried for up to a minute (sweep/storage_retry.py).
            storage = RetryingRDBStorage(plain_url, engine_kwargs=engine_kwargs, **kwargs)
        if os.environ.get("SWEEP_STORAGE_TIMING"):
            from sweep.storage_timing import time_storage

            time_storage(storage, Path(os.environ["SWEEP_STORAGE_TIMING"]))
        return storage
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors vary by database
        from sweep.faults import describe_fault

        fault = describe_fault(exc)
        if fault is not None and not fault.startswith("a server"):  # a full disk, a read-only file: say so
            raise StorageError(f"storage {masked}: {fault}") from None
        text = str(getattr(exc, "orig", None) or exc).strip()
        reason = redact(text.splitlines()[0] if text else type(exc).__name__, url, plain_url)
        raise StorageError(
            f"cannot open storage {masked}: {reason}; check the host, port, database name and credentials"
        ) from None
