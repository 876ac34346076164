"""Class-weight strategies for imbalanced labels: ``none``, ``balanced``, ``sqrt``, ``oversample``."""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight


def class_weights(y: np.ndarray, strategy: str, n_classes: int) -> dict[int, float] | None:
    """Per-class loss weights for ``model.fit(class_weight=...)``, or None when no weighting applies.

    ``balanced`` is scikit-learn's ``n / (k * count)``; ``sqrt`` its square root (a softer push
    toward minority classes); ``none`` and ``oversample`` train unweighted.
    """
    if strategy in ("none", "oversample"):
        return None
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    if strategy == "sqrt":
        weights = np.sqrt(weights)
    elif strategy != "balanced":
        raise ValueError(f"unknown class-weight strategy {strategy!r}")
    out = {c: 1.0 for c in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


def oversample_indices(y: np.ndarray, *, seed: int) -> np.ndarray:
    """Indices that repeat minority-class rows at random until every class matches the largest."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max()
    parts = []
    for c, count in zip(classes, counts):
        idx = np.flatnonzero(y == c)
        extra = rng.choice(idx, size=target - count, replace=True) if count < target else idx[:0]
        parts.append(np.concatenate([idx, extra]))
    out = np.concatenate(parts)
    rng.shuffle(out)
    return out


def steps_per_epoch(y: np.ndarray, strategy: str, batch_size: int) -> int:
    """Optimizer steps in one epoch of training on ``y`` with ``strategy`` (oversampling grows it)."""
    n = len(y)
    if strategy == "oversample" and n:
        _, counts = np.unique(y, return_counts=True)
        n = int(counts.max()) * len(counts)
    return -(-n // batch_size)
