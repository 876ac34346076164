"""The objective decides what a trial's end means: diverged training fails it as `nan_loss`."""

from __future__ import annotations

import optuna
import pytest

pytestmark = pytest.mark.slow  # imports TensorFlow


def test_a_non_finite_loss_fails_the_trial_with_reason_nan_loss(tmp_path, tiny_signal, monkeypatch):
    from objectives import model as lstm
    from objectives.objective import NAN_LOSS, Objective
    from objectives.search_space import SearchSpace
    from sweep.data import load_dataset, split_stratified

    data = load_dataset(tiny_signal)
    split = split_stratified(data, val_fraction=0.25, seed=0)

    def diverge(*args, **kwargs):
        raise lstm.NonFiniteLoss("training loss became nan at epoch 2; lower the learning rate or clip gradients")

    monkeypatch.setattr(lstm, "fit", diverge)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize")
    objective = Objective(split, n_classes=data.n_classes, space=SearchSpace(), epochs=2, patience=2, seed=0)
    study.optimize(objective, n_trials=1, catch=(Exception,))
    [trial] = study.get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith(f"{NAN_LOSS}: training loss became nan at epoch 2")


def test_flat_scores_wait_for_half_the_budget_but_collapse_stopping_keeps_its_short_warmup(tiny_signal):
    """What a trial is granted before each kind of stop (the tiny set: 60 training sequences, a few
    steps an epoch, so the 100-step warm-up is longer than half of a 10-epoch budget)."""
    from objectives.objective import Objective
    from objectives.search_space import LstmParams, SearchSpace
    from sweep.data import load_dataset, split_stratified

    data = load_dataset(tiny_signal)
    split = split_stratified(data, val_fraction=0.25, seed=0)

    def objective(**kwargs):
        return Objective(split, n_classes=data.n_classes, space=SearchSpace(), patience=5, seed=0, **kwargs)

    params = LstmParams(batch_size=32, class_weight="balanced")
    off = objective(epochs=40, warmup_steps=0, warmup_fraction=0.0)
    assert (off._warmup(params), off._min_epochs(params)) == (2, 2)
    half = objective(epochs=40, warmup_steps=0)  # the default fraction, 0.5
    assert (half._warmup(params), half._min_epochs(params)) == (2, 20)
    steps = objective(epochs=10, warmup_steps=100, warmup_fraction=0.5)
    assert steps._warmup(params) == steps._min_epochs(params) > 5  # the step warm-up is the longer one here


def test_a_queued_recipe_is_never_asked_the_pruners_verdict(tmp_path, tiny_signal):
    """Under a pruner that stops everything at its first chance, the queued recipe trains to its
    cap and completes; a sampled trial is pruned with the pruner's reason."""
    from objectives.objective import Objective
    from objectives.search_space import FloatRange, IntRange, SearchSpace
    from sweep.data import load_dataset, split_stratified

    class StopAll(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    data = load_dataset(tiny_signal)
    split = split_stratified(data, val_fraction=0.25, seed=0)
    space = SearchSpace(units=IntRange(8, 8), layers=IntRange(1, 1), dropout=FloatRange(0.0, 0.0),
                        class_weight=("balanced",), conv_filters=(0,), bidirectional=(False,), architecture=("stacked",),
                        lr_schedule=("plateau",))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize", pruner=StopAll())
    study.enqueue_trial({"units": 8, "layers": 1, "dropout": 0.0, "learning_rate": 1e-3, "class_weight": "balanced",
                         "batch_size": 16, "clipnorm": 0.0, "bidirectional": False, "conv_filters": 0,
                         "pooling": "last", "architecture": "stacked", "lr_schedule": "plateau"},
                        user_attrs={"baseline": True})
    objective = Objective(split, n_classes=data.n_classes, space=space, epochs=4, patience=4, seed=0,
                          collapse_patience=0, warmup_steps=0, warmup_fraction=0.0)
    study.optimize(objective, n_trials=2)
    recipe, sampled = study.get_trials()
    assert recipe.state == optuna.trial.TrialState.COMPLETE and recipe.user_attrs["result"]["epochs_run"] == 4
    assert sampled.state == optuna.trial.TrialState.PRUNED
    assert sampled.user_attrs["result"]["prune_reason"].startswith("median:")
