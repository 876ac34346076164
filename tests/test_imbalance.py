"""Class-weight strategies and oversampling for imbalanced labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_class_weight

from objectives.imbalance import class_weights, oversample_indices

Y = np.array([0] * 30 + [1] * 9 + [2] * 3)
BALANCED = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=Y)


def test_none_and_oversample_train_unweighted():
    assert class_weights(Y, "none", 3) is None
    assert class_weights(Y, "oversample", 3) is None


def test_balanced_equals_scikit_learn():
    w = class_weights(Y, "balanced", 3)
    assert set(w) == {0, 1, 2} and all(type(k) is int and type(v) is float for k, v in w.items())
    assert w == pytest.approx(dict(enumerate(BALANCED)))
    # n / (k * count): 42 / (3 * 30), 42 / (3 * 9), 42 / (3 * 3)
    assert w == pytest.approx({0: 42 / 90, 1: 42 / 27, 2: 42 / 9})


def test_sqrt_is_the_square_root_of_balanced():
    w = class_weights(Y, "sqrt", 3)
    assert w == pytest.approx(dict(enumerate(np.sqrt(BALANCED))))
    assert w[0] < 1 < w[1] < w[2] < class_weights(Y, "balanced", 3)[2]


def test_balanced_weights_make_every_class_weigh_the_same_in_total():
    w = class_weights(Y, "balanced", 3)
    totals = [w[c] * np.sum(Y == c) for c in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)


def test_a_class_absent_from_the_training_part_gets_weight_one():
    y = np.array([0] * 6 + [2] * 2)
    w = class_weights(y, "balanced", 3)
    expected = compute_class_weight("balanced", classes=np.array([0, 2]), y=y)
    assert w == pytest.approx({0: expected[0], 1: 1.0, 2: expected[1]})


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown class-weight strategy 'focal'"):
        class_weights(Y, "focal", 3)


def test_oversampling_equalizes_class_counts_and_keeps_every_original_row():
    idx = oversample_indices(Y, seed=0)
    assert np.bincount(Y[idx]).tolist() == [30, 30, 30]
    assert len(idx) == 90
    assert set(idx.tolist()) == set(range(len(Y)))
    # the majority rows appear exactly once; only minority rows repeat
    counts = np.bincount(idx, minlength=len(Y))
    assert (counts[Y == 0] == 1).all() and (counts[Y != 0] >= 1).all()


def test_oversampling_is_seeded_and_shuffled():
    a = oversample_indices(Y, seed=0)
    np.testing.assert_array_equal(a, oversample_indices(Y, seed=0))
    assert not np.array_equal(a, oversample_indices(Y, seed=1))
    labels = Y[a]
    assert np.count_nonzero(np.diff(labels)) > 10  # classes interleave, not one block per class


def test_oversampling_balanced_labels_is_a_permutation():
    y = np.array([0, 1] * 10)
    idx = oversample_indices(y, seed=3)
    assert sorted(idx.tolist()) == list(range(20))


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=5), seed=st.integers(0, 2**16))
def test_oversampling_property(counts, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(y)
    idx = oversample_indices(y, seed=seed)
    assert np.bincount(y[idx], minlength=len(counts)).tolist() == [max(counts)] * len(counts)
    assert set(idx.tolist()) == set(range(len(y)))


def test_steps_per_epoch_count_batches_and_grow_with_oversampling():
    from objectives.imbalance import steps_per_epoch

    y = np.array([0] * 60 + [1] * 20)
    assert steps_per_epoch(y, "none", 16) == 5 and steps_per_epoch(y, "balanced", 32) == 3
    assert steps_per_epoch(y, "oversample", 16) == 8  # 60 + 60 rows after oversampling
    assert steps_per_epoch(np.array([], dtype=int), "oversample", 16) == 0
