"""The search space: typed params from a trial, narrowing from a config table, validation."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest

from objectives.search_space import (
    CLASS_WEIGHT_STRATEGIES,
    FloatRange,
    IntRange,
    LstmParams,
    SearchSpace,
    suggest_params,
)
from sweep.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.ERROR)

FIXED = dict(units=48, layers=3, dropout=0.35, learning_rate=2.5e-3, class_weight="sqrt", batch_size=64, clipnorm=5.0)


def test_fixed_trial_gives_params_equal_to_the_fixed_values():
    params = suggest_params(optuna.trial.FixedTrial(FIXED), SearchSpace())
    assert isinstance(params, LstmParams)
    for key, value in FIXED.items():
        assert getattr(params, key) == value, key
    assert params == LstmParams(**FIXED)


def test_trial_parameter_names_are_the_params_fields_so_best_params_round_trip():
    trial = optuna.trial.FixedTrial(FIXED)
    params = suggest_params(trial, SearchSpace())
    assert set(trial.params) == {f.name for f in dataclasses.fields(LstmParams)}
    assert LstmParams(**trial.params) == params
    assert LstmParams(**params.to_dict()) == params
    assert params.to_dict() == FIXED


def test_study_best_params_rebuild_the_params():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    suggested = {}

    def objective(trial):
        suggested[trial.number] = suggest_params(trial, SearchSpace())
        return float(trial.number)

    study.optimize(objective, n_trials=3)
    assert LstmParams(**study.best_params) == suggested[study.best_trial.number]


NARROW = {
    "units": {"low": 8, "high": 24},
    "layers": 2,
    "dropout": {"low": 0.1, "high": 0.2},
    "learning_rate": {"low": 1e-3, "high": 4e-3},
    "class_weight": ["none", "oversample"],
    "batch_size": [8, 128],
    "clipnorm": [0, 2.5],
}


def test_suggestions_on_a_real_study_stay_inside_a_narrowed_space():
    space = SearchSpace.from_mapping(NARROW)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {k: set() for k in NARROW}
    for _ in range(50):
        trial = study.ask()
        p = suggest_params(trial, space)
        assert 8 <= p.units <= 24 and isinstance(p.units, int)
        assert p.layers == 2
        assert 0.1 <= p.dropout <= 0.2
        assert 1e-3 <= p.learning_rate <= 4e-3
        assert p.class_weight in ("none", "oversample")
        assert p.batch_size in (8, 128)
        assert p.clipnorm in (0.0, 2.5)
        for k in NARROW:
            seen[k].add(getattr(p, k))
        study.tell(trial, 0.0)
    # The sampler really explores the narrowed space (not one corner of it).
    assert seen["class_weight"] == {"none", "oversample"} and seen["batch_size"] == {8, 128}
    assert seen["clipnorm"] == {0.0, 2.5} and len(seen["units"]) > 5


def test_default_space_suggestions_stay_in_the_default_ranges_and_use_log_scale():
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    lrs = []
    for _ in range(60):
        p = suggest_params(study.ask(), space)
        assert 16 <= p.units <= 128 and 1 <= p.layers <= 3 and 0.0 <= p.dropout <= 0.5
        assert 1e-4 <= p.learning_rate <= 1e-2
        assert p.class_weight in CLASS_WEIGHT_STRATEGIES and p.batch_size in (16, 32, 64) and p.clipnorm in (0.0, 1.0, 5.0)
        lrs.append(p.learning_rate)
    # log-uniform: about half the draws below the geometric midpoint 1e-3 (uniform would give ~9%)
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.25 < below < 0.75


def test_fixed_values_in_a_log_range_are_accepted_by_optuna():
    space = SearchSpace.from_mapping({"units": 32, "learning_rate": 1e-3})
    assert space.units == IntRange(32, 32, log=True) and space.learning_rate == FloatRange(1e-3, 1e-3, log=True)
    study = optuna.create_study()
    p = suggest_params(study.ask(), space)
    assert p.units == 32 and p.learning_rate == pytest.approx(1e-3)


# --- from_mapping ---------------------------------------------------------------------------------


def test_empty_table_is_the_default_space():
    assert SearchSpace.from_mapping({}) == SearchSpace()


def test_narrowing_ranges_keeps_the_default_scale():
    space = SearchSpace.from_mapping({"units": {"low": 32, "high": 64}, "dropout": {"low": 0, "high": 0.3}})
    assert space.units == IntRange(32, 64, log=True)
    assert space.dropout == FloatRange(0.0, 0.3, log=False) and isinstance(space.dropout.low, float)
    assert space.layers == SearchSpace().layers and space.class_weight == SearchSpace().class_weight


def test_a_single_value_fixes_a_range():
    space = SearchSpace.from_mapping({"layers": 1, "dropout": 0.25})
    assert space.layers == IntRange(1, 1) and space.dropout == FloatRange(0.25, 0.25)


def test_choice_lists_replace_the_defaults():
    space = SearchSpace.from_mapping({"class_weight": ["balanced"], "batch_size": [128, 256], "clipnorm": [0, 1]})
    assert space.class_weight == ("balanced",)
    assert space.batch_size == (128, 256)
    assert space.clipnorm == (0.0, 1.0) and all(isinstance(v, float) for v in space.clipnorm)


def test_ranges_at_the_hard_limits_are_allowed():
    space = SearchSpace.from_mapping({"units": {"low": 1, "high": 1024}, "layers": {"low": 1, "high": 3},
                                      "dropout": {"low": 0.0, "high": 0.9}, "learning_rate": {"low": 1e-6, "high": 1.0}})
    assert space.units == IntRange(1, 1024, log=True) and space.learning_rate == FloatRange(1e-6, 1.0, log=True)


@pytest.mark.parametrize(
    "table, phrases",
    [
        ({"unit": 3}, ["search_space.unit: unknown key", "known keys are", "units"]),
        ({"units": {"low": 64, "high": 16}}, ["search_space.units: low=64 > high=16; swap them"]),
        ({"dropout": {"low": 0.4, "high": 0.1}}, ["search_space.dropout: low=0.4 > high=0.1; swap them"]),
        ({"learning_rate": {"low": 1e-2, "high": 1e-4}}, ["swap them"]),
        ({"units": {"low": 0, "high": 16}}, ["search_space.units", "outside the allowed [1, 1024]"]),
        ({"units": 2048}, ["outside the allowed [1, 1024]"]),
        ({"layers": {"low": 1, "high": 4}}, ["search_space.layers", "outside the allowed [1, 3]"]),
        ({"dropout": {"low": 0.0, "high": 0.95}}, ["outside the allowed [0.0, 0.9]"]),
        ({"learning_rate": {"low": 0.0, "high": 0.1}}, ["outside the allowed"]),
        ({"units": 3.5}, ["search_space.units: 3.5 is not an integer"]),
        ({"units": {"low": 8, "high": "64"}}, ["'64' is not an integer"]),
        ({"layers": True}, ["True is not an integer"]),
        ({"learning_rate": "fast"}, ["'fast' is not a number"]),
        ({"dropout": {"low": 0.1}}, ["expected {low = .., high = ..}"]),
        ({"dropout": {"low": 0.1, "high": 0.2, "step": 0.05}}, ["expected {low = .., high = ..}"]),
        ({"class_weight": []}, ["search_space.class_weight: expected a non-empty list"]),
        ({"batch_size": 32}, ["expected a non-empty list of choices, got 32"]),
        ({"class_weight": ["balanced", "balanced"]}, ["lists a choice twice; remove the duplicate"]),
        ({"batch_size": [32, 32]}, ["twice"]),
        ({"class_weight": ["balanced", "focal"]}, ["unknown strategy 'focal'", "none, balanced, sqrt, oversample"]),
        ({"batch_size": [0, 32]}, ["batch sizes must be positive integers"]),
        ({"batch_size": [16.5]}, ["batch sizes must be positive integers"]),
        ({"batch_size": [True]}, ["batch sizes must be positive integers"]),
        ({"clipnorm": [-1.0]}, ["clip norms must be numbers >= 0"]),
        ({"clipnorm": ["1"]}, ["clip norms must be numbers >= 0"]),
    ],
)
def test_invalid_entries_raise_a_config_error_naming_the_key(table, phrases):
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_mapping(table)
    for phrase in phrases:
        assert phrase in str(info.value)


def test_error_messages_carry_the_file_name_given_as_where():
    with pytest.raises(ConfigError, match=r"^my\.toml: search_space\.units: low=9 > high=8; swap them$"):
        SearchSpace.from_mapping({"units": {"low": 9, "high": 8}}, where="my.toml: search_space")


# --- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_changes_when_the_space_changes():
    base = SearchSpace().fingerprint()
    assert base == SearchSpace().fingerprint() == SearchSpace.from_mapping({}).fingerprint()
    assert len(base) == 16
    changed = [
        {"units": {"low": 16, "high": 64}},
        {"layers": 1},
        {"dropout": {"low": 0.0, "high": 0.4}},
        {"learning_rate": {"low": 1e-4, "high": 1e-3}},
        {"class_weight": ["balanced"]},
        {"class_weight": ["balanced", "none", "sqrt", "oversample"]},  # same set, other order
        {"batch_size": [16, 32]},
        {"clipnorm": [0.0]},
    ]
    prints = {SearchSpace.from_mapping(t).fingerprint() for t in changed}
    assert base not in prints and len(prints) == len(changed)


def test_restating_the_defaults_keeps_the_fingerprint():
    same = SearchSpace.from_mapping({"units": {"low": 16, "high": 128}, "dropout": {"low": 0, "high": 0.5},
                                     "clipnorm": [0, 1, 5]})
    assert same.fingerprint() == SearchSpace().fingerprint()


def test_to_dict_is_plain_json_data():
    d = SearchSpace().to_dict()
    assert d["units"] == {"low": 16, "high": 128, "log": True}
    assert d["class_weight"] == list(CLASS_WEIGHT_STRATEGIES)
    assert d["clipnorm"] == [0.0, 1.0, 5.0] and not any(isinstance(v, tuple) for v in d.values())
    assert math.isclose(d["learning_rate"]["low"], 1e-4)
