"""Post-hoc decision offsets: they find the best balanced accuracy a boundary shift can give."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from objectives.decision import _ba, fit_decision_rule, predict_with_offsets

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def biased_binary(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Informative scores pushed toward the majority class (what unweighted training gives)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    logit = 1.5 * (y - 0.5) + rng.normal(0, 1, n) - 2.0
    p1 = 1 / (1 + np.exp(-logit))
    return np.c_[1 - p1, p1], y


def test_fast_balanced_accuracy_equals_scikit_learns():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y, pred = rng.integers(0, 4, 50), rng.integers(0, 5, 50)
        assert _ba(y, pred) == balanced_accuracy_score(y, pred)


def test_binary_threshold_is_the_best_possible():
    probs, y = biased_binary()
    rule = fit_decision_rule(probs, y)
    adjusted = balanced_accuracy_score(y, rule.predict(probs))
    plain = balanced_accuracy_score(y, probs.argmax(axis=1))
    assert adjusted > plain + 0.15
    # Brute force over every cut of the sorted scores finds nothing better.
    d = np.log(probs[:, 1]) - np.log(probs[:, 0])
    brute = max(balanced_accuracy_score(y, (d >= t).astype(int)) for t in np.unique(d))
    assert adjusted == brute
    assert rule.offsets[0] == 0.0 and rule.offsets[1] > 0  # toward the minority class


def test_a_well_placed_boundary_is_left_alone():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1])
    rule = fit_decision_rule(probs, y)
    assert (rule.predict(probs) == y).all()
    assert abs(rule.offsets[1]) < abs(np.log(0.7 / 0.3))  # the smallest move that keeps it perfect


def test_one_class_in_validation_gives_no_offset():
    probs, _ = biased_binary(50)
    assert fit_decision_rule(probs, np.zeros(50, dtype=int)).offsets == [0.0, 0.0]


def test_multiclass_offsets_improve_balanced_accuracy():
    rng = np.random.default_rng(2)
    k, n = 4, 600
    y = rng.choice(k, size=n, p=[0.7, 0.1, 0.1, 0.1])
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5
    logits[:, 0] += 2.0  # bias toward the majority class
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rule = fit_decision_rule(probs, y)
    assert len(rule.offsets) == k and rule.offsets[0] == 0.0
    assert balanced_accuracy_score(y, rule.predict(probs)) > balanced_accuracy_score(y, probs.argmax(axis=1)) + 0.15
    assert (predict_with_offsets(probs, np.zeros(k)) == probs.argmax(axis=1)).all()
