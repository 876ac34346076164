"""What one sweep is made of: the validated inputs (:class:`PreparedSweep`), the opened study
(:class:`OpenSweep`), and the objective and MLflow tracker built from them.

:func:`prepare` writes nothing: the data, the config and the storage URL are checked before any
database or MLflow store is touched (the promise "bad input changes nothing").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import __version__, interrupt, ranking
from sweep.budget import Deadline
from sweep.config import SweepConfig
from sweep.data import Dataset, Split, load_dataset, split_stratified, standardization
from sweep.loop import count_finished
from sweep.storage import check_url
from sweep.study import default_study_name


@dataclass
class PreparedSweep:
    """Everything validated, nothing written yet."""

    cfg: SweepConfig
    name: str
    data: Dataset
    split: Split
    test_path: str | None = None


def prepare(cfg: SweepConfig, data_path: str | Path, *, test_path: str | Path | None = None) -> PreparedSweep:
    """Load and validate the data and split it (raises DataError); writes nothing."""
    check_url(cfg.storage)
    data = load_dataset(data_path, test_path=test_path)
    split = split_stratified(data, val_fraction=cfg.train.val_fraction, seed=cfg.seed)
    return PreparedSweep(cfg=cfg, name=cfg.study or default_study_name(data_path), data=data, split=split,
                         test_path=str(Path(test_path).resolve()) if test_path is not None else None)


def study_identity(prep: PreparedSweep) -> dict[str, Any]:
    data = prep.data
    return {
        "data_path": str(Path(data.source).resolve()),
        "data_fingerprint": data.fingerprint(),
        "test_path": prep.test_path,
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


def make_tracker(prep: PreparedSweep) -> Any:
    from sweep.tracking import MlflowTracker

    data = prep.data
    mean, std = standardization(prep.split.X_train)
    return MlflowTracker(
        tracking_uri=prep.cfg.tracking_uri, study_name=prep.name, log_models=prep.cfg.log_models,
        labels=list(data.labels), timesteps=data.timesteps, features=data.features, mean=mean, std=std,
    )


@dataclass
class OpenSweep:
    """A study ready for workers: created or resumed, with its MLflow parent run."""

    prep: PreparedSweep
    study: Any
    resumed: bool
    tracker: Any
    parent_run_id: str
    lead: bool = True  # the process the user started (not a `sweep worker`): it re-trains the top-k at the end
    deadline: Deadline | None = None  # the time budget of the invocation (sweep.budget); None: no time box
    started: float | None = None  # when the command started (time.time()), for the budget's clock
    objective: Any = None  # set by work(): holds trial ends not yet told to the tracker

    def search_done(self) -> bool:
        """The study holds its N trials, or the time budget's search is over: its time is up, or no
        new trial could reach its first rung in the time left (the search loop stops there too)."""
        if self.deadline is not None:
            from sweep.loop import budget_stop

            if self.deadline.search_over() or budget_stop(self.deadline)(self.study):
                return True
        return count_finished(self.study) >= self.prep.cfg.n_trials


def make_objective(prep: PreparedSweep, *, tracker: Any = None, adjust_decision: bool = False,
                   deadline: Deadline | None = None, keep_top: int = 1, split: Split | None = None) -> Any:
    """The objective with the sweep's data and training settings (imports TensorFlow); ``split``:
    another train/validation split of the same training part (the top-k re-training)."""
    from objectives.objective import Objective

    cfg = prep.cfg
    return Objective(
        split if split is not None else prep.split, n_classes=prep.data.n_classes, space=cfg.space, epochs=cfg.train.epochs,
        patience=cfg.train.patience, seed=cfg.seed, tracker=tracker,
        collapse_warmup=cfg.train.collapse_warmup, collapse_patience=cfg.train.collapse_patience,
        warmup_steps=cfg.train.warmup_steps, warmup_fraction=cfg.train.warmup_fraction,
        adjust_decision=adjust_decision, search_ends_at=deadline.search_ends_at if deadline is not None else None,
        keep_top=keep_top, ranked_ahead=ranking.ranked_ahead, check_interrupt=interrupt.check,
    )
