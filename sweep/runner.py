"""A whole sweep: validate everything first, then create or resume the study and run it.

Order matters for the promise "bad input changes nothing": the data, the config and the storage
URL are checked before any database or MLflow store is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from optuna.trial import FrozenTrial

from sweep import __version__
from sweep.config import SweepConfig
from sweep.data import Dataset, Split, load_dataset, split_stratified, standardization
from sweep.study import (
    best_summary,
    check_url,
    count_finished,
    create_or_resume,
    default_study_name,
    mask_url,
    open_storage,
    reap_stale_trials,
    run_trials,
    trial_rows,
)

_logger = logging.getLogger(__name__)


@dataclass
class PreparedSweep:
    """Everything validated, nothing written yet."""

    cfg: SweepConfig
    name: str
    data: Dataset
    split: Split


@dataclass
class SweepResult:
    name: str
    n_trials: int
    ran: int
    resumed: bool
    best: dict[str, Any] | None
    rows: list[dict[str, Any]]
    parent_run_id: str | None
    tracking_uri: str
    experiment_id: str | None


def prepare(cfg: SweepConfig, data_path: str | Path, *, test_path: str | Path | None = None) -> PreparedSweep:
    """Load and validate the data and split it (raises DataError); writes nothing."""
    check_url(cfg.storage)
    data = load_dataset(data_path, test_path=test_path)
    split = split_stratified(data, val_fraction=cfg.train.val_fraction, seed=cfg.seed)
    return PreparedSweep(cfg=cfg, name=cfg.study or default_study_name(data_path), data=data, split=split)


def study_identity(prep: PreparedSweep) -> dict[str, Any]:
    data = prep.data
    return {
        "data_path": str(Path(data.source).resolve()),
        "data_fingerprint": data.fingerprint(),
        "settings": prep.cfg.identity(),
        "labels": list(data.labels),
        "timesteps": data.timesteps,
        "features": data.features,
        "n_classes": data.n_classes,
        "has_test": data.has_test,
        "bayes_balanced_accuracy": data.meta.get("bayes_balanced_accuracy"),
        "bayes_balanced_accuracy_test": data.meta.get("bayes_balanced_accuracy_test"),
        "created_with": f"lstm-sweep {__version__}",
    }


def run_sweep(
    prep: PreparedSweep, *, allow_changes: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_trial_end: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None,
) -> SweepResult:
    """Create or resume the study and run it to ``n_trials`` finished trials.

    Args:
        prep: the validated sweep from :func:`prepare`.
        allow_changes: resume even if the stored data/space/settings differ.
        on_start: called with (finished so far, target) once the study is open.
        on_trial_end: called after each trial with its row and the best trial so far.
    """
    from objectives import model as lstm
    from objectives.objective import Objective
    from sweep.tracking import MlflowTracker

    cfg, data = prep.cfg, prep.data
    storage = open_storage(cfg.storage)
    study, resumed = create_or_resume(
        cfg, name=prep.name, storage=storage, identity=study_identity(prep), allow_changes=allow_changes
    )
    reaped = reap_stale_trials(study)
    if reaped:
        _logger.warning("trials %s had no heartbeat and were marked failed", reaped)
    lstm.configure_threads(cfg.threads)

    mean, std = standardization(prep.split.X_train)
    tracker = MlflowTracker(
        tracking_uri=cfg.tracking_uri, study_name=prep.name, log_models=cfg.log_models,
        labels=list(data.labels), timesteps=data.timesteps, features=data.features, mean=mean, std=std,
    )
    parent = tracker.start_sweep(
        params={
            "data": Path(data.source).name,
            "data_fingerprint": data.fingerprint(),
            "n_classes": data.n_classes,
            "timesteps": data.timesteps,
            "features": data.features,
            "n_train": len(prep.split.y_train),
            "n_val": len(prep.split.y_val),
            "n_test": 0 if prep.split.y_test is None else len(prep.split.y_test),
            "epochs": cfg.train.epochs,
            "patience": cfg.train.patience,
            "val_fraction": cfg.train.val_fraction,
            "seed": cfg.seed,
            "pruner": cfg.pruner,
        },
        tags={"n_trials_target": str(cfg.n_trials), "optuna.storage": mask_url(cfg.storage),
              "optuna.study": prep.name, "data_path": str(Path(data.source).resolve())},
    )
    study.set_user_attr("mlflow_parent_run_id", parent)
    study.set_user_attr("tracking_uri", tracker.tracking_uri)
    tracker.reconcile_runs({t.number: t.state.name for t in study.get_trials(deepcopy=False)})

    objective = Objective(
        prep.split, n_classes=data.n_classes, space=cfg.space, epochs=cfg.train.epochs,
        patience=cfg.train.patience, seed=cfg.seed, tracker=tracker,
    )

    def after_trial(study_: Any, trial: FrozenTrial) -> None:
        if on_trial_end is not None:
            row = next(r for r in trial_rows(study_) if r["number"] == trial.number)
            on_trial_end(row, best_summary(study_))

    if on_start is not None:
        on_start(count_finished(study), cfg.n_trials)
    status = "FAILED"
    ran = 0
    try:
        ran = run_trials(study, objective, n_trials=cfg.n_trials, on_trial_end=after_trial)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        reap_stale_trials(study)
        rows = trial_rows(study)
        tracker.reconcile_runs({r["number"]: r["state"] for r in rows})
        tracker.end_sweep(rows, best_summary(study), status=status)
    return SweepResult(
        name=prep.name, n_trials=cfg.n_trials, ran=ran, resumed=resumed, best=best_summary(study), rows=rows,
        parent_run_id=parent, tracking_uri=tracker.tracking_uri, experiment_id=tracker.experiment_id,
    )
