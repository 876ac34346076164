"""`sweep diagnose DATA`: is there anything to learn, before paying for a sweep?

The most forgotten cause of an LSTM that predicts one class is data whose labels do not depend on
the inputs at all. A fast, non-recurrent baseline answers that question in seconds: logistic
regression on simple per-series summaries (level, spread, range, and order-aware ones: slope,
last minus first, second half minus first half, lag-1 autocorrelation), scored by cross-validated
balanced accuracy and compared with the same baseline on shuffled labels (a permutation test,
scikit-learn's ``permutation_test_score``). If the real labels do no better than shuffled ones,
the data carries no signal this check can see, and most likely none at all.

Pure numpy + scikit-learn: no TensorFlow, no MLflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sweep.data import Dataset

# p <= ALPHA: signal (the real labels beat every one of 99 shuffles). ALPHA < p <= UNCLEAR: weak
# evidence either way. 0.05 would call 1 noise set in 20 "signal" by design; seen here at n=300.
ALPHA = 0.01
UNCLEAR = 0.10
N_PERMUTATIONS = 99
MAX_SERIES = 4000  # a larger set is subsampled (stratified) for the check; it stays a few seconds


@dataclass(frozen=True)
class ClassCount:
    label: str
    train: int
    test: int | None


@dataclass(frozen=True)
class SignalCheck:
    baseline_balanced_accuracy: float
    baseline_std: float
    shuffled_mean: float
    shuffled_p95: float
    p_value: float
    n_permutations: int
    folds: int
    series_used: int
    has_signal: bool


@dataclass(frozen=True)
class Diagnosis:
    source: str
    classes: list[ClassCount]
    imbalance_ratio: float
    chance_balanced_accuracy: float  # also what "always predict the majority class" scores
    majority_class_accuracy: float  # plain accuracy of that same useless model
    timesteps: int
    features: int
    feature_stats: list[dict[str, float]]
    signal: SignalCheck
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summary_features(X: np.ndarray) -> np.ndarray:
    """Per series and channel: mean, std, min, max, slope, last-first, late-early half, lag-1 autocorr."""
    n, t, _ = X.shape
    time = np.arange(t, dtype=np.float64) - (t - 1) / 2
    centred = X - X.mean(axis=1, keepdims=True)
    slope = np.einsum("t,ntf->nf", time, X) / max(float((time**2).sum()), 1e-12)
    half = t // 2
    late_minus_early = X[:, half:].mean(axis=1) - X[:, :half].mean(axis=1) if t >= 2 else np.zeros(X.shape[::2])
    var = (centred**2).sum(axis=1)
    lag1 = (centred[:, 1:] * centred[:, :-1]).sum(axis=1) / np.where(var > 0, var, 1.0) if t >= 2 else np.zeros(X.shape[::2])
    parts = [X.mean(axis=1), X.std(axis=1), X.min(axis=1), X.max(axis=1), slope, X[:, -1] - X[:, 0],
             late_minus_early, lag1]
    return np.concatenate(parts, axis=1)


def signal_check(X: np.ndarray, y: np.ndarray, *, seed: int = 0, n_permutations: int = N_PERMUTATIONS) -> SignalCheck:
    """Cross-validated balanced accuracy of the baseline vs the same on shuffled labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, permutation_test_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(y) > MAX_SERIES:
        X, _, y, _ = train_test_split(X, y, train_size=MAX_SERIES, stratify=y, random_state=seed)
    features = np.nan_to_num(summary_features(np.asarray(X, dtype=np.float64)))
    folds = int(max(2, min(5, np.bincount(y).min())))
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    from sklearn.model_selection import cross_val_score
    from threadpoolctl import threadpool_limits

    # ~500 small fits: one BLAS thread is faster than several fighting over tiny matrices (5.6 s vs 7.7 s).
    with threadpool_limits(1):
        score, shuffled, p_value = permutation_test_score(
            model, features, y, cv=cv, scoring="balanced_accuracy", n_permutations=n_permutations,
            random_state=seed,
        )
        per_fold = cross_val_score(model, features, y, cv=cv, scoring="balanced_accuracy")
    return SignalCheck(
        baseline_balanced_accuracy=float(score), baseline_std=float(per_fold.std()),
        shuffled_mean=float(shuffled.mean()), shuffled_p95=float(np.percentile(shuffled, 95)),
        p_value=float(p_value), n_permutations=n_permutations, folds=folds, series_used=len(y),
        has_signal=bool(p_value <= ALPHA),
    )


def diagnose(data: Dataset, *, seed: int = 0, n_permutations: int = N_PERMUTATIONS) -> Diagnosis:
    """Everything `sweep diagnose DATA` reports, computed on the training part only."""
    k = data.n_classes
    train_counts = np.bincount(data.y_train, minlength=k)
    test_counts = np.bincount(data.y_test, minlength=k) if data.y_test is not None else None
    classes = [ClassCount(str(label), int(train_counts[i]), int(test_counts[i]) if test_counts is not None else None)
               for i, label in enumerate(data.labels)]
    X = data.X_train
    stats = [{"feature": float(f), "mean": float(X[:, :, f].mean()), "std": float(X[:, :, f].std()),
              "min": float(X[:, :, f].min()), "max": float(X[:, :, f].max())} for f in range(data.features)]
    check = signal_check(X, data.y_train, seed=seed, n_permutations=n_permutations)
    chance = 1.0 / k
    return Diagnosis(
        source=data.source, classes=classes,
        imbalance_ratio=float(train_counts.max() / max(train_counts.min(), 1)),
        chance_balanced_accuracy=chance,
        majority_class_accuracy=float(train_counts.max() / train_counts.sum()),
        timesteps=data.timesteps, features=data.features, feature_stats=stats, signal=check,
        verdict=verdict(check, chance=chance),
    )


def verdict(check: SignalCheck, *, chance: float) -> str:
    """One sentence a user can act on."""
    score, p = check.baseline_balanced_accuracy, check.p_value
    if check.has_signal:
        return (f"Signal found: a simple non-recurrent baseline reaches balanced accuracy {score:.3f} against "
                f"{check.shuffled_mean:.3f} on shuffled labels (p = {p:.2f}): worth a sweep, whose best model should "
                "at least match this baseline.")
    if p <= UNCLEAR:
        return (f"Unclear: a simple baseline reaches balanced accuracy {score:.3f} against {check.shuffled_mean:.3f} "
                f"on shuffled labels (p = {p:.2f}), weak evidence of signal; an LSTM may still find order the "
                "baseline cannot see, but expect scores near chance and more data to help.")
    return (f"No signal: the labels look independent of the inputs (a baseline scores balanced accuracy {score:.3f}, "
            f"no better than on shuffled labels, p = {p:.2f}), so no model can be expected to beat chance "
            f"({chance:.2f}); check the labels and their alignment with the sequences before sweeping.")
