"""The quality benchmark's own parts: its baseline searches and references must run, budget mode
must stop every search at its deadline, and its summary and checks must add up.

A benchmark that fails only when it is run for an hour is found an hour late: a renamed helper
once made every Optuna and KerasTuner baseline job fail at once. These tests run the baseline jobs
on a tiny set, with a 2-epoch cap (or a few seconds of budget), in a few seconds each.
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


def test_nn1_euclid_is_unscaled_nearest_neighbour_on_flattened_series(quality, tiny_set):
    from sklearn.metrics import balanced_accuracy_score

    row = quality.job_nn1_euclid(tiny_set, seed=0, trials=0)
    d = np.load(tiny_set)
    train, test = d["X_train"].reshape(40, -1), d["X_test"].reshape(20, -1)
    nearest = ((test[:, None, :] - train[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    expected = balanced_accuracy_score(d["y_test"], d["y_train"][nearest])
    assert row["test_balanced_accuracy"] == pytest.approx(expected)
    assert row["scaling"] == "none" and row["val_balanced_accuracy"] is None and row["epochs"] == 0
    assert 0.0 <= row["train_part_test_balanced_accuracy"] <= 1.0


@pytest.mark.slow
def test_minirocket_reference_runs(quality, tiny_set):
    pytest.importorskip("aeon", reason="MiniRocket is in the benchmark extra: pip install -e '.[bench]'")
    row = quality.job_minirocket(tiny_set, seed=0, trials=0)  # 8 steps: padded to MiniRocket's 9
    assert 0.5 < row["test_balanced_accuracy"] <= 1.0  # the tiny set is learnable
    assert row["fit_seconds"] > 0 and 0.0 <= row["train_part_test_balanced_accuracy"] <= 1.0


def test_sweep_command_trial_and_budget_modes(quality, tiny_set):
    trial = quality.sweep_command(tiny_set, 1, 6, None, "sqlite:///s.db", "sqlite:///m.db", "--patience 10")
    budget = quality.sweep_command(tiny_set, 1, 6, quality.Budget(300.0, 2), "sqlite:///s.db",
                                   "sqlite:///m.db")
    assert trial[1:3] == ["run", str(tiny_set)] and trial[-2:] == ["--patience", "10"]
    assert "--n-trials" in trial and "--retrain-top" in trial and "--budget" not in trial
    assert budget[budget.index("--budget") + 1] == "300s" and budget[budget.index("--workers") + 1] == "2"
    # budget mode keeps lstm-sweep's own budget defaults: no trial count, epoch cap or re-training override
    assert not {"--n-trials", "--epochs", "--retrain-top"} & set(budget)


@pytest.mark.slow
def test_kerastuner_budget_stops_at_the_deadline(quality, tiny_set, monkeypatch):
    pytest.importorskip("keras_tuner", reason="KerasTuner is the benchmark extra: pip install -e '.[bench]'")
    monkeypatch.setattr(quality, "EPOCHS", 10_000)  # without the deadline one trial alone would run for minutes
    row = quality.job_kerastuner(tiny_set, seed=0, trials=0, budget=quality.Budget(6.0, 1))
    # the running trial stops at its next epoch end (seconds on an idle machine, minutes on a loaded one)
    assert 6.0 <= row["search_seconds"] < 600
    assert row["trials"] >= 1 and 0 < row["epochs"] < 10_000
    assert 0.0 <= row["test_balanced_accuracy"] <= 1.0


@pytest.mark.slow
def test_optuna_budget_runs_worker_processes_on_one_study(quality, tiny_set, monkeypatch):
    monkeypatch.setattr(quality, "EPOCHS", 10_000)  # reaches the worker processes through the job spec
    row = quality.job_optuna_acc(tiny_set, seed=0, trials=0, budget=quality.Budget(15.0, 2))
    # the clock starts once both workers are ready (TensorFlow imported: at most 60 s after launch), then 15 s
    assert 15.0 <= row["search_seconds"] < 600  # 10,000-epoch trials would take hours
    workers = {r["worker"] for r in row["trial_rows"]}
    numbers = [r["number"] for r in row["trial_rows"]]
    assert workers == {0, 1} and len(numbers) == len(set(numbers)) == row["trials"]
    assert 0 < row["epochs"] < 10_000 * row["trials"]
    best = max(row["trial_rows"], key=lambda r: (r["objective"], -r["number"]))
    assert row["test_balanced_accuracy"] == best["test_balanced_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["trials", "budget"])
def test_lstm_sweep_job_scores_the_shipped_champion(quality, tiny_set, monkeypatch, mode):
    monkeypatch.setattr(quality, "EPOCHS", 2)
    budget = quality.Budget(20.0, 2) if mode == "budget" else None
    row = quality.job_lstm_sweep(tiny_set, seed=0, trials=2, budget=budget)
    assert row["trials"] >= 1 and ("--budget" in row["sweep_command"]) == (mode == "budget")
    assert 0.0 <= row["test_balanced_accuracy"] <= 1.0
    if not row.get("no_model") and mode == "trials":  # no re-training: the champion is the best trial
        assert row["test_balanced_accuracy"] == pytest.approx(row["best_trial_test_balanced_accuracy"])


def test_reference_job_runs_without_a_budget_in_budget_mode(quality, tiny_set):
    row = quality._launch(str(tiny_set), 0, "nn1_euclid", 0, "", 300.0, 2)
    assert "error" not in row, row.get("error")
    assert row["budget_seconds"] is None and row["workers"] is None and row["fit_seconds"] >= 0
    assert len(row["load_average_start"]) == 3


def test_reuse_keeps_references_from_any_mode_and_searches_from_the_same_mode(quality):
    specs = [("S", 0, "nn1_euclid"), ("S", 0, "lstm_sweep"), ("S", 0, "optuna_acc")]
    old = [{"set": "S", "seed": 0, "method": "nn1_euclid", "budget_seconds": None},
           {"set": "S", "seed": 0, "method": "lstm_sweep"},  # a trial-mode row from before budget mode
           {"set": "S", "seed": 0, "method": "optuna_acc", "budget_seconds": 300.0},
           {"set": "S", "seed": 1, "method": "optuna_acc", "budget_seconds": 300.0}]  # not asked for
    kept = quality.reusable_rows(old, specs, 300.0, rerun=[])
    assert [(r["method"], r["reused"]) for r in kept] == [("nn1_euclid", True), ("optuna_acc", True)]
    assert [r["method"] for r in quality.reusable_rows(old, specs, None, rerun=["nn1_euclid"])] == ["lstm_sweep"]


def _row(name, method, ba, seed=0):
    return {"set": name, "seed": seed, "method": method, "wall_seconds": 5.0, "val_balanced_accuracy": None,
            "test_balanced_accuracy": ba, "test_accuracy": ba, "test_collapsed": False, "trials": None, "epochs": 0,
            "collapsed_trials": None, "fit_seconds": 2.0, "train_part_test_balanced_accuracy": ba}


def test_limit_checks_and_report(quality):
    rows = [_row("A", "nn1_euclid", 0.80), _row("A", "minirocket", 0.90), _row("A", "lstm_sweep", 0.88),
            _row("B", "nn1_euclid", 0.70), _row("B", "minirocket", 0.75), _row("B", "lstm_sweep", 0.69),
            _row("B", "optuna_acc", 0.71)]
    checks = quality.limit_checks(quality.summarize(rows, ["A", "B"]), ["A", "B"])
    sweep = checks["lstm_sweep"]
    assert sweep["at_or_above_nn1"] == ["A"] and sweep["within_margin_of_minirocket"] == ["A"]
    assert sweep["mean"] == pytest.approx(0.785) and sweep["minirocket_mean"] == pytest.approx(0.825)
    assert checks["optuna_acc"]["sets"] == ["B"] and checks["optuna_acc"]["at_or_above_nn1"] == ["B"]
    report = quality.markdown({"references": {"A": {}, "B": {}}, "jobs": rows})
    assert "| A | 0.800 | 0.900 (2 s) | - | 0.880 ≥1-NN, within 0.03 of MR |" in report
    assert "| B | 0.700 | 0.750 (2 s) | 0.710 ≥1-NN, >0.03 below MR | 0.690 <1-NN, >0.03 below MR |" in report
    assert "| lstm_sweep | 1 of 2 | 1 of 2 | 0.785 | 0.750 | 0.825 |" in report


def test_startup_benchmark_times_real_commands_on_its_demo_study(quality, tmp_path):
    startup = importlib.import_module("startup")
    storage = startup._make_study(tmp_path)
    status = startup._time([startup.SWEEP, "status", "demo", "--storage", storage], cwd=tmp_path, repeat=2)
    best = startup._time([startup.SWEEP, "best", "demo", "--storage", storage], cwd=tmp_path, repeat=2)
    refused = startup._time([startup.SWEEP, "run", "no-such.npz", "--storage", storage], cwd=tmp_path, repeat=2)
    assert (status["exit_code"], best["exit_code"], refused["exit_code"]) == (0, 0, 2)
    assert status["runs"] == 1 and 0 < status["median_s"] <= status["max_s"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["overhead", "memory"])
def test_in_process_benchmarks_run_a_tiny_study(quality, name):
    """overhead.py and memory.py drive run_sweep in-process through its on_trial_end callback: a change
    to the records it passes once broke both at their first trial, found only when they were run."""
    bench = importlib.import_module(name)
    measured = bench.measure(trials=2, epochs=1)
    if name == "overhead":
        assert [r["state"] for r in measured["rows"]] == ["COMPLETE"] * 3  # one warm-up + 2 measured pairs
        assert all(r["params"] == bench.PARAMS for r in measured["rows"])
    else:
        assert len(measured["samples"]) == 2 and all(s["state"] for s in measured["samples"])


def test_retrained_benchmark_trains_fold_models_and_widths(quality, tiny_set, tmp_path):
    """benchmarks/retrained.py on a tiny LSTM-FCN configuration: one model per fold, their average,
    and each width on the search's split, as a quality result names them."""
    import argparse
    import json

    retrained = importlib.import_module("retrained")
    params = {"architecture": "lstm_fcn", "units": 4, "layers": 1, "dropout": 0.0, "learning_rate": 1e-2,
              "class_weight": "balanced", "batch_size": 16, "clipnorm": 0.0, "lr_schedule": "plateau",
              "bidirectional": False, "fcn_filters": 8}
    result = tmp_path / "quality.json"
    result.write_text(json.dumps({"settings": {"val_fraction": 0.2}, "jobs": [
        {"method": "lstm_sweep", "set": "tiny", "seed": 0, "trial_rows": [
            {"number": 3, "value": 0.8, "test_balanced_accuracy": 0.7, "epochs_run": 4, "params": params},
            {"number": 5, "value": 0.7, "test_balanced_accuracy": 0.6, "epochs_run": 2,
             "params": {**params, "units": 6}}]}]}))
    args = argparse.Namespace(result=result, set="tiny", trials=[3], datasets=str(tiny_set.parent), folds=2,
                              widths=[8, 16], epochs=2, patience=1, refit_epochs=[3, 1], refit_seeds=2)
    measured = retrained.measure(args)
    [entry] = measured["trials"]
    assert [f["fold"] for f in entry["folds"]] == [0, 1]
    assert all(1 <= f["epochs"] <= 2 and 0.0 <= f["test_balanced_accuracy"] <= 1.0 for f in entry["folds"])
    assert 0.0 <= entry["ensemble_test_balanced_accuracy"] <= 1.0
    assert [(w["fcn_filters"], w["seed"]) for w in entry["widths"]] == [(8, 1), (8, 2), (16, 1), (16, 2)]
    # refits on the whole training part: every length, every seed, trained to its full length
    assert [(r["epochs"], [(x["seed"], x["epochs"]) for x in r["runs"]]) for r in entry["refits"]] == [
        (3, [(1, 3), (2, 3)]), (1, [(1, 1), (2, 1)])]
    assert all(0.0 <= r["averaged_test_balanced_accuracy"] <= 1.0 for r in entry["refits"])
    # by the seeds averaged: one seed alone is each seed's own score, both is the average shipped
    for r in entry["refits"]:
        one, both = r["by_size"]["1"], r["by_size"]["2"]
        assert one["subsets"] == 2 and one["mean"] == pytest.approx(np.mean([x["test_balanced_accuracy"] for x in r["runs"]]))
        assert both["subsets"] == 1 and both["mean"] == pytest.approx(r["averaged_test_balanced_accuracy"])
        assert "test_probas" not in r  # the probabilities stay out of the result file
    assert measured["across_trials"] == []  # one trial: nothing to average across
    json.dumps(measured)
    retrained.report(measured)  # the tables print

    both = argparse.Namespace(**{**vars(args), "trials": [3, 5], "folds": 0, "widths": [], "refit_epochs": [1]})
    only_refits = retrained.measure(both)
    assert [e["trial"] for e in only_refits["trials"]] == [3, 5]
    entry = only_refits["trials"][0]
    assert entry["folds"] == [] and entry["ensemble_test_balanced_accuracy"] is None and len(entry["refits"]) == 1
    [across] = only_refits["across_trials"]
    assert (across["epochs"], across["trials"], len(across["one_seed_each"])) == (1, 2, 2)
    assert all(0.0 <= x <= 1.0 for x in [*across["one_seed_each"], across["all_averaged"]])
    retrained.report(only_refits)
