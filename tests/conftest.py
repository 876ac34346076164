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
