"""Post-hoc decision adjustment: per-class offsets on the log-probabilities, fitted on validation.

A softmax classifier trained on imbalanced data often ranks the classes well but places its
decision boundary toward the majority class. Adding an offset ``b_c`` to each class's
log-probability and predicting ``argmax_c(log p_c + b_c)`` moves that boundary without
retraining. The offsets are chosen to maximize balanced accuracy on the validation split:

* two classes: an exact search over every distinct threshold on ``log p_1 - log p_0``;
* more: coordinate ascent over a grid of offsets (class 0 stays at 0), a few rounds.

The validation score after adjustment is fitted on the same data, so it is optimistic by
construction; the test score (when there is a test split) is the honest one. Both are recorded
beside the unadjusted scores, and the trial's objective value never uses them.

Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.linspace(-4.0, 4.0, 33)
ROUNDS = 3
_EPS = 1e-7


@dataclass(frozen=True)
class DecisionRule:
    offsets: list[float]  # added to each class's log-probability

    def predict(self, probabilities: np.ndarray) -> np.ndarray:
        return predict_with_offsets(probabilities, np.asarray(self.offsets))


def predict_with_offsets(probabilities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.argmax(np.log(np.clip(probabilities, _EPS, 1.0)) + offsets, axis=1)


def _ba(y: np.ndarray, pred: np.ndarray) -> float:
    """Balanced accuracy (mean recall over the classes present), as scikit-learn computes it; a
    bincount is ~50x quicker than its confusion-matrix path, and the search calls this hundreds of times."""
    k = int(max(y.max(), pred.max())) + 1
    cells = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    support = cells.sum(axis=1)
    present = support > 0
    return float((np.diag(cells)[present] / support[present]).mean())


def fit_decision_rule(probabilities: np.ndarray, y: np.ndarray) -> DecisionRule:
    """Offsets that maximize balanced accuracy of ``argmax(log p + offsets)`` on (probabilities, y)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    k = p.shape[1]
    if k == 2:
        return DecisionRule([0.0, _binary_offset(p, y)])
    offsets = np.zeros(k)
    best = _ba(y, predict_with_offsets(p, offsets))
    for _ in range(ROUNDS):
        improved = False
        for c in range(1, k):
            for value in GRID:
                trial = offsets.copy()
                trial[c] = value
                score = _ba(y, predict_with_offsets(p, trial))
                # Ties go to the smaller move (closer to the model's own decision).
                if score > best + 1e-12 or (abs(score - best) <= 1e-12 and abs(value) < abs(offsets[c])):
                    best, offsets, improved = score, trial, True
        if not improved:
            break
    return DecisionRule([float(v) for v in offsets])


def _binary_offset(p: np.ndarray, y: np.ndarray) -> float:
    """The offset b for class 1 (predict 1 when log p1 - log p0 + b > 0) with the best balanced
    accuracy; of equally good ones, the smallest |b|."""
    logp = np.log(np.clip(p, _EPS, 1.0))
    d = logp[:, 1] - logp[:, 0]
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        return 0.0
    order = np.argsort(-d, kind="stable")
    d_sorted, y_sorted = d[order], y[order]
    # Predicting the top j sequences as class 1, for j = 0..n (cut only between distinct values).
    tp = np.concatenate([[0], np.cumsum(y_sorted == 1)])
    fp = np.concatenate([[0], np.cumsum(y_sorted == 0)])
    ba = 0.5 * (tp / positives + (negatives - fp) / negatives)
    n = len(d_sorted)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = d_sorted[:-1] != d_sorted[1:]
    # The threshold between item j-1 and j: midpoint of their d values; b = -threshold.
    upper = np.concatenate([[d_sorted[0] + 1.0], d_sorted])  # d of the last item predicted 1
    lower = np.concatenate([d_sorted, [d_sorted[-1] - 1.0]])  # d of the first item predicted 0
    offsets = -(upper + lower) / 2
    scores = np.where(valid, ba, -np.inf)
    top = scores.max()
    candidates = np.flatnonzero(scores >= top - 1e-12)
    return float(offsets[candidates[np.argmin(np.abs(offsets[candidates]))]])
