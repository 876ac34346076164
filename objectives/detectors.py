"""What one epoch looked like, and what a trial's epochs say about why it failed to learn.

Pure Python + numpy (no TensorFlow): the detectors run on histories the training loop wrote, or
on synthetic ones in tests.

Gradient norms are the L2 norm of the loss gradient over one layer's weights, averaged over the
epoch's training steps (Keras computes them anyway; the optimizer adds them up for free):

* **vanishing**: the first LSTM layer's norm is below ``VANISHING_NORM`` at the end of training,
  or below ``VANISHING_RATIO`` times the last layer's: the signal from the loss no longer reaches
  the layer that reads the sequence, so it stops learning.
* **exploding**: a norm above ``EXPLODING_NORM`` or non-finite in any epoch: the steps are large
  enough to throw the weights around (and a non-finite loss follows, failing the trial as
  ``nan_loss``).

For a healthy model the norms sit between ~1e-3 and ~10 (mean cross-entropy, batches of 16-64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

VANISHING_NORM = 1e-5
VANISHING_RATIO = 1e-4
EXPLODING_NORM = 1e3
# How many of the last epochs must agree before a trial is said to have vanishing gradients
# (one quiet epoch at a loss minimum is not a diagnosis).
VANISHING_EPOCHS = 2


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch looked like; logged as MLflow curves."""

    epoch: int
    loss: float
    val_loss: float
    val_balanced_accuracy: float
    val_score: float
    val_top_class_share: float
    learning_rate: float
    seconds: float
    val_predicted_classes: int = 0  # how many classes the validation predictions use (1 = collapsed)
    grad_norm_first: float | None = None  # first LSTM layer, mean over the epoch's steps (None: not measured)
    grad_norm_last: float | None = None  # the softmax layer

    @property
    def val_penalty(self) -> float:
        return self.val_balanced_accuracy - self.val_score


def gradient_trouble(history: Sequence[EpochRecord]) -> str | None:
    """``"exploding"``, ``"vanishing"`` or None for a trial's epoch history."""
    measured = [r for r in history if r.grad_norm_first is not None and r.grad_norm_last is not None]
    if not measured:
        return None
    if any(not math.isfinite(n) or n > EXPLODING_NORM for r in measured for n in (r.grad_norm_first, r.grad_norm_last)):
        return "exploding"
    tail = measured[-VANISHING_EPOCHS:]
    if len(tail) < VANISHING_EPOCHS:
        return None
    if all(r.grad_norm_first < VANISHING_NORM or r.grad_norm_first < VANISHING_RATIO * r.grad_norm_last for r in tail):
        return "vanishing"
    return None


def collapsed_epochs(history: Sequence[EpochRecord], *, warmup: int) -> int:
    """How many epochs after the warm-up predicted (nearly) one class (a positive collapse penalty)."""
    return sum(1 for r in history if r.epoch > warmup and r.val_penalty > 0)


def gradient_summary(history: Sequence[EpochRecord]) -> dict[str, Any]:
    """What a trial's stored record keeps about its gradients (the full curves are in MLflow)."""
    first = [r.grad_norm_first for r in history if r.grad_norm_first is not None]
    last = [r.grad_norm_last for r in history if r.grad_norm_last is not None]
    if not first:
        return {"gradient_trouble": None}

    def clean(values: list[float], pick: Any) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(pick(finite)) if finite else None

    return {
        "gradient_trouble": gradient_trouble(history),
        "grad_norm_first_final": first[-1] if math.isfinite(first[-1]) else None,
        "grad_norm_first_min": clean(first, min),
        "grad_norm_max": clean(first + last, max),
    }
