"""The top-k re-training's runs, trained here or in re-training processes (``--workers`` > 1)."""

from __future__ import annotations

import os
import types

import optuna
import pytest

from objectives.records import TrialResult
from objectives.search_space import LstmParams
from sweep import jobs, retrain
from sweep.config import resolve_config
from sweep.data import split_folds
from sweep.prepared import prepare

pytestmark = pytest.mark.slow


def _train_job_in_a_child(*args, **kwargs):
    """``sweep.retrain._train_job``, refusing to run in the test's own process (pickled by reference:
    a spawned child imports this module and finds the real ``_train_job`` in its own fresh import)."""
    assert os.environ["RETRAIN_TEST_PARENT"] != str(os.getpid()), "a re-training run trained in the parent process"
    return retrain._train_job(*args, **kwargs)


def _trial(number: int, units: int, *, seconds: float = 1.0) -> optuna.trial.FrozenTrial:
    params = LstmParams(units=units, layers=1, dropout=0.0, learning_rate=3e-3, batch_size=16).to_dict()
    trial = optuna.trial.create_trial(
        params=params, distributions={k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()},
        value=0.9, user_attrs={"result": TrialResult(train_seconds=seconds, epochs_run=2).to_attr()})
    trial.number = number
    return trial


def test_with_two_workers_every_run_trains_once_in_a_process_of_its_own_and_keeps_its_fold_model(
        tmp_path, tiny_signal, monkeypatch):
    """Two configurations x 2 folds with 2 workers: the 4 runs train in 2 spawned processes (forced
    here: these runs are far shorter than PARALLEL_SECONDS; the in-process path is test_e2e's), every
    run comes back once, with its fold and seed, in the configurations' order, and each model that can
    join an ensemble is saved with its out-of-fold and test probabilities."""
    monkeypatch.setenv("RETRAIN_TEST_PARENT", str(os.getpid()))
    monkeypatch.setattr(retrain, "_train_job", _train_job_in_a_child)
    monkeypatch.setattr(jobs, "PARALLEL_SECONDS", 0.0)
    cfg = resolve_config(flags={"workers": 2, "epochs": 2, "patience": 2, "retrain_seeds": 2, "threads": 1})
    prep = prepare(cfg, tiny_signal)
    folds = split_folds(prep.data, k=2, seed=retrain.split_seed(0, 0))
    top = [_trial(4, 8), _trial(1, 12)]
    opened = types.SimpleNamespace(prep=prep, deadline=None)

    results, members = retrain._retrain(opened, top, retrain.run_splits(opened, folds), tmp_path, folded=True)

    assert [e.trial for e in results] == [4, 1]
    for entry in results:
        assert [r.fold for r in entry.runs] == [0, 1]
        assert [r.seed for r in entry.runs] == [10_000 * (i + 1) + entry.trial for i in (0, 1)]
        assert all(r.epochs == 2 and r.split_seed == 7919 for r in entry.runs)
        kept = members[entry.trial]
        assert [m.model.fold for m in kept] == [r.fold for r in entry.runs if retrain._keepable(r, min_epochs=2)]
        for m, fold in zip(kept, (folds[m.model.fold] for m in kept)):
            assert m.model.path.is_file() and m.val_proba.shape == (len(fold.y_val), 2)
            assert m.test_proba.shape == (len(prep.data.y_test), 2)


@pytest.mark.parametrize("winner_seconds, trained", [(100.0, []), (10.0, [(4, 0), (4, 1), (4, 2), (1, 0), (1, 1), (1, 2)])])
def test_a_challenger_trains_only_once_the_search_s_winner_has_runs_to_compare_with(
        tiny_signal, monkeypatch, winner_seconds, trained):
    """Under a budget a run starts only if its trial's search training time is left. Where the
    winner's do not fit (100 s, 60 left), the challenger's shorter runs (1 s) would: they are skipped,
    since the margin rule compares them with the winner's fold by fold, and their time is the refit's."""
    import time

    from objectives.records import RetrainRun
    from sweep.budget import FINISH_SECONDS, Deadline

    ran = []

    def fake(prep, splits, job, *, stop_at, folder, folded):
        ran.append((job.trial, job.index))
        return job, RetrainRun(seed=job.seed, epochs=2, stopped_for_collapse=False, stopped_for_deadline=False,
                               val_score=0.8, val_balanced_accuracy=0.8, near_collapse=False,
                               test_balanced_accuracy=0.8), None

    monkeypatch.setattr(retrain, "_train_job", fake)
    cfg = resolve_config(flags={"workers": 1, "epochs": 2, "patience": 2, "retrain_seeds": 3, "threads": 1})
    prep = prepare(cfg, tiny_signal)
    now = time.time()
    deadline = Deadline(started_at=now - 100, search_ends_at=now - 1, ends_at=now + 60 + FINISH_SECONDS)
    opened = types.SimpleNamespace(prep=prep, deadline=deadline)
    folds = split_folds(prep.data, k=3, seed=retrain.split_seed(0, 0))
    top = [_trial(4, 8, seconds=winner_seconds), _trial(1, 12)]

    results, _ = retrain._retrain(opened, top, retrain.run_splits(opened, folds), None, folded=True)

    assert ran == trained
    assert [len(e.runs) for e in results] == [3 if trained else 0] * 2


@pytest.mark.parametrize("runs, said", [((3, 3, 3), "3 times each"), ((3, 2, 0), "0-3 times (the time budget stopped the rest)")])
def test_the_summary_says_how_many_runs_each_configuration_got(runs, said):
    from sweep.display import times_each

    assert times_each([types.SimpleNamespace(runs=[None] * n) for n in runs]) == said
