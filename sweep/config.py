"""Settings for a sweep, resolved in one place: flag > config file > default.

A config file is TOML with up to three tables::

    [run]            # study, storage, n_trials, budget, seed, tracking_uri, log_models, pruner, threads, workers,
                     # adjust_decision, retrain_top, retrain_seeds, ship, refit_seeds, baseline
    [train]          # epochs, val_fraction, patience, collapse_warmup, collapse_patience, warmup_steps,
                     # warmup_fraction
    [search_space]   # narrows the ranges and choices of objectives.search_space.SearchSpace
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from objectives.search_space import SearchSpace
from sweep import budget as budgets
from sweep.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///sweep.db"
# Seeds feed numpy/scikit-learn (< 2**32) after offsets (trial number, re-training, worker pid).
MAX_SEED = 2**31 - 1
SHIP = ("auto", "ensemble", "refit", "trial")
REFIT_SHIPS = ("auto", "refit")  # the ship modes that may refit the chosen configuration (sweep.refit)
LOG_MODELS = ("best", "all", "none")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class TrainSettings:
    """What one trial does with its data; part of the study's identity."""

    epochs: int = 15
    val_fraction: float = 0.2
    patience: int = 5
    # Stop a trial that predicts (nearly) one class for collapse_patience epochs in a row after
    # collapse_warmup epochs (pruned, reason "collapse"); collapse_patience = 0 never stops.
    collapse_warmup: int = 2
    collapse_patience: int = 2
    # No trial is stopped (collapse, flat score, median pruner) before this many optimizer steps:
    # on a small set an epoch is a few steps, and models start out predicting the majority class.
    warmup_steps: int = 100
    # ... and none is stopped for a flat or below-median score before this share of `epochs` (slow
    # starters: objectives.metrics.WARMUP_FRACTION); collapse stopping keeps the shorter warm-up.
    warmup_fraction: float = 0.5


@dataclass(frozen=True)
class SweepConfig:
    study: str | None = None
    storage: str = DEFAULT_STORAGE
    n_trials: int = 20
    seed: int = 0
    tracking_uri: str | None = None
    log_models: str = "best"
    pruner: str = "median"
    threads: int | None = None
    workers: int = 1
    # Fit per-class decision offsets on validation after each complete trial and record the
    # adjusted balanced accuracy beside the plain one (never the objective value).
    adjust_decision: bool = False
    # After the search: train the top-k configurations again on retrain_seeds folds of the training part
    # (a new seed per run) and report mean +- std, so one lucky split does not pick the winner (0 = skip).
    retrain_top: int = 3
    retrain_seeds: int = 3
    # What ships as the champion: "trial" (the chosen trial's own model from the search), "refit" (the
    # chosen configuration trained again on the whole training part, nothing held out, sweep.refit;
    # needs the re-training), "auto" (that refit unless, on the re-training's folds, training that long
    # falls behind the trial's own length by more than the noise; the default with a budget) or "ensemble"
    # (the chosen configuration's fold models from the re-training, their probabilities averaged;
    # sweep.ensemble). Measured in BENCHMARKS.md.
    ship: str = "trial"
    # A refit (--ship refit or auto) trains this many seeds, their probabilities averaged into the one
    # shipped model: the first always, the others where the time left allows (with --workers W, W at once).
    refit_seeds: int = 3
    # Start a new study with the classic stacked-LSTM recipe and the LSTM-FCN recipe as trials 0-1
    # (objectives.search_space.recipe_trials), then search.
    baseline: bool = True
    # Wall-clock seconds for this invocation (search, re-training, registration); None: no time box.
    # Not part of the study's identity: each invocation brings its own (sweep.budget).
    budget: float | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    space: SearchSpace = field(default_factory=SearchSpace)

    def identity(self) -> dict[str, Any]:
        """Everything that makes trial values comparable: resuming with a different identity is refused."""
        return {
            "search_space": self.space.to_dict(),
            "train": dataclasses.asdict(self.train),
            "seed": self.seed,
        }

    def identity_fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """TensorFlow threads for each of ``workers`` processes (``threads``' default): an equal share of
    the cores, at least 1."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // workers)


_RUN_KEYS = {"study", "storage", "n_trials", "seed", "tracking_uri", "log_models", "pruner", "threads", "workers",
             "adjust_decision", "retrain_top", "retrain_seeds", "ship", "refit_seeds", "baseline", "budget"}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file into ``{"run": {}, "train": {}, "search_space": {}}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; check the path given to --config")
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; --config takes a TOML file") from None
    unknown = set(doc) - {"run", "train", "search_space"}
    if unknown:
        raise ConfigError(f"{path}: unknown table [{sorted(unknown)[0]}]; use [run], [train] and [search_space]")
    for table in doc.values():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level keys must be tables ([run], [train], [search_space])")
    return {k: doc.get(k, {}) for k in ("run", "train", "search_space")}


def resolve_config(*, config_file: str | Path | None = None, flags: Mapping[str, Any] | None = None) -> SweepConfig:
    """Merge flags (non-None values), an optional config file and the defaults; validate the result.

    Raises:
        ConfigError: naming the file or flag, the key and the fix.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    doc = read_config_file(config_file) if config_file is not None else {"run": {}, "train": {}, "search_space": {}}
    where = str(config_file) if config_file is not None else "config"

    run = {}
    for key, value in doc["run"].items():
        if key not in _RUN_KEYS:
            raise ConfigError(f"{where}: run.{key}: unknown key; known keys are {', '.join(sorted(_RUN_KEYS))}")
        run[key] = value
    train = {}
    for key, value in doc["train"].items():
        if key not in _TRAIN_KEYS:
            raise ConfigError(f"{where}: train.{key}: unknown key; known keys are {', '.join(sorted(_TRAIN_KEYS))}")
        train[key] = value
    for key, value in flags.items():
        if key in _TRAIN_KEYS:
            train[key] = value
        elif key in _RUN_KEYS:
            run[key] = value
        else:
            raise ConfigError(f"unknown setting {key!r}")

    space = SearchSpace.from_mapping(doc["search_space"], where=f"{where}: search_space")
    if run.get("budget") is not None:
        run["budget"] = budgets.parse_duration(
            run["budget"], name="budget (--budget)" if "budget" in flags else f"{where}: run.budget")
        # A time box changes the defaults (each still set by flag or file): the time ends the search,
        # a larger epoch cap that successive halving hands out to the promising trials.
        run.setdefault("n_trials", budgets.BUDGET_MAX_TRIALS)
        run.setdefault("pruner", budgets.BUDGET_PRUNER)
        train.setdefault("epochs", budgets.BUDGET_EPOCHS)
        train.setdefault("patience", budgets.BUDGET_PATIENCE)
        train.setdefault("warmup_fraction", budgets.BUDGET_WARMUP_FRACTION)
        if run.get("retrain_top") != 0 and run.get("log_models") != "none":  # what auto needs (else: trial)
            run.setdefault("ship", budgets.BUDGET_SHIP)
    settings = TrainSettings(**train)
    cfg = SweepConfig(train=settings, space=space, **run)
    _validate(cfg, where)
    return cfg


def _validate(cfg: SweepConfig, where: str) -> None:
    def need_int(name: str, value: Any, low: int, high: int | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")

    need_int("n_trials (--n-trials)", cfg.n_trials, 1)
    need_int("seed (--seed)", cfg.seed, 0, MAX_SEED)
    need_int("train.epochs (--epochs)", cfg.train.epochs, 1)
    need_int("train.patience (--patience)", cfg.train.patience, 1)
    need_int("train.collapse_warmup (--collapse-warmup)", cfg.train.collapse_warmup, 0)
    need_int("train.collapse_patience (--collapse-patience)", cfg.train.collapse_patience, 0)
    need_int("train.warmup_steps (--warmup-steps)", cfg.train.warmup_steps, 0)
    wf = cfg.train.warmup_fraction
    if isinstance(wf, bool) or not isinstance(wf, (int, float)) or not 0 <= wf <= 1:
        raise ConfigError(f"train.warmup_fraction (--warmup-fraction) must be a number in [0, 1], got {wf!r}")
    if cfg.threads is not None:
        need_int("threads (--threads)", cfg.threads, 1)
    need_int("workers (--workers)", cfg.workers, 1, 64)
    vf = cfg.train.val_fraction
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0.05 <= vf <= 0.5:
        raise ConfigError(f"train.val_fraction (--val-fraction) must be a number in [0.05, 0.5], got {vf!r}")
    if cfg.log_models not in LOG_MODELS:
        raise ConfigError(f"log_models (--log-models) must be one of {', '.join(LOG_MODELS)}, got {cfg.log_models!r}")
    if cfg.pruner not in PRUNERS:
        raise ConfigError(f"pruner (--pruner) must be one of {', '.join(PRUNERS)}, got {cfg.pruner!r}")
    need_int("retrain_top (--retrain-top)", cfg.retrain_top, 0, 20)
    need_int("retrain_seeds (--retrain-seeds)", cfg.retrain_seeds, 1, 20)
    need_int("refit_seeds (--refit-seeds)", cfg.refit_seeds, 1, 10)
    if cfg.ship not in SHIP:
        raise ConfigError(f"ship (--ship) must be one of {', '.join(SHIP)}, got {cfg.ship!r}")
    if cfg.ship == "ensemble" and cfg.log_models == "none":
        raise ConfigError("--ship ensemble logs the champion's fold models, and --log-models none logs no model; "
                          "drop one of them")
    if cfg.ship in REFIT_SHIPS and cfg.log_models == "none":
        raise ConfigError(f"--ship {cfg.ship} logs the champion's refit model, and --log-models none logs no model; "
                          "drop one of them")
    if cfg.ship in REFIT_SHIPS and cfg.retrain_top == 0:
        raise ConfigError(f"--ship {cfg.ship} trains the configuration the re-training chooses, and --retrain-top 0 "
                          "turns the re-training off; drop one of them")
    for key in ("adjust_decision", "baseline"):
        if not isinstance(getattr(cfg, key), bool):
            raise ConfigError(f"{where}: run.{key} must be true or false, got {getattr(cfg, key)!r}")
    if not isinstance(cfg.storage, str) or not cfg.storage:
        raise ConfigError(f"{where}: run.storage must be a database URL string")
    if cfg.tracking_uri is not None and (not isinstance(cfg.tracking_uri, str) or not cfg.tracking_uri.strip()):
        raise ConfigError(f"{where}: run.tracking_uri (--tracking-uri) must be an MLflow tracking URI string "
                          f"(e.g. \"sqlite:///mlflow.db\" or \"http://host:5000\"), got {cfg.tracking_uri!r}")
    if cfg.study is not None and (not isinstance(cfg.study, str) or not cfg.study.strip()):
        raise ConfigError("study (--study) must be a non-empty name")
