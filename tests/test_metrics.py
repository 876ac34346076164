"""Balanced accuracy, the collapse penalty and the score every trial is ranked by (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score

from objectives.metrics import collapse_penalty, cross_entropy, evaluate_predictions


@st.composite
def labels_with_two_or_more_classes(draw):
    """(k, y_true): k in 2..5 classes, every class present at least once, 2..80 labels, any order."""
    k = draw(st.integers(2, 5))
    n = draw(st.integers(max(k, 2), 80))
    y = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    y[:k] = list(range(k))
    perm = draw(st.permutations(range(n)))
    return k, np.asarray(y, dtype=np.int64)[list(perm)]


@st.composite
def predictions_with_two_or_more_classes(draw, n, k):
    pred = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    i = draw(st.integers(0, n - 1))
    j = (i + draw(st.integers(1, n - 1))) % n
    a = draw(st.integers(0, k - 1))
    b = (a + draw(st.integers(1, k - 1))) % k
    pred[i], pred[j] = a, b  # at least two distinct classes predicted
    return np.asarray(pred, dtype=np.int64)


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_single_class_model_always_scores_below_any_model_predicting_two_or_more_classes(data):
    k, y = data.draw(labels_with_two_or_more_classes())
    single = np.full(len(y), data.draw(st.integers(0, k - 1)))
    several = data.draw(predictions_with_two_or_more_classes(len(y), k))
    a = evaluate_predictions(y, single, k)
    b = evaluate_predictions(y, several, k)
    assert a.collapsed and a.n_predicted_classes == 1
    assert not b.collapsed and b.n_predicted_classes >= 2
    assert a.score < b.score
    assert a.score <= -0.5 < b.score


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_penalty_is_one_when_collapsed_and_in_zero_to_half_otherwise(data):
    k, y = data.draw(labels_with_two_or_more_classes())
    single = np.full(len(y), data.draw(st.integers(0, k - 1)))
    several = data.draw(predictions_with_two_or_more_classes(len(y), k))
    assert collapse_penalty(y, single, k) == 1.0
    p = collapse_penalty(y, several, k)
    assert 0.0 <= p < 0.5


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_predictions_in_the_true_proportions_pay_no_penalty(data):
    k, y = data.draw(labels_with_two_or_more_classes())
    perm = data.draw(st.permutations(range(len(y))))
    pred = y[list(perm)]  # the same histogram as the truth, in any order (right or wrong)
    assert collapse_penalty(y, pred, k) == 0.0
    ev = evaluate_predictions(y, pred, k)
    assert ev.penalty == 0.0 and ev.score == ev.balanced_accuracy


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_near_collapse_penalty_grows_monotonically_with_the_top_class_share(data):
    k, y = data.draw(labels_with_two_or_more_classes())
    n = len(y)
    top = data.draw(st.integers(0, k - 1))
    others = [c for c in range(k) if c != top]
    penalties = []
    # m predictions go to `top` (a strict majority, so it is the top class); the rest to the others.
    for m in range(n // 2 + 1, n):
        pred = np.array([top] * m + [others[i % len(others)] for i in range(n - m)])
        penalties.append(collapse_penalty(y, pred, k))
    assert all(0.0 <= p < 0.5 for p in penalties)
    assert all(b >= a for a, b in zip(penalties, penalties[1:]))
    # Past the onset the growth is strict.
    positive = [p for p in penalties if p > 0]
    assert all(b > a for a, b in zip(positive, positive[1:]))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_balanced_accuracy_equals_scikit_learn_and_score_is_it_minus_the_penalty(data):
    k, y = data.draw(labels_with_two_or_more_classes())
    pred = np.asarray(data.draw(st.lists(st.integers(0, k - 1), min_size=len(y), max_size=len(y))))
    ev = evaluate_predictions(y, pred, k)
    assert ev.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert ev.score == pytest.approx(ev.balanced_accuracy - collapse_penalty(y, pred, k), abs=1e-12)
    assert ev.histogram == np.bincount(pred, minlength=k).tolist()
    assert ev.n_predicted_classes == len(np.unique(pred))
    assert ev.top_class_share == pytest.approx(np.bincount(pred, minlength=k).max() / len(pred))
    assert np.array(ev.confusion).sum() == len(y) and np.trace(ev.confusion) == int((y == pred).sum())


# --- exact numbers --------------------------------------------------------------------------------

Y_80_20 = np.array([0] * 80 + [1] * 20)


def test_97_3_predictions_on_80_20_labels_pay_0_35():
    # top class 0: share s = 0.97, true share p = 0.8, onset = 0.8 + 0.2 / 2 = 0.9,
    # penalty = 0.5 * (0.97 - 0.9) / (1 - 0.9) = 0.35
    pred = np.array([0] * 97 + [1] * 3)
    assert collapse_penalty(Y_80_20, pred, 2) == pytest.approx(0.35)
    ev = evaluate_predictions(Y_80_20, pred, 2)
    # recall of class 0 = 80/80, of class 1 = 3/20: balanced accuracy 0.575, score 0.225
    assert ev.balanced_accuracy == pytest.approx(0.575)
    assert ev.penalty == pytest.approx(0.35)
    assert ev.score == pytest.approx(0.225)
    assert ev.accuracy == pytest.approx(0.83)
    assert ev.top_class_share == pytest.approx(0.97)
    assert ev.histogram == [97, 3]
    assert ev.confusion == [[80, 0], [17, 3]]
    assert not ev.collapsed and ev.n_predicted_classes == 2


def test_penalty_starts_exactly_at_the_onset():
    # onset 0.9 for 80/20 labels: 90 of 100 predictions for class 0 pays nothing, 91 pays 0.05.
    assert collapse_penalty(Y_80_20, np.array([0] * 90 + [1] * 10), 2) == 0.0
    assert collapse_penalty(Y_80_20, np.array([0] * 91 + [1] * 9), 2) == pytest.approx(0.05)
    assert collapse_penalty(Y_80_20, np.array([0] * 99 + [1] * 1), 2) == pytest.approx(0.45)


def test_penalty_uses_the_true_share_of_the_class_that_dominates_the_predictions():
    # class 1 takes 80% of the predictions but is only 20% of the truth: onset 0.6, penalty 0.25
    pred = np.array([1] * 80 + [0] * 20)
    assert collapse_penalty(Y_80_20, pred, 2) == pytest.approx(0.5 * (0.8 - 0.6) / (1 - 0.6))


def test_a_collapsed_majority_model_scores_minus_half():
    ev = evaluate_predictions(Y_80_20, np.zeros(100, int), 2)
    assert ev.collapsed and ev.penalty == 1.0
    assert ev.balanced_accuracy == pytest.approx(0.5) and ev.accuracy == pytest.approx(0.8)
    assert ev.score == pytest.approx(-0.5)
    assert ev.macro_f1 == pytest.approx((2 * 0.8 / 1.8) / 2)


def test_a_bad_two_class_model_still_beats_the_collapsed_one():
    # Predicting every class wrong in two classes: balanced accuracy 0, but not collapsed.
    y = np.array([0, 0, 1, 1])
    wrong = evaluate_predictions(y, np.array([1, 1, 0, 0]), 2)
    collapsed = evaluate_predictions(y, np.array([0, 0, 0, 0]), 2)
    assert wrong.balanced_accuracy == 0.0 and wrong.penalty == 0.0
    assert wrong.score > collapsed.score


def test_confusion_and_histogram_cover_classes_never_predicted():
    ev = evaluate_predictions(np.array([0, 1, 2, 2]), np.array([0, 0, 2, 2]), 3)
    assert ev.confusion == [[1, 0, 0], [1, 0, 0], [0, 0, 2]]
    assert ev.histogram == [2, 0, 2] and ev.n_predicted_classes == 2
    assert ev.balanced_accuracy == pytest.approx((1 + 0 + 1) / 3)
    d = ev.to_dict()
    assert set(d) >= {"balanced_accuracy", "score", "penalty", "collapsed", "confusion", "histogram"}


def test_cross_entropy_is_the_mean_negative_log_likelihood_of_the_true_class():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    expected = -(np.log(0.9) + np.log(0.8) + np.log(0.5)) / 3
    assert cross_entropy(np.array([0, 1, 0]), probs) == pytest.approx(expected)
    assert cross_entropy(np.array([0, 0]), np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.0, abs=1e-6)


def test_cross_entropy_stays_finite_for_a_zero_probability():
    value = cross_entropy(np.array([1]), np.array([[1.0, 0.0]]))
    assert np.isfinite(value) and value == pytest.approx(-np.log(1e-7))


# -- collapse early-stopping ---------------------------------------------------------------------
from objectives.metrics import CollapseWatch  # noqa: E402


def _run(watch: CollapseWatch, penalties: list[float]) -> int | None:
    """The 1-based epoch at which the watch says stop (None: never)."""
    for epoch, penalty in enumerate(penalties, start=1):
        if watch.update(epoch, penalty):
            return epoch
    return None


def test_a_collapsed_history_stops_right_after_warmup_plus_patience():
    assert _run(CollapseWatch(warmup=2, patience=2), [1.0] * 10) == 4
    assert _run(CollapseWatch(warmup=0, patience=1), [1.0] * 10) == 1
    assert _run(CollapseWatch(warmup=3, patience=3), [0.2] * 10) == 6  # near-collapse counts too
    assert CollapseWatch(warmup=2, patience=2).reason().startswith("collapse:")


def test_a_healthy_or_recovering_history_is_never_stopped():
    assert _run(CollapseWatch(warmup=2, patience=2), [0.0] * 20) is None
    # collapsed during warm-up, then learning: the usual start of an imbalanced fit
    assert _run(CollapseWatch(warmup=2, patience=2), [1.0, 1.0, 0.0, 0.0, 0.0]) is None
    # streaks shorter than patience reset on every healthy epoch
    assert _run(CollapseWatch(warmup=1, patience=3), [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]) is None


def test_a_near_single_class_model_that_keeps_gaining_balanced_accuracy_is_not_stopped():
    """LSST-like: 14 classes, mostly the top class predicted, but balanced accuracy rising."""
    def stop_epoch(history):
        watch = CollapseWatch(warmup=2, patience=2)
        return next((e for e, (p, ba) in enumerate(history, start=1) if watch.update(e, p, ba)), None)

    learning = [(0.3, 0.08), (0.3, 0.11), (0.2, 0.15), (0.1, 0.20), (0.05, 0.22), (0.0, 0.25)]
    assert stop_epoch(learning) is None
    stuck = [(0.3, 0.08), (0.3, 0.11), (0.2, 0.15), (0.2, 0.15), (0.2, 0.14), (0.2, 0.15)]
    assert stop_epoch(stuck) == 5  # epochs 4 and 5 gained nothing
    collapsed = [(1.0, 1 / 14)] * 6  # one class: balanced accuracy never moves off chance
    assert stop_epoch(collapsed) == 4
    # a gain resets the streak; stalling again starts it over
    assert stop_epoch([(0.2, 0.1), (0.2, 0.1), (0.2, 0.1), (0.2, 0.2), (0.2, 0.2), (0.2, 0.19)]) == 6
    assert "without a gain in balanced accuracy" in CollapseWatch().reason()


def test_a_trial_that_has_learned_something_is_oscillating_not_collapsed():
    """Strawberry-like: 2 classes, balanced accuracy reached 0.69, then two near single-class epochs
    without a gain. With the chance level known that is not a collapse; without it, it is."""
    history = [(0.0, 0.60), (0.0, 0.65), (0.0, 0.69), (0.1, 0.62), (0.2, 0.58), (0.2, 0.60), (0.0, 0.75)]

    def stop_epoch(watch):
        return next((e for e, (p, ba) in enumerate(history, start=1) if watch.update(e, p, ba)), None)

    assert stop_epoch(CollapseWatch(warmup=2, patience=2, chance=0.5)) is None
    assert stop_epoch(CollapseWatch(warmup=2, patience=2)) == 5
    # Below the margin (0.5 + 0.1 * 0.5 = 0.55) it still counts: a two-class model stuck near chance.
    stuck = [(0.3, 0.52), (0.3, 0.54), (0.3, 0.54), (0.3, 0.53), (0.3, 0.54)]
    watch = CollapseWatch(warmup=2, patience=2, chance=0.5)
    assert next((e for e, (p, ba) in enumerate(stuck, start=1) if watch.update(e, p, ba)), None) == 4
    # 14 classes: the bar is 1/14 + 0.1 * 13/14 = 0.164.
    watch = CollapseWatch(warmup=0, patience=2, chance=1 / 14)
    assert not any(watch.update(e, 0.2, ba) for e, ba in enumerate([0.17, 0.10, 0.09, 0.09], start=1))


def test_patience_zero_turns_collapse_stopping_off():
    assert _run(CollapseWatch(warmup=0, patience=0), [1.0] * 50) is None


# --- warm-up in optimizer steps -----------------------------------------------------------------


@pytest.mark.parametrize("min_epochs, steps_per_epoch, min_steps, expected", [
    (2, 77, 100, 2),    # LSST at batch 32: 2 epochs are already 154 steps
    (2, 25, 100, 4),    # the demo set: 800 training sequences at batch 32
    (2, 5, 100, 20),    # ECG200 at batch 16: 20 epochs before anything may stop it
    (2, 2, 100, 50),
    (2, 5, 0, 2),       # warmup_steps = 0: the epoch warm-up alone
    (0, 0, 100, 100),   # no steps (guarded): counts as one step per epoch
])
def test_warmup_epochs_cover_both_the_epoch_warmup_and_the_minimum_steps(min_epochs, steps_per_epoch, min_steps, expected):
    from objectives.metrics import warmup_epochs

    assert warmup_epochs(min_epochs, steps_per_epoch, min_steps=min_steps) == expected


@pytest.mark.parametrize("epochs, fraction, expected", [
    (20, 0.5, 10),   # the quality benchmark's cap: slow starters get 10 epochs
    (15, 0.5, 8),    # the default budget (rounded up)
    (10, 0.3, 3),    # 0.3 * 10 is 3.0000000000000004 in floating point, still 3
    (20, 0.0, 2),    # 0 turns it off: the epoch warm-up alone
    (4, 1.0, 4),     # 1: never stopped early (collapse, patience, pruner)
])
def test_warmup_epochs_cover_a_share_of_the_epoch_budget(epochs, fraction, expected):
    from objectives.metrics import warmup_epochs

    assert warmup_epochs(2, 77, min_steps=100, epochs=epochs, fraction=fraction) == expected


# --- ranking: score, then validation loss -------------------------------------------------------


def test_rank_key_orders_by_score_then_by_lower_validation_loss():
    from objectives.metrics import rank_key

    assert rank_key(0.9, 0.5) > rank_key(0.8, 0.01)      # the score decides first
    assert rank_key(0.9, 0.2) > rank_key(0.9, 0.3)       # tied scores: the lower loss wins
    assert rank_key(0.9, 0.3) > rank_key(0.9, None)      # a missing loss ranks last among ties
    assert rank_key(0.9, 0.3) > rank_key(0.9, float("nan"))
    assert rank_key(0.9, None) == rank_key(0.9, float("inf"))


def test_best_trial_breaks_ties_in_value_by_validation_loss_then_by_who_finished_first():
    import optuna

    from sweep.ranking import best_trial

    study = optuna.create_study(direction="maximize")
    for value, loss in [(0.981, 0.30), (0.981, 0.12), (0.95, 0.01), (0.981, 0.12), (0.981, None)]:
        trial = study.ask()
        trial.set_user_attr("result", {"val_loss": loss})
        study.tell(trial, value)
    assert best_trial(study).number == 1  # trial 3 ties it on both and finished later
    assert best_trial(optuna.create_study()) is None
