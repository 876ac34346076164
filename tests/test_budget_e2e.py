"""`sweep run --budget` end to end: the whole command ends in time and leaves a clean study and a champion."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from helpers import clean_env, run_sweep_cli
from sweep.budget import STARTUP_SECONDS, format_duration

pytestmark = pytest.mark.slow
# The last epoch, the summary and the process's exit after the deadline: ~5 s on an idle machine;
# 37 s seen with three test suites on the same 2 cores (load 20). Without a deadline the search
# would not stop at all (a budget alone has no trial limit), so the test still fails then.
OVERRUN = 45.0


def _stores(tmp_path: Path) -> list[str]:
    return ["--storage", f"sqlite:///{tmp_path}/sweep.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]


# A 20 s budget leaves 10 s of search: on a busy machine (load 18) the first trial had not started
# by then, so nothing ran. These budgets leave 25-30 s of search.
@pytest.mark.parametrize("workers, budget", [(1, 45), (2, 60)])
def test_a_budgeted_sweep_ends_in_time_with_a_clean_study_and_a_champion(tmp_path, tiny_signal, workers, budget):
    launched = time.time()
    res = run_sweep_cli("run", str(tiny_signal), "--study", "timed", "--budget", f"{budget}s", "--epochs", "30",
                        "--workers", str(workers), "--retrain-top", "2", "--retrain-seeds", "2", *_stores(tmp_path),
                        cwd=tmp_path, env=clean_env(SWEEP_RETRAIN_TOP="2"), timeout=budget + 2 * STARTUP_SECONDS)
    ended = time.time()
    assert res.returncode == 0, res.stderr
    assert f"time budget {format_duration(budget)}" in res.stdout
    study = optuna.load_study(study_name="timed", storage=f"sqlite:///{tmp_path}/sweep.db")
    clock = study.user_attrs["deadline"]
    # The promise is budget + one minute of start-up: the clock starts at most a minute after launch,
    # and the command ends with its deadline. OVERRUN allows for the last epoch and the process's
    # exit on a machine shared by several test runs (alone: ~10 s of start-up, ends on time).
    assert clock["started_at"] - launched <= STARTUP_SECONDS + 2
    assert clock["ends_at"] - clock["started_at"] == pytest.approx(budget)
    assert ended - clock["ends_at"] < OVERRUN, f"ended {ended - clock['ends_at']:.1f} s after its deadline"
    assert launched < clock["ended_at"] <= ended  # the run marks its end: `sweep status` then shows no time left

    trials = study.get_trials()
    # A recipe queued as trial 0 or 1 of the new study that the deadline left unstarted stays queued
    # for the next run of the same study; nothing else may be left waiting or running.
    states = {t.state for t in trials if not (t.state == optuna.trial.TrialState.WAITING and t.user_attrs.get("baseline"))}
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete, [(t.state, t.user_attrs.get("fail_reason")) for t in trials]
    # the study's pruner is Hyperband over the budget's epoch cap
    assert study.user_attrs["run_settings"]["pruner"] == "hyperband"
    assert study.user_attrs["settings"]["train"]["epochs"] == 30

    # A budget alone sets no trial limit: the read commands show the budget, not a trial target.
    status = run_sweep_cli("status", "timed", *_stores(tmp_path)[:2], cwd=tmp_path)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert f"{finished} trials finished (time budget {format_duration(budget)} a run)" in status.stdout, status.stdout
    status_json = json.loads(run_sweep_cli("status", "timed", "--json", *_stores(tmp_path)[:2], cwd=tmp_path).stdout)
    assert status_json["n_trials_target"] is None and status_json["budget_seconds"] == budget
    listed = run_sweep_cli("studies", *_stores(tmp_path)[:2], cwd=tmp_path, env=clean_env(COLUMNS="200"))
    assert f"{finished} / {format_duration(budget)} budget" in listed.stdout, listed.stdout

    best = json.loads(run_sweep_cli("best", "timed", "--json", *_stores(tmp_path)[:2], cwd=tmp_path).stdout)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    champion = client.get_model_version_by_alias("timed", "champion")
    assert champion.tags["sweep.trial_number"] == str(best["number"])
    assert client.get_registered_model("timed").tags["sweep.champion_trial"] == str(best["number"])


def test_budget_with_create_only_is_refused(tmp_path, tiny_signal):
    res = run_sweep_cli("run", str(tiny_signal), "--budget", "1m", "--create-only", *_stores(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "--budget" in res.stderr and "--create-only" in res.stderr
    assert not (tmp_path / "sweep.db").exists()
