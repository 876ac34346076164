"""SQLAlchemy engine settings for a PostgreSQL storage, safe behind a connection pooler.

Every worker holds its own SQLAlchemy pool; with dozens of workers the database runs out of
connections ("too many clients") unless a pooler such as pgbouncer sits in front of it. These
settings work directly and through pgbouncer in session or transaction mode alike:

* no server-side prepared statements (psycopg's ``prepare_threshold=None``): in transaction
  mode consecutive transactions of one client land on different server connections, where a
  statement prepared on another one does not exist. Measured: no difference in storage-call
  latency on a direct connection (BENCHMARKS.md, "Many workers on one study").
* the per-worker pool size: ``SWEEP_DB_POOL_SIZE`` (default 5, SQLAlchemy's) connections kept
  open, ``SWEEP_DB_MAX_OVERFLOW`` (default 10) more opened on demand. A worker uses at most two at
  a time (its trial loop and its heartbeat thread), so it keeps two open. ``SWEEP_DB_POOL_SIZE=0``
  keeps none: a connection per storage call (what a pgbouncer in *session* mode needs, or it pins
  a server connection to every idle worker).

No heavy imports at module level: the CLI's quick commands import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.errors import StorageError

ENV_POOL_SIZE = "SWEEP_DB_POOL_SIZE"
ENV_MAX_OVERFLOW = "SWEEP_DB_MAX_OVERFLOW"
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class PoolSettings:
    """A worker's connection pool: ``pool_size`` kept open (0: none), ``max_overflow`` more on demand."""

    pool_size: int = 5
    max_overflow: int = 10


def pool_settings(environ: Mapping[str, str] | None = None) -> PoolSettings:
    """The pool settings from ``SWEEP_DB_POOL_SIZE`` / ``SWEEP_DB_MAX_OVERFLOW`` (defaults otherwise).

    Raises:
        StorageError: a value that is not a whole number >= 0.
    """
    env = os.environ if environ is None else environ
    defaults = PoolSettings()

    def read(name: str, default: int) -> int:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise StorageError(f"{name}={raw!r}: must be a whole number >= 0 (0: no idle connections kept)")
        return value

    return PoolSettings(pool_size=read(ENV_POOL_SIZE, defaults.pool_size),
                        max_overflow=read(ENV_MAX_OVERFLOW, defaults.max_overflow))


def connect_args() -> dict[str, Any]:
    """psycopg connection arguments: a short connect timeout, no server-side prepared statements."""
    return {"connect_timeout": CONNECT_TIMEOUT_S, "prepare_threshold": None}


def engine_kwargs(settings: PoolSettings | None = None) -> dict[str, Any]:
    """``create_engine`` keyword arguments for a PostgreSQL storage (Optuna's ``engine_kwargs``)."""
    settings = settings or pool_settings()
    kwargs: dict[str, Any] = {"connect_args": connect_args(), "pool_pre_ping": True}
    if settings.pool_size == 0:
        from sqlalchemy.pool import NullPool

        kwargs["poolclass"] = NullPool
    else:
        kwargs["pool_size"] = settings.pool_size
        kwargs["max_overflow"] = settings.max_overflow
    return kwargs
