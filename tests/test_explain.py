"""The study summary and `sweep diagnose --study`'s rules, on synthetic trial rows (no TensorFlow)."""

from __future__ import annotations

import pytest

import dataclasses
import json

from objectives.records import TrialResult
from objectives.search_space import lr_decade, units_bucket
from sweep.explain import explain
from sweep.noise import noise_band, null_balanced_accuracies
from sweep.records import BestTrial, TrialRecord
from sweep.summary import collapse_summary, outcome

VAL = [[150, 10], [10, 30]]  # 160 vs 40 validation sequences: imbalanced 4 : 1


def row(number: int, *, collapse: bool = False, state: str = "COMPLETE", reason: str | None = None,
        trouble: str | None = None, units: int = 64, layers: int = 2, lr: float = 1e-3,
        class_weight: str = "balanced", epochs_run: int | None = None) -> TrialRecord:
    """A trial; ``collapse``: it predicted nearly one class (a collapse penalty), though its kept model
    still predicts two classes (``collapsed`` stays False, so the two meanings cannot be mixed up)."""
    return TrialRecord(
        number=number, state=state, reason=reason, value=0.5,
        result=TrialResult(penalty=0.2 if collapse else 0.0, collapsed=False, gradient_trouble=trouble,
                           epochs_run=epochs_run),
        params={"units": units, "layers": layers, "learning_rate": lr, "class_weight": class_weight,
                "dropout": 0.1, "batch_size": 32, "clipnorm": 0.0},
    )


def best(val_ba: float, confusion=VAL, test_ba: float | None = None, test_confusion=None) -> BestTrial:
    result = TrialResult(val_balanced_accuracy=val_ba, val_confusion=confusion, test_balanced_accuracy=test_ba,
                         test_confusion=test_confusion)
    return BestTrial(study="s", record=TrialRecord(number=0, state="COMPLETE", value=val_ba, params={}, result=result))


GOOD = best(0.85)


def test_buckets_and_decades():
    assert [units_bucket(u) for u in (1, 2, 3, 4, 5, 16, 17, 64, 65, 128)] == [
        "<=2", "<=2", "3-4", "3-4", "5-8", "9-16", "17-32", "33-64", "65-128", "65-128"]
    assert [lr_decade(v) for v in (1e-4, 3e-4, 1e-3, 9.9e-3, 1e-2, 1.0)] == ["1e-4", "1e-4", "1e-3", "1e-3", "1e-2", "1e0"]


def test_outcomes_by_reason():
    rows = [row(0), row(1, state="PRUNED", reason="collapse: ...", collapse=True),
            row(2, state="PRUNED", reason="median: below ..."), row(3, state="FAIL", reason="nan_loss: ..."),
            row(4, state="FAIL", reason="no heartbeat: its worker died"), row(5, state="FAIL", reason="interrupted"),
            row(6, state="FAIL", reason="ValueError: x"), row(7, state="RUNNING")]
    assert [outcome(r) for r in rows] == ["complete", "pruned_collapse", "pruned_median", "failed_nan_loss",
                                         "failed_no_heartbeat", "failed_interrupted", "failed_error", None]
    surplus = dataclasses.replace(row(8, state="FAIL", reason="surplus"), surplus=True)
    assert outcome(surplus) is None
    s = collapse_summary(rows + [surplus])
    assert s.trials_finished == 3 and s.trials_collapsed == 1
    assert outcome(row(9, state="PRUNED", reason="hyperband: not in the best third at its rung at epoch 5")) == \
        "pruned_hyperband"
    assert s.outcomes == {"complete": 1, "pruned_collapse": 1, "pruned_median": 1, "pruned_hyperband": 0,
                          "pruned_other": 0,
                             "failed_nan_loss": 1, "failed_no_heartbeat": 1, "failed_interrupted": 1, "failed_error": 1}


def test_collapse_rate_by_parameter_is_ordered_and_counted():
    rows = [row(0, lr=1e-2, units=16, collapse=True), row(1, lr=2e-4, units=128), row(2, lr=3e-3, units=20, collapse=True)]
    by = collapse_summary(rows).by_parameter
    assert list(by["learning_rate"]) == ["1e-4", "1e-3", "1e-2"]
    assert by["learning_rate"]["1e-2"] == {"trials": 1, "collapsed": 1, "rate": 1.0}
    assert list(by["units"]) == ["9-16", "17-32", "65-128"]
    assert by["class_weight"] == {"balanced": {"trials": 3, "collapsed": 2, "rate": 2 / 3}}
    # Trials without the architecture choices (older studies) count as the plain stacked LSTM.
    assert by["architecture"] == {"LSTM": {"trials": 3, "collapsed": 2, "rate": 2 / 3}}
    assert by["pooling"] == {"last": {"trials": 3, "collapsed": 2, "rate": 2 / 3}}


def test_collapse_rate_by_architecture_and_pooling():
    rows = [row(0, collapse=True), row(1), row(2), row(3, collapse=True), row(4), row(5, collapse=True)]
    rows[1].params.update({"conv_filters": 64, "bidirectional": True, "pooling": "attention"})
    rows[2].params.update({"conv_filters": 0, "bidirectional": True, "pooling": "mean", "masking": True})
    rows[3].params.update({"conv_filters": 64, "bidirectional": False, "pooling": "mean"})
    rows[4].params.update({"architecture": "lstm_fcn", "conv_filters": 0, "bidirectional": False})
    rows[5].params.update({"architecture": "lstm_fcn", "conv_filters": 0, "bidirectional": True})
    by = collapse_summary(rows).by_parameter
    assert by["architecture"] == {
        "BiLSTM masked": {"trials": 1, "collapsed": 0, "rate": 0.0}, "LSTM": {"trials": 1, "collapsed": 1, "rate": 1.0},
        "conv+BiLSTM": {"trials": 1, "collapsed": 0, "rate": 0.0}, "conv+LSTM": {"trials": 1, "collapsed": 1, "rate": 1.0},
        "LSTM-FCN": {"trials": 1, "collapsed": 0, "rate": 0.0}, "BiLSTM-FCN": {"trials": 1, "collapsed": 1, "rate": 1.0}}
    assert list(by["pooling"]) == ["attention", "last", "mean"] and by["pooling"]["mean"]["collapsed"] == 1


def test_collapse_at_small_units_and_one_layer_names_capacity():
    rows = [row(i, units=16, layers=1, collapse=True) for i in range(4)]
    rows += [row(10 + i, units=128, layers=2 + i % 2) for i in range(4)]
    d = explain("s", rows, GOOD)
    assert d.causes == ["capacity"]
    [f] = d.findings
    assert "4 of 4 (100%) trials with 16-45 units collapsed" in f.evidence[0]
    assert "one-layer" in f.evidence[1]
    assert "layers' low bound to 2" in f.next_step


def test_tiny_units_everywhere_and_no_class_weights_name_capacity_and_imbalance():
    rows = [row(i, units=2, layers=1, class_weight="none", collapse=True, state="PRUNED", reason="collapse: x")
            for i in range(3)]
    d = explain("s", rows, None, val_confusion=VAL)
    assert set(d.causes) == {"capacity", "imbalance"}
    assert any("imbalanced 4.0 : 1" in e for f in d.findings for e in f.evidence)
    assert "no completed trial" in d.checked["no_signal"]
    # The same on balanced classes is not called imbalance.
    d = explain("s", rows, None, val_confusion=[[50, 0], [50, 0]])
    assert d.causes == ["capacity"]


def test_collapse_without_class_weights_names_imbalance():
    rows = [row(i, class_weight="none", collapse=i < 3) for i in range(4)]
    rows += [row(10 + i, class_weight=w) for i, w in enumerate(["balanced", "sqrt", "oversample", "balanced"])]
    d = explain("s", rows, GOOD)
    assert d.causes == ["imbalance"]
    assert "drop \"none\"" in d.findings[0].next_step


def test_collapse_at_the_highest_learning_rates_names_the_learning_rate():
    rows = [row(i, lr=2e-2, collapse=True) for i in range(3)] + [row(10 + i, lr=1e-3 * (1 + i)) for i in range(5)]
    d = explain("s", rows, GOOD)
    assert d.causes == ["learning_rate"]
    assert "highest learning-rate decade (1e-2 to 1e-1)" in d.findings[0].evidence[0]
    assert "{low = 1e-3, high = 1e-2}" in d.findings[0].next_step


def test_spread_out_collapse_names_nothing():
    rows = [row(i, units=16 * (1 + i % 4), layers=1 + i % 3, lr=10 ** (-4 + i % 3), collapse=i in (0, 5, 10),
                class_weight=["none", "balanced", "sqrt", "oversample"][i % 4 - 1]) for i in range(12)]
    d = explain("s", rows, GOOD)
    assert d.causes == [] and "healthy" in d.headline


def test_gradients_exploding_and_vanishing():
    rows = [row(0), row(1, trouble="vanishing", layers=3), row(2, state="FAIL", reason="nan_loss: x", lr=9e-3),
            row(3, trouble="exploding", lr=8e-3)]
    d = explain("s", rows, GOOD)
    assert d.causes == ["gradients"]
    evidence = " ".join(d.findings[0].evidence)
    assert "1 trials failed with a non-finite loss and 1 more had exploding" in evidence
    assert "8.0e-03-9.0e-03" in evidence and "1 trials had vanishing" in evidence
    assert "clipnorm" in d.findings[0].next_step


def test_null_balanced_accuracy_centres_on_chance_and_the_band_grows_with_trials():
    null = null_balanced_accuracies(VAL, draws=4000)
    assert abs(null.mean() - 0.5) < 0.01
    one, twenty, two_hundred = (noise_band(VAL, n) for n in (1, 20, 200))
    assert 0.5 < one < twenty < two_hundred < 0.75
    # A collapsed best model is compared with predictions in the true proportions, not with itself.
    assert noise_band([[160, 0], [40, 0]], 20) == pytest.approx(noise_band([[128, 32], [32, 8]], 20), abs=0.02)
    # Multiclass: chance is 1/k.
    three = [[30, 0, 0], [0, 20, 0], [0, 0, 10]]
    assert abs(null_balanced_accuracies(three, draws=4000).mean() - 1 / 3) < 0.01


def test_a_best_score_inside_the_noise_band_is_no_signal():
    rows = [row(i) for i in range(20)]
    band = noise_band(VAL, 20)
    d = explain("s", rows, best(band - 0.01, test_ba=0.49, test_confusion=VAL),
                data_check={"baseline_balanced_accuracy": 0.51, "shuffled_mean": 0.5, "p_value": 0.6})
    assert d.causes == ["no_signal"] and d.headline.startswith("No signal")
    evidence = " ".join(d.findings[0].evidence)
    assert f"up to {band:.3f}" in evidence and "0.490" in evidence and "p = 0.60" in evidence
    assert d.best is not None and d.best.n_trials == 20 and d.best.test_noise_band > 0.5
    md = d.to_markdown()
    assert "# Diagnosis of study `s`" in md and "No signal: the best score is what luck gives" in md
    assert "| no_signal | applies |" in md


def test_a_score_above_the_band_is_signal_and_a_test_score_at_chance_is_flagged():
    rows = [row(i) for i in range(20)]
    d = explain("s", rows, best(0.9))
    assert d.causes == [] and "above the noise band" in d.checked["no_signal"]
    d = explain("s", rows, best(0.9, test_ba=0.5, test_confusion=VAL))
    assert d.causes == ["validation_luck"]


def test_no_finished_trials():
    d = explain("s", [row(0, state="FAIL", reason="ValueError: x")], None)
    assert d.causes == [] and d.headline.startswith("No trial finished")
    assert d.summary.collapse_rate is None
    assert "No trial finished yet" in d.to_markdown() and "None of the causes checked applies." in d.to_markdown()
    record = json.loads(json.dumps(d.to_dict()))  # the report logged to MLflow as diagnosis.json
    assert set(record["checked"]) == {"capacity", "imbalance", "learning_rate", "gradients", "no_signal"}
    assert record["checked"]["no_signal"] == "no completed trial to judge" and record["causes"] == []


def test_a_small_validation_split_is_not_called_no_signal_when_the_test_set_or_data_show_signal():
    """ECG200-like: 20 validation sequences, so even 0.89 sits in the band of 60 looks; the test set
    (one look, 100 sequences) and the data check say there is signal."""
    small = [[12, 2], [1, 5]]
    rows = [row(i, epochs_run=8) for i in range(8)]
    band = noise_band(small, 64)
    assert band > 0.8
    test = [[50, 14], [10, 26]]
    d = explain("s", rows, best(band - 0.01, confusion=small, test_ba=0.7, test_confusion=test))
    assert d.causes == ["small_validation"] and "no_signal" not in d.causes
    assert "(20 sequences)" in d.findings[0].title and "--val-fraction" in d.findings[0].next_step
    assert d.headline.startswith("The validation split (20 sequences) is too small")
    check = {"baseline_balanced_accuracy": 0.78, "shuffled_mean": 0.5, "p_value": 0.01, "has_signal": True}
    d = explain("s", rows, best(band - 0.01, confusion=small), data_check=check)
    assert d.causes == ["small_validation"] and "p = 0.01" in d.findings[0].evidence[-1]
    # Neither the test set nor the data sees signal: no signal.
    d = explain("s", rows, best(band - 0.01, confusion=small, test_ba=0.5, test_confusion=test),
                data_check=check | {"p_value": 0.4, "has_signal": False})
    assert d.causes == ["no_signal"]


def test_trial_lines_and_run_descriptions_name_lstm_fcn_and_leave_the_stacked_lstm_as_it_was():
    from objectives.search_space import LstmParams
    from objectives.search_space import describe as _describe
    from objectives.search_space import short_params as _short_params

    fcn = LstmParams(units=8, layers=1, dropout=0.8, architecture="lstm_fcn")
    assert _short_params(fcn.to_dict()).endswith("lstm-fcn") and "conv=" not in _short_params(fcn.to_dict())
    assert _describe(fcn).startswith("LSTM-FCN") and "1x LSTM(8)" in _describe(fcn)
    stacked = LstmParams(units=8, layers=1)
    assert "lstm-fcn" not in _short_params(stacked.to_dict()) and _describe(stacked).startswith("1x LSTM(8)")
    assert "lstm-fcn" not in _short_params({"units": 8})  # a trial of a study made before the choice
    cosine = LstmParams(lr_schedule="cosine")
    assert _short_params(cosine.to_dict()).endswith(" cosine") and _describe(cosine).endswith("cosine schedule")
    assert "cosine" not in _short_params(stacked.to_dict()) and _describe(stacked).endswith("plateau schedule")
