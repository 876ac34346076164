"""PostgreSQL storage settings a connection pooler needs: pool sizes from the environment, no
server-side prepared statements, and a creation lock that cannot outlive its holder."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from sweep import dbpool
from sweep.errors import StorageError

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_pool_settings_default_to_sqlalchemys_and_read_the_environment():
    assert dbpool.pool_settings({}) == dbpool.PoolSettings(pool_size=5, max_overflow=10)
    got = dbpool.pool_settings({"SWEEP_DB_POOL_SIZE": "2", "SWEEP_DB_MAX_OVERFLOW": "0"})
    assert got == dbpool.PoolSettings(pool_size=2, max_overflow=0)


@pytest.mark.parametrize("name", ["SWEEP_DB_POOL_SIZE", "SWEEP_DB_MAX_OVERFLOW"])
@pytest.mark.parametrize("raw", ["-1", "two", "1.5"])
def test_a_bad_pool_setting_is_one_clear_error(name, raw):
    with pytest.raises(StorageError, match=rf"^{name}='{raw}': must be a whole number >= 0"):
        dbpool.pool_settings({name: raw})


def test_engine_kwargs_never_prepare_statements_and_pool_size_0_keeps_no_connections():
    from sqlalchemy.pool import NullPool

    pooled = dbpool.engine_kwargs(dbpool.PoolSettings(pool_size=2, max_overflow=1))
    assert pooled["connect_args"]["prepare_threshold"] is None
    assert (pooled["pool_size"], pooled["max_overflow"]) == (2, 1)
    unpooled = dbpool.engine_kwargs(dbpool.PoolSettings(pool_size=0, max_overflow=3))
    assert unpooled["poolclass"] is NullPool and "pool_size" not in unpooled
    assert unpooled["connect_args"]["prepare_threshold"] is None


def test_open_storage_refuses_a_bad_pool_setting_before_connecting(monkeypatch):
    from sweep.storage import open_storage

    monkeypatch.setenv("SWEEP_DB_POOL_SIZE", "lots")
    with pytest.raises(StorageError, match="SWEEP_DB_POOL_SIZE='lots'"):
        open_storage("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")


@pytest.mark.postgres
def test_the_creation_lock_is_held_by_a_transaction_and_gone_after_the_block(pg_url):
    import psycopg
    from sqlalchemy.engine import make_url

    from sweep.storage import creation_lock

    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    with psycopg.connect(conninfo, autocommit=True) as watcher:
        with creation_lock(pg_url):
            held = watcher.execute(query).fetchone()[0]
            in_transaction = watcher.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND a.state = 'idle in transaction'").fetchone()[0]
        after = watcher.execute(query).fetchone()[0]
    assert (held, in_transaction, after) == (1, 1, 0)


@pytest.fixture
def pgbouncer_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        module = importlib.import_module("_pgbouncer")
        if module.binary() is None:
            pytest.skip("pgbouncer is not installed (.ci/run installs it)")
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.postgres
def test_the_storage_works_through_pgbouncer_in_transaction_mode(pg_url, pgbouncer_module, monkeypatch):
    """psycopg's default prepared statements break here after 5 runs of a statement on one
    connection ("prepared statement ... does not exist"); the storage's settings do not."""
    import optuna

    from sweep.storage import open_storage

    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "2")
    with pgbouncer_module.pgbouncer(pg_url, mode="transaction", pool_size=3) as url:
        storages = [open_storage(url) for _ in range(3)]  # 3 pooled clients, 3 server connections
        optuna.create_study(study_name="pooled", storage=storages[0])
        studies = [optuna.load_study(study_name="pooled", storage=s) for s in storages]
        for i in range(30):
            study = studies[i % 3]
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, 0.5)
        complete = studies[1].get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        pools = {p["database"]: p for p in pgbouncer_module.show(url, "SHOW POOLS")}
        for storage in storages:
            storage.engine.dispose()
    assert len(complete) == 30
    assert pools[url.rsplit("/", 1)[1]]["pool_mode"] == "transaction"


@pytest.mark.postgres
def test_opening_a_made_storage_does_not_wait_for_the_creation_lock(pg_url):
    """60 workers starting at once used to queue for the lock one storage set-up at a time."""
    import threading

    from sweep.storage import creation_lock, open_storage

    open_storage(pg_url, heartbeat=False).engine.dispose()  # makes the tables
    opened = threading.Event()

    def open_it():
        open_storage(pg_url, heartbeat=False).engine.dispose()
        opened.set()

    with creation_lock(pg_url):  # held by a process creating another study meanwhile
        worker = threading.Thread(target=open_it, daemon=True)
        worker.start()
        assert opened.wait(timeout=60)
    worker.join()


@pytest.mark.postgres
def test_a_fresh_database_is_opened_under_the_creation_lock(pg_url):
    import threading

    from sweep.storage import creation_lock, open_storage

    opened = threading.Event()

    def open_it():
        open_storage(pg_url, heartbeat=False).engine.dispose()
        opened.set()

    with creation_lock(pg_url):
        worker = threading.Thread(target=open_it, daemon=True)
        worker.start()
        assert not opened.wait(timeout=3)
    assert opened.wait(timeout=60)
    worker.join()
