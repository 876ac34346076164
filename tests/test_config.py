"""Settings resolved in one place: flag > config file > default; bad settings are ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from objectives.search_space import IntRange, SearchSpace
from sweep.config import DEFAULT_STORAGE, SweepConfig, TrainSettings, read_config_file, resolve_config
from sweep.errors import ConfigError, SweepError


def _toml(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


FULL_FILE = """
[run]
study = "from-file"
storage = "sqlite:///file.db"
n_trials = 7
seed = 3
tracking_uri = "sqlite:///file-mlflow.db"
log_models = "all"
pruner = "none"
threads = 2

[train]
epochs = 4
val_fraction = 0.3
patience = 2

[search_space]
layers = 1
units = { low = 16, high = 32 }
class_weight = ["balanced", "sqrt"]
"""


def test_defaults():
    cfg = resolve_config()
    assert cfg == SweepConfig()
    assert cfg.study is None and cfg.storage == DEFAULT_STORAGE == "sqlite:///sweep.db"
    assert cfg.n_trials == 20 and cfg.seed == 0 and cfg.tracking_uri is None
    assert cfg.log_models == "best" and cfg.pruner == "median" and cfg.threads is None
    assert cfg.retrain_top == 3 and cfg.retrain_seeds == 3 and cfg.ship == "trial"
    assert cfg.train == TrainSettings(epochs=15, val_fraction=0.2, patience=5)
    assert cfg.space == SearchSpace()


def test_a_config_file_overrides_every_default(tmp_path):
    cfg = resolve_config(config_file=_toml(tmp_path, FULL_FILE))
    assert cfg.study == "from-file" and cfg.storage == "sqlite:///file.db" and cfg.n_trials == 7
    assert cfg.seed == 3 and cfg.tracking_uri == "sqlite:///file-mlflow.db" and cfg.log_models == "all"
    assert cfg.pruner == "none" and cfg.threads == 2
    assert cfg.train == TrainSettings(epochs=4, val_fraction=0.3, patience=2)
    assert cfg.space.layers == IntRange(1, 1) and cfg.space.units == IntRange(16, 32, log=True)
    assert cfg.space.class_weight == ("balanced", "sqrt")
    assert cfg.space.batch_size == SearchSpace().batch_size  # not in the file: default


def test_a_partial_file_keeps_the_other_defaults(tmp_path):
    cfg = resolve_config(config_file=_toml(tmp_path, "[train]\nepochs = 3\n"))
    assert cfg.train.epochs == 3
    assert cfg == SweepConfig(train=TrainSettings(epochs=3))


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    path = _toml(tmp_path, FULL_FILE)
    cfg = resolve_config(config_file=path, flags={
        "n_trials": 11, "epochs": 9, "storage": "sqlite:///flag.db", "seed": None, "patience": None,
        "log_models": "none", "val_fraction": 0.1,
    })
    assert cfg.n_trials == 11 and cfg.train.epochs == 9 and cfg.storage == "sqlite:///flag.db"
    assert cfg.log_models == "none" and cfg.train.val_fraction == 0.1
    # None means "flag not given": the file's values stand
    assert cfg.seed == 3 and cfg.train.patience == 2
    # and what neither sets is the default
    assert resolve_config(flags={"epochs": 9}).n_trials == 20


def test_flags_alone_override_the_defaults():
    cfg = resolve_config(flags={"study": "s", "threads": 4, "pruner": "none", "tracking_uri": "http://x:5000"})
    assert cfg.study == "s" and cfg.threads == 4 and cfg.pruner == "none" and cfg.tracking_uri == "http://x:5000"
    assert cfg.train == TrainSettings()


def test_resolved_config_is_frozen():
    cfg = resolve_config()
    with pytest.raises(AttributeError):
        cfg.n_trials = 3  # type: ignore[misc]


def test_read_config_file_fills_missing_tables(tmp_path):
    assert read_config_file(_toml(tmp_path, "[train]\nepochs = 2\n")) == {
        "run": {}, "train": {"epochs": 2}, "search_space": {}}


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, phrases",
    [
        ("[runs]\nn_trials = 3\n", ["unknown table [runs]", "use [run], [train] and [search_space]"]),
        ("[run]\nntrials = 3\n", ["run.ntrials: unknown key", "n_trials"]),
        ("[train]\nepoch = 3\n", ["train.epoch: unknown key",
                                   "known keys are collapse_patience, collapse_warmup, epochs, patience, val_fraction, "
                                   "warmup_fraction, warmup_steps"]),
        ("[search_space]\nwidth = 3\n", ["search_space.width: unknown key"]),
        ("[search_space]\nunits = { low = 64, high = 8 }\n", ["search_space.units: low=64 > high=8; swap them"]),
        ("[search_space]\nclass_weight = ['focal']\n", ["unknown strategy 'focal'"]),
        ("run = 3\n", ["top-level keys must be tables"]),
        ("[run]\nn_trials = 0\n", ["n_trials (--n-trials) must be an integer >= 1, got 0"]),
        ("[run]\nn_trials = 2.5\n", ["n_trials (--n-trials) must be an integer"]),
        ("[run]\nn_trials = true\n", ["n_trials (--n-trials) must be an integer"]),
        ("[run]\nseed = -1\n", ["seed (--seed) must be an integer in [0, 2147483647]"]),
        ("[run]\nseed = 4294967296\n", ["seed (--seed) must be an integer in [0, 2147483647], got 4294967296"]),
        ("[run]\ntracking_uri = 5\n", ["run.tracking_uri (--tracking-uri) must be an MLflow tracking URI string", "got 5"]),
        ("[run]\nthreads = 0\n", ["threads (--threads)"]),
        ("[train]\nepochs = 0\n", ["train.epochs (--epochs)"]),
        ("[train]\npatience = 0\n", ["train.patience (--patience)"]),
        ("[train]\nval_fraction = 0.9\n", ["val_fraction (--val-fraction) must be a number in [0.05, 0.5], got 0.9"]),
        ("[train]\nval_fraction = 0.01\n", ["val_fraction"]),
        ("[train]\nval_fraction = '0.2'\n", ["val_fraction"]),
        ("[run]\nlog_models = 'some'\n", ["log_models (--log-models) must be one of best, all, none, got 'some'"]),
        ("[run]\nship = 'best'\n", ["ship (--ship) must be one of auto, ensemble, refit, trial, got 'best'"]),
        ("[run]\npruner = 'asha'\n", ["pruner (--pruner) must be one of median, hyperband, none"]),
        ("[run]\nbudget = '10x'\n", ["run.budget: '10x' is not a duration", "90s, 10m, 2h"]),
        ("[run]\nbudget = 5\n", ["run.budget", "between 10 s and 7 days"]),
        ("[run]\nstorage = 5\n", ["run.storage must be a database URL string"]),
        ("[run]\nstudy = '  '\n", ["study (--study) must be a non-empty name"]),
    ],
)
def test_bad_config_file_raises_a_config_error_naming_the_key(tmp_path, text, phrases):
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        resolve_config(config_file=path)
    msg = str(info.value)
    for phrase in phrases:
        assert phrase in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["[run\n", "[run]\nn_trials = \n", "[run]\nn_trials = 3\nn_trials = 4\n"])
def test_invalid_toml_names_the_file(tmp_path, text):
    path = _toml(tmp_path, text, name="broken.toml")
    with pytest.raises(ConfigError) as info:
        resolve_config(config_file=path)
    assert str(path) in str(info.value) and "not valid TOML" in str(info.value)


def test_unknown_keys_name_the_file(tmp_path):
    path = _toml(tmp_path, "[run]\nnope = 1\n", name="mine.toml")
    with pytest.raises(ConfigError, match=r"mine\.toml: run\.nope: unknown key"):
        resolve_config(config_file=path)
    path = _toml(tmp_path, "[search_space]\nnope = 1\n", name="mine2.toml")
    with pytest.raises(ConfigError, match=r"mine2\.toml: search_space\.nope: unknown key"):
        resolve_config(config_file=path)


def test_a_binary_config_file_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe\x00\x81" * 8)
    with pytest.raises(ConfigError, match="not a text file|not valid TOML"):
        resolve_config(config_file=path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve_config(config_file=tmp_path / "nope.toml")
    assert "nope.toml: config file not found" in str(info.value) and "--config" in str(info.value)
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(config_file=tmp_path)  # a directory


@pytest.mark.parametrize(
    "flags, phrase",
    [
        ({"n_trials": 0}, "n_trials (--n-trials) must be an integer >= 1, got 0"),
        ({"n_trials": -3}, "n_trials (--n-trials) must be an integer >= 1, got -3"),
        ({"epochs": 0}, "--epochs"),
        ({"patience": -1}, "--patience"),
        ({"threads": 0}, "--threads"),
        ({"workers": 0}, "--workers"),
        ({"workers": 65}, "--workers"),
        ({"collapse_patience": -1}, "--collapse-patience"),
        ({"collapse_warmup": 1.5}, "--collapse-warmup"),
        ({"warmup_steps": -1}, "--warmup-steps"),
        ({"warmup_fraction": 1.5}, "train.warmup_fraction (--warmup-fraction) must be a number in [0, 1], got 1.5"),
        ({"warmup_fraction": -0.1}, "--warmup-fraction"),
        ({"warmup_fraction": True}, "--warmup-fraction"),
        ({"baseline": "yes"}, "run.baseline must be true or false, got 'yes'"),
        ({"seed": -1}, "--seed"),
        ({"val_fraction": 0.0}, "--val-fraction"),
        ({"val_fraction": 0.51}, "--val-fraction"),
        ({"val_fraction": True}, "--val-fraction"),
        ({"log_models": "some"}, "--log-models"),
        ({"log_models": "BEST"}, "--log-models"),
        ({"pruner": "asha"}, "--pruner"),
        ({"study": ""}, "--study"),
        ({"storage": ""}, "run.storage must be a database URL string"),
        ({"colour": "red"}, "unknown setting 'colour'"),
        ({"retrain_top": -1}, "retrain_top (--retrain-top) must be an integer in [0, 20], got -1"),
        ({"retrain_seeds": 0}, "retrain_seeds (--retrain-seeds) must be an integer in [1, 20], got 0"),
        ({"adjust_decision": "yes"}, "run.adjust_decision must be true or false"),
        ({"ship": "Ensemble"}, "ship (--ship) must be one of auto, ensemble, refit, trial, got 'Ensemble'"),
        ({"ship": "ensemble", "log_models": "none"}, "--log-models none logs no model; drop one of them"),
        ({"ship": "refit", "log_models": "none"}, "--ship refit logs the champion's refit model, and --log-models none"),
        ({"ship": "refit", "retrain_top": 0}, "--retrain-top 0 turns the re-training off; drop one of them"),
        ({"ship": "auto", "log_models": "none"}, "--ship auto logs the champion's refit model, and --log-models none"),
        ({"ship": "auto", "retrain_top": 0}, "--ship auto trains the configuration the re-training chooses"),
    ],
)
def test_bad_flags_raise_a_config_error_naming_the_flag(flags, phrase):
    with pytest.raises(ConfigError) as info:
        resolve_config(flags=flags)
    assert phrase in str(info.value)


def test_a_bad_flag_is_reported_even_if_the_file_is_fine(tmp_path):
    with pytest.raises(ConfigError, match="n_trials"):
        resolve_config(config_file=_toml(tmp_path, "[run]\nn_trials = 5\n"), flags={"n_trials": 0})


def test_a_good_flag_repairs_a_bad_file_value(tmp_path):
    cfg = resolve_config(config_file=_toml(tmp_path, "[run]\nn_trials = 0\n"), flags={"n_trials": 5})
    assert cfg.n_trials == 5


def test_config_errors_are_sweep_errors():
    assert issubclass(ConfigError, SweepError)


@pytest.mark.parametrize("val_fraction", [0.05, 0.5, 0.2])
def test_val_fraction_bounds_are_inclusive(val_fraction):
    assert resolve_config(flags={"val_fraction": val_fraction}).train.val_fraction == val_fraction


# --- identity -------------------------------------------------------------------------------------


def test_identity_fingerprint_changes_with_what_makes_trials_comparable(tmp_path):
    base = resolve_config().identity_fingerprint()
    assert base == resolve_config().identity_fingerprint() and len(base) == 16
    changed = [
        resolve_config(flags={"epochs": 3}),
        resolve_config(flags={"seed": 1}),
        resolve_config(flags={"val_fraction": 0.3}),
        resolve_config(flags={"patience": 2}),
        resolve_config(config_file=_toml(tmp_path, "[search_space]\nlayers = 1\n")),
        resolve_config(config_file=_toml(tmp_path, "[search_space]\nbatch_size = [16]\n", name="b.toml")),
    ]
    prints = [c.identity_fingerprint() for c in changed]
    assert base not in prints and len(set(prints)) == len(prints)


def test_identity_fingerprint_ignores_how_many_trials_and_where_they_are_stored(tmp_path):
    base = resolve_config().identity_fingerprint()
    for flags in ({"n_trials": 99}, {"storage": "sqlite:///elsewhere.db"}, {"study": "other"},
                  {"tracking_uri": "http://h:5000"}, {"log_models": "all"}, {"threads": 1},
                  {"n_trials": 1, "storage": "postgresql+psycopg://u:p@h/db"}):
        assert resolve_config(flags=flags).identity_fingerprint() == base, flags
    from_file = resolve_config(config_file=_toml(tmp_path, "[run]\nn_trials = 3\nstorage = 'sqlite:///x.db'\n"))
    assert from_file.identity_fingerprint() == base


def test_identity_holds_the_space_the_training_settings_and_the_seed():
    cfg = resolve_config(flags={"epochs": 2, "seed": 5})
    ident = cfg.identity()
    assert ident["seed"] == 5 and ident["train"] == {
        "epochs": 2, "val_fraction": 0.2, "patience": 5, "collapse_warmup": 2, "collapse_patience": 2,
        "warmup_steps": 100, "warmup_fraction": 0.5}
    assert ident["search_space"] == SearchSpace().to_dict()


def test_a_budget_sets_its_own_defaults_and_flags_still_win(tmp_path):
    cfg = resolve_config(flags={"budget": "10m"})
    assert cfg.budget == 600
    assert (cfg.train.epochs, cfg.train.patience, cfg.train.warmup_fraction, cfg.pruner) == (100, 10, 0.0, "hyperband")
    assert cfg.n_trials == 10_000  # the time ends the search
    assert cfg.ship == "auto"  # the refit where its length wins on the folds
    assert resolve_config(flags={"budget": "10m", "ship": "trial"}).ship == "trial"
    # without what auto needs (the re-training, a logged model) the trial's own model ships, no error
    assert resolve_config(flags={"budget": "10m", "retrain_top": 0}).ship == "trial"
    assert resolve_config(flags={"budget": "10m", "log_models": "none"}).ship == "trial"
    cfg = resolve_config(config_file=_toml(tmp_path, "[run]\nbudget = '90s'\nn_trials = 7\n[train]\nepochs = 40\n"),
                         flags={"pruner": "median"})
    assert (cfg.budget, cfg.n_trials, cfg.train.epochs, cfg.pruner) == (90, 7, 40, "median")
    assert resolve_config(config_file=_toml(tmp_path, "[run]\nbudget = 120\n")).budget == 120
    # no budget: today's defaults, and the budget is not part of what makes trials comparable
    assert resolve_config().budget is None and resolve_config().train.epochs == 15
    assert resolve_config().ship == "trial"
    assert "budget" not in str(resolve_config(flags={"budget": "1h"}).identity())


def test_a_bad_budget_flag_names_the_flag():
    with pytest.raises(ConfigError, match=r"^budget \(--budget\): 'soon' is not a duration"):
        resolve_config(flags={"budget": "soon"})
