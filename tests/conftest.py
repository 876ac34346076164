"""Shared fixtures: the real `sweep` console script, tiny data sets, isolated stores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _servers  # noqa: E402 - real servers on loopback, shared with the benchmarks
from _servers import free_port  # noqa: E402,F401 - tests import it from here


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

    url = os.environ.get("SWEEP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SWEEP_TEST_POSTGRES_URL is not set")
    with _servers.postgres_database(url, prefix="sweep_test") as db:
        yield db


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 with proxied artifacts (SQLite backend); yields its URL."""
    with _servers.mlflow_server(f"sqlite:///{tmp_path / 'server-mlflow.db'}", tmp_path, start_timeout=90) as url:
        yield url


# The modules whose tests take one to four minutes each (whole sweeps through the CLI, worker
# processes, servers, injected outages), longest first.
LONGEST_FIRST = ("test_e2e.py", "test_scale.py", "test_secrets_e2e.py", "test_faults.py", "test_budget_e2e.py",
                 "test_benchmarks.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first, then the other slow (end-to-end) ones, then the rest, each group in
    file order, so the tests left at the end, which the idle process steals, are short ones (a
    sweep test left last kept one process busy for 10 minutes after the other had finished)."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        module = item.path.name
        if module in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(module)
        return (1 if item.get_closest_marker("slow") is not None else 2), 0

    items.sort(key=rank)
