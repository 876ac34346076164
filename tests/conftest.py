"""Shared fixtures: the real `sweep` console script, tiny data sets, isolated stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

@pytest.fixture
def tiny_signal(tmp_path: Path) -> Path:
    """80 train + 40 test sequences of seed-signal (20 steps x 5 features, 80/20 labels)."""
    from sweep.synthetic import make_dataset, write_dataset

    return write_dataset(make_dataset("seed-signal", n_train=80, n_test=40, seed=1), tmp_path / "tiny.npz")


@pytest.fixture
def tiny_csv(tmp_path: Path) -> tuple[Path, Path]:
    """UCR-style CSV train/test files with string labels and a visible trend signal."""
    rng = np.random.default_rng(0)

    def write(path: Path, n: int) -> Path:
        rows = []
        for i in range(n):
            label = "up" if i % 4 == 0 else "down"
            ramp = np.linspace(0, 2, 12) * (1 if label == "up" else -1)
            rows.append(",".join([label] + [f"{v:.4f}" for v in ramp + rng.normal(0, 0.3, 12)]))
        path.write_text("\n".join(rows) + "\n")
        return path

    return write(tmp_path / "train.csv", 60), write(tmp_path / "test.csv", 24)


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL database of its own (dropped afterwards); skips only if SWEEP_TEST_POSTGRES_URL is unset."""
    import os
    import uuid

    url = os.environ.get("SWEEP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SWEEP_TEST_POSTGRES_URL is not set")
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    db = f"sweep_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        yield make_url(url).set(drivername="postgresql+psycopg", database=db).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 with proxied artifacts (SQLite backend); yields its URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    store, artifacts = tmp_path / "server-mlflow.db", tmp_path / "server-artifacts"
    log = (tmp_path / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store}", "--artifacts-destination", str(artifacts), "--serve-artifacts"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
