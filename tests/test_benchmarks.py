"""The quality benchmark's own parts: its baseline searches must run, and its summary must add up.

A benchmark that fails only when it is run for an hour is found an hour late: a renamed helper
once made every Optuna and KerasTuner baseline job fail at once. These tests run the baseline jobs
on a tiny set, with a 2-epoch cap, in a few seconds.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def quality():
    saved = os.environ.get("MLFLOW_TRACKING_URI")  # benchmarks/_common.py drops it on import
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("quality")
    finally:
        sys.path.remove(str(BENCHMARKS))
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture()
def tiny_set(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0] * 45 + [1] * 15)
    X = rng.normal(size=(60, 8, 2)).astype(np.float32)
    X[y == 1, :, 0] += 1.5  # learnable, so a trial is not all noise
    path = tmp_path / "tiny.npz"
    train = np.r_[0:30, 45:55]  # 30 + 10 to train, 15 + 5 to test
    test = np.r_[30:45, 55:60]
    np.savez(path, X_train=X[train], y_train=y[train], X_test=X[test], y_test=y[test])
    return path


def test_feature_scaling_is_plain_mean_and_std(quality):
    X = np.random.default_rng(1).normal(3.0, 2.0, size=(20, 5, 3)).astype(np.float32)
    X[:, :, 2] = 7.0  # a constant feature keeps scale 1
    X[0, 0, 1] = 500.0  # heavy-tailed: the baselines still scale by the std (no robust spread)
    mean, scale = quality._feature_scaling(X)
    assert mean.dtype == scale.dtype == np.float32
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(scale[:2], X[:, :, :2].astype(np.float64).std(axis=(0, 1)), rtol=1e-6)
    assert scale[2] == 1.0


@pytest.mark.slow
def test_recipe_and_optuna_baselines_run(quality, tiny_set, monkeypatch):
    monkeypatch.setattr(quality, "EPOCHS", 2)
    recipe = quality.job_recipe(tiny_set, seed=0, trials=1)
    optuna_acc = quality.job_optuna_acc(tiny_set, seed=0, trials=2)
    for row in (recipe, optuna_acc):
        assert 0.0 <= row["test_balanced_accuracy"] <= 1.0
        assert isinstance(row["test_collapsed"], bool)
    assert optuna_acc["epochs"] == 4 and len(optuna_acc["trial_rows"]) == 2


@pytest.mark.slow
def test_kerastuner_baseline_runs(quality, tiny_set, monkeypatch):
    pytest.importorskip("keras_tuner", reason="KerasTuner is the benchmark extra: pip install -e '.[bench]'")
    monkeypatch.setattr(quality, "EPOCHS", 2)
    row = quality.job_kerastuner(tiny_set, seed=0, trials=1)
    assert 0.0 <= row["test_balanced_accuracy"] <= 1.0 and row["epochs"] == 2


def test_summary_means_and_counts(quality):
    rows = [
        {"set": "S", "seed": s, "method": "recipe", "wall_seconds": 10.0 + s, "val_balanced_accuracy": 0.6,
         "val_accuracy": 0.7, "val_collapsed": False, "test_balanced_accuracy": ba, "test_accuracy": 0.8,
         "test_collapsed": collapsed, "trials": 1, "epochs": 20, "collapsed_trials": None}
        for s, (ba, collapsed) in enumerate([(0.5, True), (0.7, False)])
    ] + [{"set": "S", "seed": 2, "method": "recipe", "error": "boom", "wall_seconds": 1.0}]
    (row,) = [r for r in quality.summarize(rows, ["S"]) if r["method"] == "recipe"]
    assert row["runs"] == 2
    assert row["test_balanced_accuracy_mean"] == pytest.approx(0.6)
    assert row["test_balanced_accuracy_std"] == pytest.approx(0.1)
    assert row["shipped_collapsed"] == 1
