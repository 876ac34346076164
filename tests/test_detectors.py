"""The detectors on synthetic epoch histories: collapsed, healthy, vanishing, exploding (no TensorFlow)."""

from __future__ import annotations

import math

from objectives.detectors import (
    EXPLODING_NORM,
    VANISHING_NORM,
    EpochRecord,
    collapsed_epochs,
    gradient_summary,
    gradient_trouble,
)
from objectives.metrics import CollapseWatch


def history(n: int = 8, *, penalty: float = 0.0, first: list[float] | None = None, last: list[float] | None = None,
            collapse_from: int = 99) -> list[EpochRecord]:
    out = []
    for e in range(1, n + 1):
        p = 1.0 if e >= collapse_from else penalty
        ba = 0.5 if p else 0.8
        out.append(EpochRecord(
            epoch=e, loss=0.5, val_loss=0.5, val_balanced_accuracy=ba, val_score=ba - p,
            val_top_class_share=1.0 if p else 0.6, learning_rate=1e-3, seconds=0.1,
            val_predicted_classes=1 if p else 2,
            grad_norm_first=None if first is None else first[e - 1], grad_norm_last=None if last is None else last[e - 1],
        ))
    return out


HEALTHY_FIRST = [0.9, 0.7, 0.5, 0.4, 0.35, 0.3, 0.3, 0.25]
HEALTHY_LAST = [1.2, 1.0, 0.8, 0.7, 0.6, 0.6, 0.5, 0.5]


def test_a_healthy_history_shows_nothing():
    h = history(first=HEALTHY_FIRST, last=HEALTHY_LAST)
    assert gradient_trouble(h) is None
    assert collapsed_epochs(h, warmup=2) == 0
    s = gradient_summary(h)
    assert s == {"gradient_trouble": None, "grad_norm_first_final": 0.25, "grad_norm_first_min": 0.25,
                 "grad_norm_max": 1.2}


def test_a_collapsed_history_is_counted_after_the_warm_up_and_stops_the_watch():
    h = history(collapse_from=1)  # one class from the first epoch on
    assert collapsed_epochs(h, warmup=2) == 6
    assert collapsed_epochs(h, warmup=0) == 8
    watch = CollapseWatch(warmup=2, patience=2)
    stops = [watch.update(r.epoch, r.val_penalty) for r in h]
    assert stops.index(True) == 3  # epoch 4: warm-up 2, then 2 collapsed epochs in a row
    # A model that recovers resets the streak.
    watch = CollapseWatch(warmup=0, patience=3)
    assert not any(watch.update(e, p) for e, p in [(1, 1.0), (2, 1.0), (3, 0.0), (4, 1.0), (5, 1.0)])


def test_near_collapse_counts_and_a_learning_model_does_not():
    assert collapsed_epochs(history(penalty=0.2), warmup=2) == 6
    assert collapsed_epochs(history(penalty=0.0), warmup=2) == 0


def test_vanishing_gradients_in_the_first_layer():
    first = [1e-2, 1e-3, 1e-4, 1e-5, 3e-6, 1e-6, 5e-7, 2e-7]
    h = history(first=first, last=HEALTHY_LAST)
    assert gradient_trouble(h) == "vanishing"
    assert gradient_summary(h)["grad_norm_first_min"] == 2e-7


def test_vanishing_relative_to_the_output_layer():
    # Not tiny in absolute terms, but 10^5 x smaller than the last layer's: the loss no longer reaches it.
    h = history(first=[1e-3] * 6 + [5e-5, 4e-5], last=[10.0] * 8)
    assert gradient_trouble(h) == "vanishing"


def test_one_quiet_epoch_is_not_vanishing():
    first = HEALTHY_FIRST[:-1] + [VANISHING_NORM / 10]
    assert gradient_trouble(history(first=first, last=HEALTHY_LAST)) is None


def test_exploding_gradients_large_or_non_finite():
    big = HEALTHY_FIRST[:3] + [EXPLODING_NORM * 5] + HEALTHY_FIRST[4:]
    assert gradient_trouble(history(first=big, last=HEALTHY_LAST)) == "exploding"
    nan = HEALTHY_LAST[:5] + [math.nan, math.inf, math.nan]
    h = history(first=HEALTHY_FIRST, last=nan)
    assert gradient_trouble(h) == "exploding"
    s = gradient_summary(h)
    assert s["gradient_trouble"] == "exploding" and s["grad_norm_max"] == 1.2  # non-finite values left out


def test_a_history_without_norms_says_nothing():
    h = history()
    assert gradient_trouble(h) is None
    assert gradient_summary(h) == {"gradient_trouble": None}
    assert gradient_trouble([]) is None
