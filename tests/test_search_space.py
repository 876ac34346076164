"""The search space: typed params from a trial, narrowing from a config table, validation."""

from __future__ import annotations

import dataclasses
import math
import re

import optuna
import pytest

from objectives.search_space import (
    CLASS_WEIGHT_STRATEGIES,
    CONDITIONAL_PARAMS,
    FloatRange,
    IntRange,
    POOLINGS,
    LstmParams,
    SearchSpace,
    LSTM_FCN_RECIPE,
    asked_params,
    baseline_params,
    conv_pool_size,
    describe,
    recipe_trials,
    short_params,
    suggest_params,
)
from sweep.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.ERROR)

FIXED = dict(units=48, layers=3, dropout=0.35, learning_rate=2.5e-3, class_weight="sqrt", batch_size=64, clipnorm=5.0,
             bidirectional=True, conv_filters=64, pooling="attention", architecture="stacked", lr_schedule="cosine")


def test_fixed_trial_gives_params_equal_to_the_fixed_values():
    params = suggest_params(optuna.trial.FixedTrial(FIXED), SearchSpace())
    assert isinstance(params, LstmParams)
    for key, value in FIXED.items():
        assert getattr(params, key) == value, key
    assert params == LstmParams(**FIXED)


def test_trial_parameter_names_are_the_params_fields_so_best_params_round_trip():
    trial = optuna.trial.FixedTrial(FIXED)
    params = suggest_params(trial, SearchSpace())
    # masking is a trial parameter only on padded data (next tests); elsewhere it stays False; a
    # stacked LSTM has no FCN branch to size (fcn_filters keeps the published 128); series of
    # unknown length are not downsampled.
    assert set(trial.params) == {f.name for f in dataclasses.fields(LstmParams)} - {"masking", "fcn_filters",
                                                                                     "downsample"}
    assert LstmParams(**trial.params) == params
    assert LstmParams(**params.to_dict()) == params
    assert params.to_dict() == {**FIXED, "masking": False, "fcn_filters": 128, "downsample": 1}


def test_masking_is_searched_only_on_padded_data_without_a_conv_front_end():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = {"plain": set(), "padded": set(), "padded_conv": set()}
    for _ in range(60):
        for padded in (False, True):
            trial = study.ask()
            p = suggest_params(trial, SearchSpace(), padded=padded)
            asked = "masking" in trial.params
            if not padded:
                assert not asked and p.masking is False
                seen["plain"].add(p.masking)
            elif p.conv_filters or p.architecture == "lstm_fcn":
                assert not asked and p.masking is False
                seen["padded_conv"].add(p.masking)
            else:
                assert asked and p.masking == trial.params["masking"]
                seen["padded"].add(p.masking)
            study.tell(trial, 0.0)
    assert seen == {"plain": {False}, "padded": {False, True}, "padded_conv": {False}}
    # [false] in a config turns it off even on padded data.
    off = SearchSpace.from_mapping({"masking": [False], "conv_filters": [0]})
    trial = optuna.create_study().ask()
    assert suggest_params(trial, off, padded=True).masking is False and "masking" not in trial.params


def test_the_baseline_trial_is_the_classic_recipe_asked_exactly_as_a_search_trial_asks():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for padded in (False, True):
        fixed = baseline_params(SearchSpace(), padded=padded)
        study.enqueue_trial(fixed)
        trial = study.ask()
        params = suggest_params(trial, SearchSpace(), padded=padded)
        # Every parameter came from the queue (none sampled), and none was queued but never asked.
        assert trial.params == fixed
        assert params == LstmParams(masking=False)
        assert (params.units, params.layers, params.dropout, params.learning_rate, params.class_weight,
                params.batch_size) == (64, 2, 0.2, 1e-3, "balanced", 32)
        study.tell(trial, 0.0)


@pytest.mark.parametrize("features", [1, 6])
def test_lstm_fcn_asks_no_conv_front_end_nor_masking_and_pooling_only_on_multivariate_data(features):
    """LSTM-FCN's convolutional branch is fixed, so ``conv_filters`` is not asked; its LSTM reads the
    dimension-shuffled series, one step on univariate data, where pooling over steps means nothing."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    seen: dict[str, set] = {"architecture": set(), "pooling_fcn": set(), "masking_stacked": set(), "fcn_filters": set()}
    for _ in range(80):
        trial = study.ask()
        p = suggest_params(trial, SearchSpace(), padded=True, features=features)
        seen["architecture"].add(p.architecture)
        assert trial.params["architecture"] == p.architecture
        if p.architecture == "lstm_fcn":
            assert "conv_filters" not in trial.params and "masking" not in trial.params
            assert p.conv_filters == 0 and p.masking is False
            assert ("pooling" in trial.params) == (features > 1)
            seen["pooling_fcn"].add(p.pooling)
            seen["fcn_filters"].add(trial.params["fcn_filters"])
        else:
            assert "conv_filters" in trial.params and "pooling" in trial.params
            assert "fcn_filters" not in trial.params and p.fcn_filters == 128  # no FCN branch to size
            if p.conv_filters == 0:
                seen["masking_stacked"].add(trial.params["masking"])
        assert LstmParams(**trial.params) == p  # best_params still rebuild the model
        study.tell(trial, 0.0)
    assert seen["architecture"] == {"stacked", "lstm_fcn"} and seen["masking_stacked"] == {False, True}
    assert seen["pooling_fcn"] == ({"last"} if features == 1 else set(POOLINGS))
    assert seen["fcn_filters"] == {32, 64, 128}


@pytest.mark.parametrize("features", [1, 6])
def test_a_baseline_in_an_lstm_fcn_only_space_queues_exactly_the_parameters_asked(features):
    space = SearchSpace.from_mapping({"architecture": ["lstm_fcn"]})
    fixed = baseline_params(space, padded=True, features=features)
    assert fixed["architecture"] == "lstm_fcn" and "conv_filters" not in fixed and "masking" not in fixed
    assert ("pooling" in fixed) == (features > 1)
    study = optuna.create_study()
    study.enqueue_trial(fixed)
    trial = study.ask()
    assert suggest_params(trial, space, padded=True, features=features) == LstmParams(**fixed)
    assert trial.params == fixed


@pytest.mark.parametrize("padded, features", [(False, 1), (True, 12)])
def test_a_new_study_starts_with_the_stacked_recipe_then_lstm_fcn_each_asked_exactly(padded, features):
    first = recipe_trials(SearchSpace(), padded=padded, features=features)
    assert len(first) == 2 and first[0] == baseline_params(SearchSpace(), padded=padded, features=features)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for fixed in first:
        study.enqueue_trial(fixed)
    stacked, fcn = (suggest_params(study.ask(), SearchSpace(), padded=padded, features=features) for _ in first)
    assert stacked == LstmParams(masking=False) and stacked.lr_schedule == "plateau"
    # LSTM-FCN as published (8 cells, dropout 0.8), moved into the default space: 16 cells, dropout 0.5.
    assert LSTM_FCN_RECIPE.units == 8 and LSTM_FCN_RECIPE.dropout == 0.8 and LSTM_FCN_RECIPE.lr_schedule == "cosine"
    # Short series are read as given (the recipe averages long ones in fours).
    assert fcn == dataclasses.replace(LSTM_FCN_RECIPE, units=16, dropout=0.5, downsample=1)
    assert [t.params for t in study.trials] == first  # nothing sampled, nothing queued but not asked
    # A space that allows the published values keeps them; one without lstm_fcn has no second trial.
    wide = SearchSpace.from_mapping({"units": {"low": 8, "high": 64}, "dropout": {"low": 0.0, "high": 0.8}})
    assert LstmParams(**recipe_trials(wide, features=features, timesteps=235)[1]) == LSTM_FCN_RECIPE
    assert len(recipe_trials(SearchSpace.from_mapping({"architecture": ["stacked"]}))) == 1


def test_the_baseline_trial_moves_into_a_narrowed_space():
    space = SearchSpace.from_mapping({"units": {"low": 8, "high": 32}, "learning_rate": {"low": 2e-3, "high": 1e-2},
                                      "class_weight": ["sqrt", "none"], "pooling": ["mean"], "masking": [True]})
    fixed = baseline_params(space, padded=True)
    assert fixed["units"] == 32 and fixed["learning_rate"] == 2e-3  # nearest bound
    assert fixed["class_weight"] == "sqrt" and fixed["pooling"] == "mean"  # first listed choice
    assert fixed["masking"] is True and fixed["layers"] == 2
    study = optuna.create_study()
    study.enqueue_trial(fixed)
    trial = study.ask()
    assert suggest_params(trial, space, padded=True) == LstmParams(**fixed)
    assert trial.params == fixed


def test_params_of_a_study_made_before_the_architecture_choices_rebuild_the_plain_stacked_lstm():
    old = dict(units=48, layers=2, dropout=0.1, learning_rate=1e-3, class_weight="none", batch_size=32, clipnorm=0.0)
    p = LstmParams(**old)
    assert (p.bidirectional, p.conv_filters, p.pooling, p.masking) == (False, 0, "last", False)
    assert p.architecture == "stacked"


@pytest.mark.parametrize("added", [("bidirectional", "conv_filters", "pooling", "masking", "architecture", "lr_schedule"),
                                   ("architecture", "lr_schedule")])
def test_a_stored_space_without_the_new_choices_resumes_with_them_fixed_at_their_old_value(added):
    stored = SearchSpace().to_dict()
    for key in added:
        del stored[key]
    space = SearchSpace.from_dict(stored)
    assert space.architecture == ("stacked",) and space.lr_schedule == ("plateau",)
    if "pooling" in added:
        assert (space.bidirectional, space.conv_filters, space.pooling, space.masking) == (
            (False,), (0,), ("last",), (False,))
    assert space.units == SearchSpace().units
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for _ in range(20):
        trial = study.ask()
        p = suggest_params(trial, space, padded=True, features=3)
        assert p.architecture == "stacked" and p.lr_schedule == "plateau"
        if "pooling" in added:
            assert (p.bidirectional, p.conv_filters, p.pooling, p.masking) == (False, 0, "last", False)
        study.tell(trial, 0.0)
    assert SearchSpace.from_dict(SearchSpace().to_dict()) == SearchSpace()


def test_a_stored_space_without_fcn_filters_keeps_the_published_width():
    stored = SearchSpace().to_dict()
    del stored["fcn_filters"]
    space = SearchSpace.from_dict(stored)
    assert space.fcn_filters == (128,) and space.architecture == ("stacked", "lstm_fcn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    widths = set()
    for _ in range(20):
        trial = study.ask()
        p = suggest_params(trial, space, features=1)
        widths.add(p.fcn_filters)
        study.tell(trial, 0.0)
    assert widths == {128}


@pytest.mark.parametrize("timesteps, pool", [(1, 1), (96, 1), (128, 1), (129, 2), (235, 2), (256, 2), (512, 4), (513, 5)])
def test_the_conv_front_end_pools_long_series_down_to_at_most_128_steps(timesteps, pool):
    assert conv_pool_size(timesteps) == pool
    assert -(-timesteps // pool) <= 128


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
        assert p.bidirectional in (False, True) and p.conv_filters in (0, 64) and p.pooling in POOLINGS
        assert p.architecture in ("stacked", "lstm_fcn") and p.lr_schedule in ("plateau", "cosine")
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
        ({"bidirectional": [0, 1]}, ["search_space.bidirectional: expected a list of true/false"]),
        ({"masking": ["yes"]}, ["search_space.masking: expected a list of true/false"]),
        ({"pooling": ["last", "max"]}, ["unknown pooling 'max'", "last, mean, attention"]),
        ({"conv_filters": [0, -8]}, ["filter counts must be integers in [0, 512]"]),
        ({"conv_filters": [True]}, ["filter counts must be integers"]),
        ({"fcn_filters": [0, 64]}, ["LSTM-FCN filter counts must be integers in [8, 512]"]),
        ({"fcn_filters": [64.0]}, ["LSTM-FCN filter counts must be integers"]),
        ({"architecture": ["stacked", "fcn"]}, ["unknown architecture 'fcn'", "stacked, lstm_fcn"]),
        ({"architecture": "lstm_fcn"}, ["search_space.architecture: expected a non-empty list"]),
        ({"lr_schedule": ["cosine", "step"]}, ["unknown schedule 'step'", "plateau, cosine"]),
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
        {"bidirectional": [False]},
        {"conv_filters": [0, 32]},
        {"pooling": ["last"]},
        {"masking": [False]},
        {"architecture": ["stacked"]},
        {"lr_schedule": ["cosine"]},
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


def test_resuming_a_study_made_before_the_architecture_choices_is_refused_with_the_new_choices_named():
    from sweep.errors import StudyError
    from sweep.study import _check_identity

    settings = {"search_space": SearchSpace().to_dict(), "train": {"epochs": 5}, "seed": 0}
    old_space = {k: v for k, v in SearchSpace().to_dict().items() if k not in ("bidirectional", "conv_filters", "pooling", "masking")}
    stored = {"data_fingerprint": "abc", "settings": {**settings, "search_space": old_space}}
    identity = {"data_fingerprint": "abc", "data_path": "d.npz", "settings": settings}
    with pytest.raises(StudyError) as info:
        _check_identity("old", stored, identity, allow_changes=False)
    message = str(info.value)
    assert "search_space.bidirectional (not in this study: made by an older lstm-sweep) -> [false, true]" in message
    assert "--allow-changes" in message and "\n" not in message
    _check_identity("old", stored, identity, allow_changes=True)  # resumes, with a warning
    # The space a worker rebuilds for that study keeps the old behaviour.
    assert SearchSpace.from_dict(old_space).pooling == ("last",)


@pytest.mark.parametrize("timesteps, padded, asked", [(0, False, False), (96, False, False), (128, False, False),
                                                      (129, False, True), (512, False, True), (512, True, False)])
def test_downsampling_is_searched_only_on_long_unpadded_series(timesteps, padded, asked):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        p = suggest_params(trial, SearchSpace(), padded=padded, timesteps=timesteps)
        assert ("downsample" in trial.params) == asked
        seen.add(p.downsample)
    assert seen == ({1, 2, 4} if asked else {1})


def test_the_lstm_fcn_recipe_reads_long_series_averaged_in_fours_unless_the_space_excludes_it():
    stacked, fcn = recipe_trials(SearchSpace(), timesteps=235)
    assert stacked["downsample"] == 1 and fcn["downsample"] == 4
    narrowed = SearchSpace.from_mapping({"downsample": [1, 2]})
    assert recipe_trials(narrowed, timesteps=235)[1]["downsample"] == 1  # not allowed: the first choice
    assert "downsample" not in recipe_trials(SearchSpace(), timesteps=235, padded=True)[1]


def test_a_stored_space_without_downsample_reads_every_series_as_given():
    stored = SearchSpace().to_dict()
    del stored["downsample"]
    assert SearchSpace.from_dict(stored).downsample == (1,)


@pytest.mark.parametrize("value, message", [([0], "downsampling factors must be integers in [1, 16]"),
                                            ([1, 32], "[1, 16]"), ([2.5], "integers"), ([True], "integers"),
                                            ([2, 2], "lists a choice twice")])
def test_a_bad_downsample_choice_is_refused_with_the_allowed_range(value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchSpace.from_mapping({"downsample": value})


def test_a_downsampled_trial_says_so_in_its_line_and_title():
    params = LstmParams(architecture="lstm_fcn", downsample=4)
    assert "down=4" in short_params(params.to_dict())
    assert describe(params).endswith("series averaged in 4s")
    assert "averaged" not in describe(LstmParams())


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("features, timesteps", [(1, 50), (1, 512), (3, 512)])
def test_only_the_conditional_parameters_are_ever_left_unasked(padded, features, timesteps):
    # sample_params skips a parameter only if it is in CONDITIONAL_PARAMS; a new condition in
    # asked_params on any other name would silently never be asked.
    every = {f.name for f in dataclasses.fields(LstmParams)}
    for chosen in ({"architecture": "stacked", "conv_filters": 0}, {"architecture": "stacked", "conv_filters": 32},
                   {"architecture": "lstm_fcn", "conv_filters": 0}):
        left = every - asked_params(chosen, SearchSpace.from_mapping({"masking": [False, True]}), padded=padded,
                                    features=features, timesteps=timesteps)
        assert left <= CONDITIONAL_PARAMS | {"conv_filters"}
