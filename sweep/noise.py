"""The winner's curse: what the best of N label-independent validation scores reaches by luck.

numpy only. Used by `sweep diagnose --study` (:mod:`sweep.explain`).
"""

from __future__ import annotations

import numpy as np

NOISE_QUANTILE = 0.95
NOISE_DRAWS = 20000


def null_balanced_accuracies(confusion: list[list[int]], *, draws: int = NOISE_DRAWS, seed: int = 0) -> np.ndarray:
    """Balanced accuracy of ``draws`` label-independent predictors on this evaluation set.

    Each draw shuffles the predictions of the confusion matrix across the sequences (keeping
    both the true class counts and the predicted class counts), which is what a model scores when
    its outputs carry no information about the labels. A single-class histogram is replaced by
    predictions in the true proportions (a collapsed model's null is exactly chance).
    """
    c = np.asarray(confusion, dtype=np.int64)
    true_counts, predicted = c.sum(axis=1), c.sum(axis=0)
    if np.count_nonzero(predicted) <= 1:
        predicted = true_counts
    k = len(true_counts)
    y_true = np.repeat(np.arange(k), true_counts)
    y_pred = np.repeat(np.arange(k), predicted)
    present = np.flatnonzero(true_counts)
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    chunk = max(1, 4_000_000 // max(len(y_true), 1))
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        shuffled = rng.permuted(np.broadcast_to(y_pred, (n, len(y_pred))), axis=1)
        hits = shuffled == y_true
        recalls = [hits[:, y_true == cls].mean(axis=1) for cls in present]
        out[start:start + n] = np.mean(recalls, axis=0)
    return out


def noise_band(confusion: list[list[int]], n_checks: int, *, seed: int = 0) -> float:
    """The balanced accuracy the best of ``n_checks`` label-independent scores stays under with
    probability NOISE_QUANTILE.

    A sweep looks at the validation score once per epoch of every trial: each trial keeps its best
    epoch, and the study keeps its best trial, so the winner is the best of all those looks. They
    are treated as independent, which makes the band wider than correlated looks give: a score
    inside it is one that luck alone explains.
    """
    null = null_balanced_accuracies(confusion, seed=seed)
    return float(np.quantile(null, NOISE_QUANTILE ** (1.0 / max(n_checks, 1))))


