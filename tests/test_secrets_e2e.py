"""No password anywhere: a real sweep whose two URLs carry passwords leaves them in no output,
no table of either database and no artifact."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from helpers import TINY_MODELS, clean_env, run_sweep_cli

QUERY_SECRET = "Qpw7f3kLr9x"  # given as ?password= in the Optuna storage URL
USERINFO_SECRET = "Upw2m8Zt4vq"  # given as user:password@ in the MLflow tracking URI
HTTP_SECRET = "Hpw5n1Yc6wb"  # HTTP basic auth in an MLflow server URI


def _all_rows(url: str) -> str:
    """Every row of every table of a database, as text."""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        assert meta.tables, f"no tables in {url}"
        with engine.connect() as conn:
            return "\n".join(repr(row) for table in meta.sorted_tables for row in conn.execute(select(table)))
    finally:
        engine.dispose()


def _all_files(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


@pytest.fixture
def second_pg_db(pg_url):
    """A second fresh database on the same server (the MLflow backend), dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(pg_url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"sweep_test_mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.postgres
def test_passwords_in_both_urls_end_up_nowhere(tmp_path, tiny_signal, pg_url, second_pg_db):
    from sqlalchemy.engine import make_url

    # The local server trusts loopback, so any password is accepted (and must still never be shown).
    storage = f"{pg_url}?password={QUERY_SECRET}"
    tracking = make_url(second_pg_db).set(password=USERINFO_SECRET).render_as_string(hide_password=False)
    env = clean_env()
    outputs = []

    def sweep(*args: str) -> str:
        r = run_sweep_cli(*args, cwd=tmp_path, env=env, timeout=600)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, "\n----- next command -----\n".join(outputs)  # every command so far: a flake's cause
        return r.stdout

    sweep("run", str(tiny_signal), "--study", "s", "--storage", storage, "--tracking-uri", tracking,
          "--n-trials", "2", "--epochs", "2", "--workers", "2", "--retrain-top", "0", *TINY_MODELS)
    sweep("run", str(tiny_signal), "--study", "s", "--storage", storage, "--tracking-uri", tracking, "--epochs", "2",
          "--create-only", *TINY_MODELS)
    for args in (("status", "s"), ("best", "s"), ("best", "s", "--json"), ("studies",),
                 ("export", "s", "--out", "trials.json"), ("diagnose", "--study", "s", "--no-data-check")):
        sweep(*args, "--storage", storage)
    out = sweep("predict", "s", str(tiny_signal), "--out", "p.csv", "--storage", storage, "--tracking-uri", tracking)
    assert "wrote 40 predictions" in out

    # The study keeps a credential-free tracking URI; the workers and predict got theirs from the flag.
    import optuna

    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs["tracking_uri"] == make_url(second_pg_db).set(password=None).render_as_string()
    haystacks = {
        "output": "\n".join(outputs).encode(),
        "optuna tables": _all_rows(storage).encode(),
        "mlflow tables": _all_rows(tracking).encode(),
        "files (mlruns, exports, predictions)": _all_files(tmp_path),
    }
    assert b"mlruns" in haystacks["files (mlruns, exports, predictions)"] or (tmp_path / "mlruns").exists()
    for where, text in haystacks.items():
        for secret in (QUERY_SECRET, USERINFO_SECRET):
            assert secret.encode() not in text, f"{secret} found in {where}"


@pytest.mark.slow
def test_http_basic_auth_credentials_are_never_shown_or_stored(tmp_path, tiny_signal, mlflow_server):
    host = mlflow_server.removeprefix("http://")
    tracking = f"http://sweeper:{HTTP_SECRET}@{host}"
    storage = f"sqlite:///{tmp_path}/sweep.db"
    outputs = []
    for args in (("run", str(tiny_signal), "--study", "h", "--create-only", "--tracking-uri", tracking),
                 ("best", "h"), ("status", "h", "--json")):
        r = run_sweep_cli(*args, "--storage", storage, cwd=tmp_path, timeout=300)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0 or args[0] == "best", r.stdout + r.stderr
    text = "\n".join(outputs)
    assert HTTP_SECRET not in text and "sweep worker" in text
    assert HTTP_SECRET.encode() not in _all_rows(storage).encode()
    assert HTTP_SECRET.encode() not in _all_files(tmp_path)
    import optuna

    assert optuna.load_study(study_name="h", storage=storage).user_attrs["tracking_uri"] == mlflow_server
