"""How long the refit trains and on how many folds ``--ship auto`` tests that length first
(sweep.refit._length): pure arithmetic over the time left, no TensorFlow."""

from __future__ import annotations

import types

import numpy as np
import pytest

from sweep import budget, refit


def _prep(n: int = 90, *, workers: int = 2, folds: int = 3, cap: int = 100):
    cfg = types.SimpleNamespace(workers=workers, retrain_seeds=folds, train=types.SimpleNamespace(epochs=cap))
    return types.SimpleNamespace(cfg=cfg, data=types.SimpleNamespace(y_train=np.zeros(n, dtype=int)))


def _folds(n: int = 90, k: int = 3):
    """k folds of n sequences: each trains on n (k-1)/k."""
    return {i: (7, types.SimpleNamespace(y_train=np.zeros(n * (k - 1) // k, dtype=int))) for i in range(k)}


def test_the_check_trains_on_every_fold_when_a_longer_refit_fits_after_them():
    """3 folds of 60 of 90 sequences on 2 workers: 1 refit epoch per epoch of length (check_cost).
    1 s an epoch, own model 10 epochs: 2 setups + 10 short + 2 x 35 long and refit = 100 s."""
    setup = budget.REFIT_SETUP_SECONDS
    epochs, folds = refit._length(_prep(), per_epoch=1.0, at_least=10, left=2 * setup + 10 + 70, check=_folds())
    assert epochs == 35 and folds is not None and sorted(folds) == [0, 1, 2]


def test_with_too_little_time_for_every_fold_the_check_trains_on_two():
    """Own model 14 epochs, 40 s after the setups at 1 s an epoch. 3 folds (factor 1): 26 s after
    the short runs hold 13 epochs of long runs and refit, too few; 2 folds (factor 2/3): 30.7 s hold
    18. With 15 s, not even 2 folds leave a refit as long as the own model: nothing tested or refit."""
    setup = budget.REFIT_SETUP_SECONDS
    epochs, folds = refit._length(_prep(), per_epoch=1.0, at_least=14, left=2 * setup + 40, check=_folds())
    assert epochs == 18 and folds is not None and sorted(folds) == [0, 1]
    assert refit._length(_prep(), per_epoch=1.0, at_least=10, left=2 * setup + 15, check=_folds()) == (None, None)


def test_without_a_check_or_a_budget_the_refit_is_planned_alone():
    epochs, folds = refit._length(_prep(), per_epoch=1.0, at_least=10, left=None, check=None)
    assert (epochs, folds) == (100, None)  # no budget: the cap
    epochs, folds = refit._length(_prep(), per_epoch=1.0, at_least=10, left=budget.REFIT_SETUP_SECONDS + 30, check=None)
    assert (epochs, folds) == (30, None)
    # one resampled split only (too few sequences for folds): still checked on it (the verdict then says why not)
    one = dict(list(_folds().items())[:1])
    epochs, folds = refit._length(_prep(folds=1), per_epoch=1.0, at_least=10, left=None, check=one)
    assert epochs == 100 and folds == one


@pytest.mark.parametrize("workers", [1, 2])
def test_fewer_folds_are_only_used_when_all_of_them_do_not_fit(workers):
    setup = budget.REFIT_SETUP_SECONDS
    _, folds = refit._length(_prep(workers=workers), per_epoch=1.0, at_least=10, left=2 * setup + 1000, check=_folds())
    assert folds is not None and len(folds) == 3


def test_an_untested_refit_says_one_epoch_not_one_epochs():
    """A trial that kept 1 epoch: 1.25x rounds up to 2 epochs of refit; the reason reads as English
    and is what the study stores as its length check."""
    stored = {}
    study = types.SimpleNamespace(set_user_attr=stored.__setitem__)
    opened = types.SimpleNamespace(prep=_prep(), study=study)
    chosen = types.SimpleNamespace(number=4)
    epochs = refit._untested(opened, chosen, per_epoch=1.0, at_least=1, left=None, why="no check fits")
    assert epochs == 2
    reason = stored["length_check"]["reason"]
    assert reason.endswith("no check fits, so it trains about as long as its own model's 1 epoch"), reason
    assert "for 2 epochs, untested" in reason
    assert stored["length_check"]["refit"] is True and stored["length_check"]["folds"] == 0
