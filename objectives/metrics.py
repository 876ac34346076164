"""Balanced accuracy and the collapse penalty: the score every trial is ranked by.

The score is ``balanced_accuracy - penalty``:

* **Collapse** (every validation sequence gets the same class): ``penalty = 1``. Balanced
  accuracy of such a model is at most ``1/2``, so its score is at most ``-0.5``.
* **Near-collapse**: let ``c`` be the class that takes the most predictions, ``s`` its share of
  the predictions and ``p`` its true share of the validation labels. Collapse "starts" halfway
  between ``p`` and 1: ``onset = p + (1 - p) / 2``. Past the onset the penalty grows linearly,
  ``penalty = 0.5 * (s - onset) / (1 - onset)``, reaching (but never touching) 0.5 as ``s -> 1``.
  A model that predicts classes in about their true proportions pays nothing.

So any model that predicts at least two classes scores strictly above ``-0.5`` and strictly above
every collapsed model, whatever its balanced accuracy.
"""

from __future__ import annotations

import math

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

COLLAPSE_PENALTY = 1.0
NEAR_COLLAPSE_WEIGHT = 0.5


@dataclass(frozen=True)
class Evaluation:
    """Every number we keep about one set of predictions."""

    balanced_accuracy: float
    accuracy: float
    macro_f1: float
    penalty: float
    score: float
    collapsed: bool
    top_class_share: float
    n_predicted_classes: int
    histogram: list[int]
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collapse_penalty(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Penalty for single-class and near-single-class output (see the module docstring)."""
    hist = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=n_classes)
    if np.count_nonzero(hist) <= 1:
        return COLLAPSE_PENALTY
    top = int(np.argmax(hist))
    share = hist[top] / hist.sum()
    prior = float(np.mean(np.asarray(y_true) == top))
    onset = prior + (1.0 - prior) / 2.0
    if onset >= 1.0 or share <= onset:
        return 0.0
    return NEAR_COLLAPSE_WEIGHT * float((share - onset) / (1.0 - onset))


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Evaluation:
    """Score predicted class ids against true ones (both ``0..n_classes-1``)."""
    # Imported here: scikit-learn takes 1-1.5 s to import, and `sweep status` and `sweep best`
    # read this module (rank_key) without scoring anything.
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    labels = list(range(n_classes))
    hist = np.bincount(y_pred, minlength=n_classes)
    with warnings.catch_warnings():
        # scikit-learn warns when a class is predicted that the true labels lack; the score is
        # still the mean recall over the classes present, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        ba = float(balanced_accuracy_score(y_true, y_pred))
    penalty = collapse_penalty(y_true, y_pred, n_classes)
    return Evaluation(
        balanced_accuracy=ba,
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        penalty=penalty,
        score=ba - penalty,
        collapsed=bool(np.count_nonzero(hist) <= 1),
        top_class_share=float(hist.max() / max(hist.sum(), 1)),
        n_predicted_classes=int(np.count_nonzero(hist)),
        histogram=[int(v) for v in hist],
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    )


def evaluate_averaged(y_true: np.ndarray, probas: Sequence[np.ndarray], n_classes: int) -> Evaluation:
    """Score several models as one: the class their probabilities, averaged, favour (what an
    averaging pyfunc predicts: the refit's seeds, the fold ensemble)."""
    return evaluate_predictions(y_true, np.mean(list(probas), axis=0).argmax(axis=1), n_classes)


# The default of `train.warmup_steps`: a trial is not stopped (collapse, flat validation score,
# median pruner) before this many optimizer steps. A model often predicts the majority class until
# it has taken enough steps, and on a small set an epoch is only a few (ECG200: 80 training
# sequences, 5 steps at batch 16; with a 2-epoch warm-up every trial was collapse-pruned at epoch 4).
MIN_WARMUP_STEPS = 100


# The default of `train.warmup_fraction`: no trial is stopped for a flat or below-median validation
# score before this share of its epoch budget. Slow starters are common on real series: in the
# quality benchmark (20-epoch cap) configurations stopped at epochs 6-9 (patience 5 ran out right at
# the end of the warm-up, or the median pruner) reached, trained the full 20 epochs by the baseline
# searches, 0.76 (Strawberry), 0.96 (JapaneseVowels) and 0.50 (MedicalImages, 10 classes) validation
# balanced accuracy; the first two were the best configuration of their search. Collapse stopping keeps the
# shorter warm-up: replayed on the collapse benchmark's curves, half the budget as its warm-up would
# have cut its saving from 16% of all epochs to 0.6%.
WARMUP_FRACTION = 0.5


def warmup_epochs(
    min_epochs: int, steps_per_epoch: int, *, min_steps: int = MIN_WARMUP_STEPS, epochs: int = 0,
    fraction: float = 0.0,
) -> int:
    """Epochs of warm-up: at least ``min_epochs``, enough epochs for ``min_steps`` steps, and
    ``fraction`` of the ``epochs`` budget (rounded up)."""
    return max(min_epochs, -(-min_steps // max(1, steps_per_epoch)), math.ceil(fraction * epochs - 1e-9))


# How far above chance (as a share of the way from chance to perfect) a trial's best balanced
# accuracy must be before near single-class epochs stop counting as collapse (CollapseWatch).
# Chosen by replaying the recorded curves of benchmarks/collapse.py (BENCHMARKS.md).
LEARNED_MARGIN = 0.1


@dataclass
class CollapseWatch:
    """Says when a trial has predicted (nearly) one class for long enough to stop paying for it.

    An epoch is *near single-class* when the collapse penalty is positive: one class takes more
    of the validation predictions than the onset (halfway between its true share and 100%), or
    every prediction is one class. After ``warmup`` epochs (a model often starts out predicting
    the majority class), ``patience`` such epochs in a row stop the trial. ``patience = 0`` never
    stops.

    Two kinds of near single-class epoch do not count (pass ``balanced_accuracy`` to use them;
    without it every near single-class epoch counts):

    * one whose balanced accuracy beats every earlier epoch of the trial: the model is still
      learning its way out (LSST, 14 classes: trials at 2-3x chance, mostly predicting the top
      class, were stopped at epoch 4);
    * any epoch, once the trial has reached a balanced accuracy of ``chance + LEARNED_MARGIN *
      (1 - chance)`` (``chance`` = 1 / number of classes): a model that has shown it separates the
      classes is oscillating, not collapsed (Strawberry: a trial at 0.69 was stopped at epoch 6;
      trained on, the same configuration reached 0.95). The patience and the median pruner still
      stop it if it does not improve.
    """

    warmup: int = 2
    patience: int = 2
    chance: float | None = None
    streak: int = 0
    best_balanced_accuracy: float = float("-inf")

    def update(self, epoch: int, penalty: float, balanced_accuracy: float | None = None) -> bool:
        """Record epoch ``epoch`` (1-based), its penalty and balanced accuracy; True when the trial
        should stop."""
        improving = balanced_accuracy is not None and balanced_accuracy > self.best_balanced_accuracy
        if balanced_accuracy is not None:
            self.best_balanced_accuracy = max(self.best_balanced_accuracy, balanced_accuracy)
        learned = self.chance is not None and \
            self.best_balanced_accuracy > self.chance + LEARNED_MARGIN * (1.0 - self.chance)
        if epoch <= self.warmup or penalty <= 0 or improving or learned:
            self.streak = 0
        else:
            self.streak += 1
        return self.patience > 0 and self.streak >= self.patience

    def reason(self) -> str:
        return (f"collapse: (nearly) one class predicted for {self.streak} epochs in a row without a gain in "
                f"balanced accuracy, after a {self.warmup}-epoch warm-up")


def rank_key(score: float, val_loss: float | None) -> tuple[float, float]:
    """How trials rank: by score, and of equal scores by the lower validation cross-entropy.

    Balanced accuracy on a small validation split moves in steps (JapaneseVowels: 54 validation
    sequences, several trials at 0.981), so ties are common; the loss is continuous and says which
    of the tied models is more confident where it is right. A missing loss ranks last among ties.
    """
    loss = val_loss if val_loss is not None and np.isfinite(val_loss) else np.inf
    return (float(score), -float(loss))


def cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (the unweighted validation loss)."""
    p = np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))
