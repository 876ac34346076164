"""The refit of the chosen configuration on the whole training part (``--ship refit``, sweep.refit):
how it trains, and when the trial's own model ships instead."""

from __future__ import annotations

import logging
import time
import types

import optuna
import pytest

from objectives.records import RefitRun, TrialResult
from objectives.search_space import LstmParams, SearchSpace
from sweep import refit, retrain
from sweep.budget import Deadline
from sweep.config import resolve_config
from sweep.data import load_dataset, split_folds, whole_training
from sweep.prepared import prepare

pytestmark = pytest.mark.slow  # imports TensorFlow

PARAMS = LstmParams(units=8, layers=1, dropout=0.0, learning_rate=3e-3, batch_size=16)


def test_a_refit_trains_its_epochs_on_every_training_sequence_and_stops_at_its_deadline(tiny_signal):
    from objectives.objective import Objective

    data = load_dataset(tiny_signal)
    split = whole_training(data)
    assert len(split.y_train) == len(data.y_train) and len(split.y_val) == 0  # nothing held out
    objective = Objective(split, n_classes=data.n_classes, space=SearchSpace(), epochs=50, patience=1, seed=0)
    run, model = objective.refit(PARAMS, seed=3, epochs=3)
    assert (run.epochs, run.planned_epochs, run.stopped_for_deadline) == (3, 3, False)  # no patience, no early stop
    assert 0 <= run.train_balanced_accuracy <= 1 and run.test_balanced_accuracy is not None
    assert model.predict(data.X_test[:4], verbose=0).shape == (4, data.n_classes)
    # the time budget ends it at the first epoch boundary past stop_at
    cut, _ = objective.refit(PARAMS, seed=3, epochs=3, stop_at=time.time() - 1)
    assert (cut.epochs, cut.planned_epochs, cut.stopped_for_deadline) == (1, 3, True)


def _opened(tiny_signal, *, deadline=None, best_epoch=2):
    cfg = resolve_config(flags={"epochs": 4, "patience": 2, "threads": 1})
    prep = prepare(cfg, tiny_signal)
    study = optuna.create_study(direction="maximize")
    params = PARAMS.to_dict()
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions={k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()},
        value=0.9, user_attrs={"result": TrialResult(val_balanced_accuracy=0.9, val_loss=0.3, best_epoch=best_epoch,
                                                      epochs_run=4, train_seconds=2.0).to_attr()}))
    return types.SimpleNamespace(prep=prep, study=study, deadline=deadline, tracker=None, parent_run_id=None)


def _refit_returning(run: RefitRun):
    def fake(self, params, seed, *, epochs, stop_at=None):
        return run, None
    return fake


@pytest.mark.parametrize("run, why", [
    (RefitRun(seed=0, epochs=4, planned_epochs=4, train_balanced_accuracy=0.5, near_collapse=True,
              test_balanced_accuracy=0.5, seconds=1.0), "it predicted (nearly) one class on its own training sequences"),
    (RefitRun(seed=0, epochs=1, planned_epochs=4, train_balanced_accuracy=0.9, near_collapse=False,
              test_balanced_accuracy=0.9, seconds=1.0), "the time budget stopped it after 1 of 4 epochs"),
])
def test_a_refit_that_collapsed_or_was_cut_short_does_not_ship(tiny_signal, monkeypatch, caplog, run, why):
    from objectives.objective import Objective

    monkeypatch.setattr(Objective, "refit", _refit_returning(run))
    monkeypatch.setattr(refit, "ship_models", lambda *a, **k: pytest.fail("a refit that cannot ship was logged"))
    opened = _opened(tiny_signal)
    with caplog.at_level(logging.WARNING, logger="sweep.refit"):
        assert refit.refit_champion(opened) is None
    assert f"trial 0 ships its own model: {why}" in caplog.text
    assert "shipped" not in opened.study.user_attrs


def test_no_refit_starts_when_fewer_epochs_fit_than_the_trial_kept(tiny_signal, monkeypatch, caplog):
    """The trial kept epoch 4 at 0.5 s an epoch (0.625 s on all 80 sequences): 12 s left hold 3 after the setup."""
    from objectives.objective import Objective

    monkeypatch.setattr(Objective, "refit", lambda *a, **k: pytest.fail("a refit that cannot fit was started"))
    now = time.time()
    deadline = Deadline(started_at=now - 100, search_ends_at=now - 10, ends_at=now + 12 + 15)
    opened = _opened(tiny_signal, deadline=deadline, best_epoch=4)
    with caplog.at_level(logging.INFO, logger="sweep.refit"):
        assert refit.refit_champion(opened) is None
    assert "trial 0 ships its own model: a refit of 4 epochs or more does not fit" in caplog.text


def test_a_refit_mlflow_refused_leaves_the_trials_model(tiny_signal, monkeypatch):
    from objectives.objective import Objective

    good = RefitRun(seed=0, epochs=4, planned_epochs=4, train_balanced_accuracy=0.9, near_collapse=False,
                    test_balanced_accuracy=0.9, seconds=1.0)

    monkeypatch.setattr(Objective, "refit", lambda *a, **k: (good, _Saved()))
    seen = {}

    def refused(opened, trial, paths, **kwargs):
        seen.update(paths=[p.read_bytes() for p in paths], **kwargs)
        return None

    monkeypatch.setattr(refit, "ship_models", refused)
    opened = _opened(tiny_signal)
    assert refit.refit_champion(opened) is None and "shipped" not in opened.study.user_attrs
    assert seen["paths"] == [b"model"] * 3 and seen["role"] == "refit"  # 3 seeds (refit_seeds), averaged


class _Saved:
    """A trained model's stand-in: saves a file and predicts the two classes in turn."""

    def save(self, path):
        path.write_bytes(b"model")

    def predict_on_batch(self, X):
        import numpy as np

        return np.eye(2)[np.arange(len(X)) % 2]

    def predict(self, X, **kwargs):
        return self.predict_on_batch(X)


@pytest.mark.parametrize("long_val, ships", [(0.85, True), (0.75, False)])
def test_ship_auto_refits_only_when_training_that_long_beats_the_trial_s_own_length_on_the_folds(
        tiny_signal, monkeypatch, long_val, ships):
    """--ship auto: the chosen configuration trains the refit's way on each of the re-training's 3 folds
    for the refit's length (the cap, 4) and for its own model's (its best epoch, 2), each scored on its
    held-out fold; the refit on all 80 sequences follows only if the 4-epoch runs score at least the
    2-epoch runs' 0.80 there. The verdict and the runs are stored on the study."""
    from objectives.objective import Objective

    opened = _opened(tiny_signal)
    splits = retrain.run_splits(opened, split_folds(opened.prep.data, k=3, seed=retrain.split_seed(0, 0)))
    calls = []

    def fake(self, params, seed, *, epochs, stop_at=None):
        held_out = len(self.split.y_val) > 0
        calls.append((held_out, len(self.split.y_train), epochs))
        val = (long_val if epochs == 4 else 0.8) if held_out else None
        return RefitRun(seed=seed, epochs=epochs, planned_epochs=epochs, train_balanced_accuracy=0.9, near_collapse=False,
                        test_balanced_accuracy=0.9, seconds=1.0, val_balanced_accuracy=val), _Saved()

    monkeypatch.setattr(Objective, "refit", fake)
    monkeypatch.setattr(refit, "ship_models", lambda *a, **k: {"model_uri": "models:/refit"})
    shipped = refit.refit_champion(opened, check=splits)

    # fold by fold, both lengths of one fold before the next (where the clock stops, whole folds are missing)
    assert [c for c in calls if c[0]] == [(True, len(split.y_train), n) for _, split in splits.values() for n in (4, 2)]
    assert [c for c in calls if not c[0]] == ([(False, 80, 4)] * 3 if ships else [])  # the refit: all 80, the cap, 3 seeds
    check = opened.study.user_attrs["length_check"]
    assert (check["refit"], check["epochs"], check["short_epochs"], check["folds"]) == (ships, 4, 2, 3)
    assert check["lead"] == pytest.approx(long_val - 0.8)
    assert [(r["fold"], r["epochs"]) for r in check["runs"]] == [(i, n) for n in (4, 2) for i in range(3)]
    assert (shipped is not None) is ships and bool(opened.study.user_attrs.get("shipped")) is ships


def test_ship_auto_refits_without_a_test_when_the_trial_kept_every_epoch_of_the_cap(tiny_signal, monkeypatch):
    from objectives.objective import Objective

    opened = _opened(tiny_signal, best_epoch=4)
    calls = []

    def fake(self, params, seed, *, epochs, stop_at=None):
        calls.append(len(self.split.y_val))
        return RefitRun(seed=seed, epochs=epochs, planned_epochs=epochs, train_balanced_accuracy=0.9, near_collapse=False,
                        test_balanced_accuracy=0.9, seconds=1.0), _Saved()

    monkeypatch.setattr(Objective, "refit", fake)
    monkeypatch.setattr(refit, "ship_models", lambda *a, **k: {"model_uri": "models:/refit"})
    splits = retrain.run_splits(opened, split_folds(opened.prep.data, k=3, seed=retrain.split_seed(0, 0)))
    assert refit.refit_champion(opened, check=splits) is not None
    assert calls == [0] * 3  # the refit alone, nothing held out, 3 seeds
    check = opened.study.user_attrs["length_check"]
    assert check["refit"] and check["runs"] == [] and "(nothing to test)" in check["reason"]


def test_ship_auto_refits_untested_about_as_long_as_the_trial_s_model_where_no_check_fits(tiny_signal, monkeypatch):
    """The trial kept 2 epochs at 0.625 s an epoch on all 80 sequences; 18 s left hold no length check
    (its fold runs of both lengths need 25 s or more, on 2 folds too) but a refit of 1.25 x 2 -> 3
    epochs (not the cap's 4, which would fit): it ships untested, and the study says so."""
    from objectives.objective import Objective

    opened = _opened(tiny_signal, best_epoch=2)
    splits = retrain.run_splits(opened, split_folds(opened.prep.data, k=3, seed=retrain.split_seed(0, 0)))
    now = time.time()
    opened.deadline = Deadline(started_at=now - 100, search_ends_at=now - 10, ends_at=now + 18 + 15)
    calls = []

    def fake(self, params, seed, *, epochs, stop_at=None):
        calls.append((len(self.split.y_val), len(self.split.y_train), epochs))
        return RefitRun(seed=seed, epochs=epochs, planned_epochs=epochs, train_balanced_accuracy=0.9, near_collapse=False,
                        test_balanced_accuracy=0.9, seconds=1.0), _Saved()

    monkeypatch.setattr(Objective, "refit", fake)
    monkeypatch.setattr(refit, "ship_models", lambda *a, **k: {"model_uri": "models:/refit"})
    assert refit.refit_champion(opened, check=splits) is not None
    assert calls == [(0, 80, 3)] * 3  # no fold run: the refit alone (3 seeds: each needs 12 s of the 18)
    check = opened.study.user_attrs["length_check"]
    assert (check["refit"], check["epochs"], check["short_epochs"], check["folds"], check["runs"]) == (True, 3, 2, 0, [])
    assert "untested" in check["reason"] and "do not fit in the 18 s left" in check["reason"]
    assert opened.study.user_attrs["shipped"]["epochs"] == 3


def test_ship_auto_leaves_the_trial_s_model_where_not_even_an_untested_refit_fits(tiny_signal, monkeypatch, caplog):
    from objectives.objective import Objective

    opened = _opened(tiny_signal, best_epoch=2)
    splits = retrain.run_splits(opened, split_folds(opened.prep.data, k=3, seed=retrain.split_seed(0, 0)))
    now = time.time()
    opened.deadline = Deadline(started_at=now - 100, search_ends_at=now - 10, ends_at=now + 8 + 15)
    monkeypatch.setattr(Objective, "refit", lambda *a, **k: pytest.fail("nothing fits, nothing may train"))
    with caplog.at_level(logging.INFO, logger="sweep.refit"):
        assert refit.refit_champion(opened, check=splits) is None
    assert "trial 0 ships its own model: a refit of 2 epochs or more does not fit" in caplog.text
    assert not opened.study.user_attrs.get("length_check")


def test_the_refit_averages_the_seeds_that_can_ship_and_stops_adding_seeds_when_time_runs_out(tiny_signal, monkeypatch):
    """refit_seeds 3 without a budget: all three train; the one that predicted one class on its own
    training sequences is left out, the other two ship as one model, scored as their average. Under a
    budget with 13 s left (4 epochs at 0.625 s and the setup need 12.5 s), a first seed that takes 2 s
    leaves too little for a second: one seed ships."""
    from objectives.objective import Objective

    calls, shipped_paths = [], []

    def fake(self, params, seed, *, epochs, stop_at=None):
        calls.append(seed)
        if sleep:
            time.sleep(sleep)
        collapsed = (seed - refit.SEED_OFFSET) // 1000 == 1  # the second seed
        return RefitRun(seed=seed, epochs=epochs, planned_epochs=epochs, train_balanced_accuracy=0.5 if collapsed else 0.9,
                        near_collapse=collapsed, test_balanced_accuracy=0.7 + 0.1 * len(calls), seconds=1.0), _Saved()

    def ship(opened, trial, paths, **kwargs):
        shipped_paths.append(len(paths))
        return {"model_uri": "models:/refit"}

    monkeypatch.setattr(Objective, "refit", fake)
    monkeypatch.setattr(refit, "ship_models", ship)
    sleep = 0.0
    opened = _opened(tiny_signal)
    shipped = refit.refit_champion(opened)
    assert len(calls) == 3 and shipped_paths == [2]
    assert shipped["seeds"] == 2 and shipped["seed_test_balanced_accuracy"] == pytest.approx([0.8, 1.0])
    # the average of the two kept seeds' probabilities (both alternate the classes) scored on the test part
    import numpy as np

    from objectives.metrics import evaluate_predictions

    y_test = opened.prep.data.y_test
    expected = evaluate_predictions(y_test, np.arange(len(y_test)) % 2, 2).balanced_accuracy
    assert shipped["test_balanced_accuracy"] == pytest.approx(expected)
    assert opened.study.user_attrs["shipped"]["seeds"] == 2

    calls.clear()
    sleep = 2.0
    opened = _opened(tiny_signal)
    now = time.time()
    opened.deadline = Deadline(started_at=now - 100, search_ends_at=now - 10, ends_at=now + 13 + 15)
    shipped = refit.refit_champion(opened)
    assert len(calls) == 1 and shipped["seeds"] == 1 and shipped["epochs"] == 4


def test_ship_auto_refits_untested_where_the_clock_stopped_its_check_before_two_folds_compared(tiny_signal, monkeypatch):
    """Every 4-epoch fold run was stopped by the clock: the check has no evidence either way, so the
    refit trains 1.25 x the trial's 2 epochs -> 3, untested, and the stored verdict keeps the runs."""
    from objectives.objective import Objective

    opened = _opened(tiny_signal)
    splits = retrain.run_splits(opened, split_folds(opened.prep.data, k=3, seed=retrain.split_seed(0, 0)))
    refits = []

    def fake(self, params, seed, *, epochs, stop_at=None):
        held_out = len(self.split.y_val) > 0
        if not held_out:
            refits.append(epochs)
        cut = held_out and epochs == 4  # the clock stopped it after 3 of its 4 epochs
        return RefitRun(seed=seed, epochs=3 if cut else epochs, planned_epochs=epochs, train_balanced_accuracy=0.9,
                        near_collapse=False, test_balanced_accuracy=0.9, seconds=1.0,
                        val_balanced_accuracy=0.8 if held_out else None), _Saved()

    monkeypatch.setattr(Objective, "refit", fake)
    monkeypatch.setattr(refit, "ship_models", lambda *a, **k: {"model_uri": "models:/refit"})
    assert refit.refit_champion(opened, check=splits) is not None
    assert refits == [3, 3, 3]
    check = opened.study.user_attrs["length_check"]
    assert (check["refit"], check["epochs"], check["folds"], len(check["runs"])) == (True, 3, 0, 6)
    assert "untested: fewer than 2 folds finished runs of both lengths" in check["reason"]
