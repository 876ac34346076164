"""Helpers for tests that drive the real `sweep` console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SWEEP = str(Path(sys.executable).parent / "sweep")
# The search space narrowed to the smallest models (tests/tiny_models.toml), for the tests where the
# model is not what is tested; every command on one study must pass it (the space is part of the study).
TINY_MODELS = ["--config", str(Path(__file__).with_name("tiny_models.toml"))]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would point a test at a user's stores."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE")}
    # Re-training the top-k after a sweep is tested on its own (test_e2e); elsewhere it only costs time.
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "COLUMNS": "200", "SWEEP_RETRAIN_TOP": "0",
                **extra})
    return env


def run_sweep_cli(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)
