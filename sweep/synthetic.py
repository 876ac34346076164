"""Synthetic imbalanced sequence sets with a known answer.

``seed-noise``: the classic failure case. Uniform noise, labels 80/20 at random: no model can
beat a balanced accuracy of 0.5, and a naive one collapses to the majority class.

``seed-signal``: the same shape and imbalance with a planted temporal signal. Each sequence
carries a hidden bit ``z`` written as the *direction* of a ramp on feature 0 (rising for 1,
falling for 0) on top of the same uniform noise. The ramp is steep enough that ``z`` can be read
without error from the order of the values, yet every sequence holds the same multiset of ramp
offsets, so an order-blind model (one that sees the values but not their order) learns nothing.
The label agrees with ``z`` with probability ``agreement`` in each class, so the Bayes-optimal
classifier is ``predict z`` and its balanced accuracy is exactly ``agreement`` (0.90 by default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sweep.errors import DataError

KINDS = ("seed-signal", "seed-noise")
MAX_SEQUENCES = 1_000_000  # 400 MB of float32 per split; more is a typo, not a demo set
TIMESTEPS = 20
FEATURES = 5
MINORITY_SHARE = 0.2
RAMP_AMPLITUDE = 2.5


def make_dataset(
    kind: str, *, n_train: int = 1000, n_test: int = 1000, seed: int = 0, agreement: float = 0.9
) -> dict[str, np.ndarray]:
    """Arrays for an ``.npz`` file: X_train, y_train, X_test, y_test and a JSON ``meta`` string."""
    if kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 20 <= n_train <= MAX_SEQUENCES or not 0 <= n_test <= MAX_SEQUENCES:
        raise DataError(f"--n must be in [20, {MAX_SEQUENCES}] and --n-test in [0, {MAX_SEQUENCES}] "
                        f"(got {n_train}, {n_test})")
    if not 0.5 < agreement <= 1.0:
        raise DataError(f"--agreement must be in (0.5, 1], got {agreement}")
    rng = np.random.default_rng(seed)
    X_train, y_train, z_train = _draw(kind, n_train, rng, agreement)
    X_test, y_test, z_test = _draw(kind, n_test, rng, agreement)
    meta: dict[str, Any] = {
        "kind": kind,
        "seed": seed,
        "timesteps": TIMESTEPS,
        "features": FEATURES,
        "minority_share": MINORITY_SHARE,
    }
    if kind == "seed-signal":
        meta.update(
            description="rising vs falling ramp on feature 0 carries a hidden bit z; labels agree with z "
            f"with probability {agreement} per class",
            bayes_balanced_accuracy=agreement,
            bayes_balanced_accuracy_test=_balanced_accuracy(y_test, z_test) if n_test else None,
            bayes_balanced_accuracy_train=_balanced_accuracy(y_train, z_train),
        )
    else:
        meta.update(description="uniform noise; labels independent of the inputs", bayes_balanced_accuracy=0.5)
    arrays = {"X_train": X_train, "y_train": y_train, "meta": np.array(json.dumps(meta))}
    if n_test:
        arrays.update(X_test=X_test, y_test=y_test)
    return arrays


def write_dataset(arrays: dict[str, np.ndarray], out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise DataError(f"{out}: the output must end in .npz")
    if not out.parent.exists():
        raise DataError(f"{out}: folder {out.parent} does not exist; create it first")
    np.savez_compressed(out, **arrays)
    return out


def _draw(kind: str, n: int, rng: np.random.Generator, agreement: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_minority = int(round(n * MINORITY_SHARE))
    y = np.zeros(n, dtype=np.int64)
    y[:n_minority] = 1
    rng.shuffle(y)
    X = rng.uniform(0.0, 1.0, size=(n, TIMESTEPS, FEATURES)).astype(np.float32)
    if kind == "seed-noise":
        return X, y, y
    flip = rng.uniform(size=n) > agreement
    z = np.where(flip, 1 - y, y)
    ramp = np.linspace(0.0, RAMP_AMPLITUDE, TIMESTEPS, dtype=np.float32)
    X[:, :, 0] += np.where(z[:, None] == 1, ramp[None, :], ramp[None, ::-1])
    return X, y, z


def _balanced_accuracy(y: np.ndarray, y_hat: np.ndarray) -> float:
    return float(np.mean([np.mean(y_hat[y == c] == c) for c in np.unique(y)]))
